"""``book/browser_check.py`` opens pages in headless Chromium with the network cut and must catch what a reader
would see broken: a network request, a console error, an image that does not load, untypeset math."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "book" / "browser_check.py"
spec = importlib.util.spec_from_file_location("browser_check", SCRIPT)
browser_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(browser_check)

MATHJAX = ROOT / "book" / "_static" / "mathjax"
PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")

pytestmark = pytest.mark.skipif(browser_check.chromium_path() is None, reason="no Chromium (apt-get install chromium)")

GOOD = '<html><body><p>fine</p><img src="ok.png"></body></html>'
MATH = ('<html><head><script defer src="_static/mathjax/tex-chtml.js"></script></head>'
        '<body><div class="math notranslate nohighlight">\\[ F = \\|\\mu_r - \\mu_g\\|^2 \\]</div></body></html>')


def site(tmp_path: Path, pages: dict[str, str], mathjax: bool = False) -> Path:
    (tmp_path / "ok.png").write_bytes(PNG)
    for name, html in pages.items():
        (tmp_path / name).write_text(html)
    if mathjax:
        if not (MATHJAX / "tex-chtml.js").is_file():
            pytest.skip("vendored MathJax missing (make setup)")
        (tmp_path / "_static").mkdir()
        (tmp_path / "_static" / "mathjax").symlink_to(MATHJAX, target_is_directory=True)
    return tmp_path


def test_a_clean_page_and_typeset_math_pass(tmp_path, capsys):
    root = site(tmp_path, {"index.html": GOOD, "math.html": MATH}, mathjax=True)
    assert browser_check.main(str(root)) == 0, capsys.readouterr().err
    assert "2 pages" in capsys.readouterr().out


@pytest.mark.parametrize("html, problem", [
    ('<img src="http://example.invalid/x.png">', "network request (blocked): http://example.invalid/x.png"),
    ('<script src="https://cdn.example.invalid/x.js"></script>', "network request (blocked)"),
    ('<img src="missing.png">', "image not loaded: missing.png"),
    ("<script>console.error('boom')</script>", "console error: boom"),
    ("<script>undefinedFunction()</script>", "uncaught exception"),
    ('<div class="math">\\[x\\]</div>', "math on the page was not typeset by MathJax"),  # math, but no MathJax on the page
])
def test_each_broken_thing_is_reported_by_page(tmp_path, capsys, html, problem, monkeypatch):
    monkeypatch.setattr(browser_check, "TYPESET_TIMEOUT_MS", 1500)
    root = site(tmp_path, {"index.html": GOOD, "bad.html": f"<html><body>{html}</body></html>"})
    assert browser_check.main(str(root)) == 1
    err = capsys.readouterr().err
    assert f"bad.html: {problem}" in err and "index.html" not in err


def test_no_pages_or_no_browser_is_an_error(tmp_path, capsys, monkeypatch):
    assert browser_check.main(str(tmp_path)) == 1
    site(tmp_path, {"index.html": GOOD})
    monkeypatch.setenv("MEDGAN_CHROMIUM", str(tmp_path / "no-such-chromium"))
    assert browser_check.main(str(tmp_path)) == 1
    assert "no Chromium" in capsys.readouterr().err



def test_a_redirect_page_is_checked_by_its_target(tmp_path, capsys):
    redirect = '<html><head><meta http-equiv="Refresh" content="0; url={}" /></head></html>'
    root = site(tmp_path, {"index.html": redirect.format("page.html"), "page.html": GOOD})
    assert browser_check.main(str(root)) == 0, capsys.readouterr().err
    (root / "index.html").write_text(redirect.format("gone.html"))
    assert browser_check.main(str(root)) == 1
    assert "index.html: redirects to a missing page: gone.html" in capsys.readouterr().err
