"""Make the built book fully offline and prove it: no page may load a script, style or font from the network,
and every executed chapter shows at least one figure.

jupyter-book 1.x always emits sphinx-thebe's ``THEBE_JS_URL`` constant (only fetched on a "live code"
click, which this book disables); it is blanked so nothing in the HTML points at a CDN.
Exit code 1 lists every remaining remote asset.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REMOTE_ASSET = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//[^"']+["']""", re.I)
REMOTE_CONST = re.compile(r'const THEBE_JS_URL = "https?://[^"]*"')
THEBE_SCRIPT = re.compile(r"<script>const THEBE_JS_URL = [^<]*</script>")


def main(html_dir: str) -> int:
    root = Path(html_dir)
    pages = sorted(root.rglob("*.html"))
    if not pages:
        print(f"offline_check: no HTML pages under {root}", file=sys.stderr)
        return 1
    bad = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        fixed = REMOTE_CONST.sub('const THEBE_JS_URL = ""', text)
        # jupyter-book 1.x writes sphinx-thebe's constants script twice: the second `const` throws in every
        # reader's console ("Identifier 'THEBE_JS_URL' has already been declared"); keep the first only
        first = True

        def once(m: re.Match) -> str:
            nonlocal first
            keep, first = first, False
            return m.group(0) if keep else ""

        fixed = THEBE_SCRIPT.sub(once, fixed)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")
        bad += [f"{page.relative_to(root)}: {m.group(0)[:120]}" for m in REMOTE_ASSET.finditer(fixed)]
        # an executed chapter without a single figure means plots went to a non-inline backend
        if "executed" in page.parts and "<img" not in fixed:
            bad.append(f"{page.relative_to(root)}: no figure rendered (was MPLBACKEND set for the kernel?)")
    css_remote = [
        f"{css.relative_to(root)}" for css in root.rglob("*.css")
        if re.search(r"@import\s+url\(['\"]?https?://", css.read_text(encoding="utf-8", errors="ignore"))
    ]
    bad += [f"{c}: remote @import" for c in css_remote]
    if not (root / "_static" / "mathjax" / "tex-chtml.js").is_file():
        bad.append("_static/mathjax/tex-chtml.js missing (run `make setup`)")
    if bad:
        print("offline_check: the book would need the network:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"offline_check: {len(pages)} pages, no remote scripts/styles, MathJax served locally")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
