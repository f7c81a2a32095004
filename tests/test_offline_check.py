"""``book/offline_check.py`` must refuse a page that needs the network and accept an offline one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "book" / "offline_check.py"
spec = importlib.util.spec_from_file_location("offline_check", SCRIPT)
offline_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(offline_check)

GOOD = '<html><script src="_static/mathjax/tex-chtml.js"></script><img src="x.png"></html>'


def book(tmp_path: Path, pages: dict[str, str], mathjax: bool = True) -> Path:
    for name, html in pages.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(html)
    if mathjax:
        (tmp_path / "_static" / "mathjax").mkdir(parents=True, exist_ok=True)
        (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("//")
    return tmp_path


def test_an_offline_book_passes(tmp_path, capsys):
    root = book(tmp_path, {"index.html": GOOD, "book/executed/01.html": GOOD})
    assert offline_check.main(str(root)) == 0
    assert "2 pages" in capsys.readouterr().out


@pytest.mark.parametrize("html, problem", [
    ('<script src="https://cdn.example.org/x.js"></script>', "cdn.example.org"),
    ('<link rel="stylesheet" href="//fonts.example.org/a.css">', "fonts.example.org"),
])
def test_a_remote_asset_fails(tmp_path, capsys, html, problem):
    root = book(tmp_path, {"index.html": GOOD, "page.html": html})
    assert offline_check.main(str(root)) == 1
    assert problem in capsys.readouterr().err


def test_thebe_url_is_blanked_and_an_executed_page_needs_a_figure(tmp_path, capsys):
    root = book(tmp_path, {"a.html": 'const THEBE_JS_URL = "https://unpkg.com/thebe"',
                           "book/executed/02.html": "<p>no figure</p>"})
    assert offline_check.main(str(root)) == 1
    assert (root / "a.html").read_text() == 'const THEBE_JS_URL = ""'
    assert "02.html: no figure rendered" in capsys.readouterr().err


def test_missing_mathjax_or_pages_fail(tmp_path, capsys):
    assert offline_check.main(str(tmp_path)) == 1
    root = book(tmp_path, {"index.html": GOOD}, mathjax=False)
    assert offline_check.main(str(root)) == 1
    assert "mathjax" in capsys.readouterr().err


def test_the_doubled_thebe_constants_script_is_written_once(tmp_path):
    """jupyter-book writes it twice; the second `const` would throw in every reader's console."""
    script = '<script>const THEBE_JS_URL = "https://unpkg.com/thebe"; const thebe_selector = ".thebe"</script>'
    root = book(tmp_path, {"index.html": GOOD, "book/executed/01.html": f"<html>{script}\n{script}<img src='x.png'></html>"})
    assert offline_check.main(str(root)) == 0
    page = (root / "book" / "executed" / "01.html").read_text()
    assert page.count("THEBE_JS_URL") == 1 and 'const THEBE_JS_URL = ""' in page
