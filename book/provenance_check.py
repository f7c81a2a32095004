"""Every figure and table of the book carries its provenance on its face (issue: "caption states profile, data
source, feature extractor, seeds, kimg").

For each executed notebook, every code cell whose outputs show a figure (``image/png``) or an HTML table must also
output a caption — a printed line, a Markdown/HTML text, or the table's ``<caption>`` — that names

* the profile (``profile quick``, the one papermill injected),
* the data source (``phantom`` / ``real`` / ``raw``),
* the feature extractor, when it speaks of FID (``inception…`` or ``unet``),
* the seed and the training length (``seed``, ``kimg``), when it speaks of something trained.

A figure whose only caption is drawn inside its pixels does not count: a reader's screen reader, a search and this
check cannot read it. ``python book/provenance_check.py book/executed`` exits 1 listing each cell that fails.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

SOURCES = ("phantom", "real", "raw")
FEATURES = re.compile(r"inception|unet|U-Net", re.I)


def _texts(cell: dict) -> tuple[str, bool]:
    """(every caption-like text a cell outputs, whether it shows a figure or a table)."""
    texts, shows = [], False
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            texts.append("".join(out.get("text", "")))
            continue
        data = out.get("data", {})
        if "image/png" in data or "image/svg+xml" in data:
            shows = True
        page = "".join(data.get("text/html", ""))
        if "<table" in page:
            shows = True
            texts += re.findall(r"<caption[^>]*>(.*?)</caption>", page, re.S)
        elif page:
            texts.append(re.sub(r"<[^>]+>", " ", page))
        texts.append("".join(data.get("text/markdown", "")))
    return html.unescape("\n".join(texts)), shows


def problems(cell: dict, profile: str) -> list[str]:
    """What the captions of one cell lack (empty when it shows no figure/table, or says everything)."""
    text, shows = _texts(cell)
    if not shows:
        return []
    missing = []
    if f"profile {profile}" not in text:
        missing.append(f"'profile {profile}'")
    if not any(s in text.lower() for s in SOURCES):
        missing.append("the data source (phantom/real/raw)")
    if "FID" in text and not FEATURES.search(text):
        missing.append("the FID feature extractor")
    if re.search(r"\btrain(ed|s)?\b|\bGAN", text):
        missing += [f"'{w}'" for w in ("seed", "kimg") if w not in text]
    return missing


def check_notebook(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    profile = (nb.get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}).get("profile", "quick")
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            missing = problems(cell, profile)
            if missing:
                first = "".join(cell.get("source", "")).strip().splitlines()[:1]
                out.append(f"{path.name} cell {i} ({first[0][:60] if first else ''}): caption lacks {', '.join(missing)}")
    return out


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else "book/executed")
    books = sorted(p for p in folder.glob("[0-9]*.ipynb") if ".tmp." not in p.name)
    if not books:
        print(f"provenance check: no executed notebooks in {folder}", file=sys.stderr)
        return 1
    found = [p for nb in books for p in check_notebook(nb)]
    for line in found:
        print(line, file=sys.stderr)
    print(f"provenance check: {len(books)} notebooks, {len(found)} figure/table cells without their provenance")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
