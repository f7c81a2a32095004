"""Open every page of the built book in headless Chromium with the network cut, as a reader would, and fail on
anything a reader would see broken: a request that is not a local file (it would need the network), a console
error or uncaught exception, an image that did not load, or a page with math that MathJax did not typeset.

Uses Debian's ``/usr/bin/chromium`` (or ``$MEDGAN_CHROMIUM``) through playwright; playwright's own browser
download is never used. Exit code 1 lists every problem, page by page.

    python book/browser_check.py _build/html
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
# A page is "mathy" when MyST wrote math into it; MathJax then must have replaced it by mjx-container elements.
MATH_SELECTOR = ".math, span.math, div.math"
TYPESET_TIMEOUT_MS = 20_000
# pydata-sphinx-theme (jupyter-book 1.x) logs this with console.error when a page opens before its light/dark
# choice is stored; it then uses "auto" — nothing a reader sees. Every other console error fails the check.
THEME_NOISE = ("Got invalid theme mode",)


def chromium_path() -> str | None:
    """The Chromium binary: ``$MEDGAN_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    env = os.environ.get("MEDGAN_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_pages(pages: list[Path], *, executable: str) -> dict[str, list[str]]:
    """``{page: [problem, ...]}`` for every page (an empty list: the page is fine)."""
    from playwright.sync_api import sync_playwright

    problems: dict[str, list[str]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(offline=True, service_workers="block")
            for page_path in pages:
                problems[str(page_path)] = _check_page(context, page_path)
        finally:
            browser.close()
    return problems


REDIRECT = re.compile(r"""<meta\s+http-equiv=["']refresh["']\s+content=["']\d+;\s*url=([^"']+)["']""", re.I)


def _check_page(context, page_path: Path) -> list[str]:
    found: list[str] = []
    redirect = REDIRECT.search(page_path.read_text(encoding="utf-8", errors="ignore"))
    if redirect:  # jupyter-book's index.html: a redirect page; its target is checked as a page of its own
        target = (page_path.parent / redirect.group(1).split("#")[0]).resolve()
        return [] if target.is_file() else [f"redirects to a missing page: {redirect.group(1)}"]
    page = context.new_page()

    def route(r) -> None:
        url = r.request.url
        if url.startswith(LOCAL_SCHEMES):
            r.continue_()
        else:
            found.append(f"network request (blocked): {url[:160]}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: found.append(f"console {m.type}: {m.text[:200]}")
            if m.type == "error" and not m.text.startswith(THEME_NOISE) else None)
    page.on("pageerror", lambda e: found.append(f"uncaught exception: {str(e)[:200]}"))
    page.on("requestfailed", lambda r: None if r.url.startswith(("http:", "https:")) else
            found.append(f"failed to load {r.url[:160]}: {r.failure}"))
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=30_000)
        broken = page.evaluate(
            """() => Array.from(document.images)
                   .filter(img => !(img.complete && img.naturalWidth > 0))
                   .map(img => img.getAttribute('src') || '(no src)')""")
        found += [f"image not loaded: {src[:120]}" for src in broken]
        if page.locator(MATH_SELECTOR).count():
            try:
                page.wait_for_function(
                    """() => window.MathJax && MathJax.startup && MathJax.startup.document &&
                             document.querySelectorAll('mjx-container').length > 0""",
                    timeout=TYPESET_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 - playwright's TimeoutError: report, go on with the next page
                found.append("math on the page was not typeset by MathJax")
    finally:
        page.close()
    return found


def main(html_dir: str) -> int:
    root = Path(html_dir)
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    if not pages:
        print(f"browser_check: no HTML pages under {root}", file=sys.stderr)
        return 1
    exe = chromium_path()
    if exe is None:
        print("browser_check: no Chromium (apt-get install chromium, or set MEDGAN_CHROMIUM)", file=sys.stderr)
        return 1
    problems = check_pages(pages, executable=exe)
    bad = {page: found for page, found in problems.items() if found}
    if bad:
        lines = [f"{Path(page).relative_to(root)}: {f}" for page, found in bad.items() for f in found]
        print("browser_check: pages a reader would see broken:\n  " + "\n  ".join(lines), file=sys.stderr)
        return 1
    print(f"browser_check: {len(pages)} pages opened in Chromium offline: no request, console error or broken image; "
          "math typeset")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
