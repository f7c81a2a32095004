"""book/provenance_check.py: a figure or table of the book without its provenance beside it fails the build."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("provenance_check", ROOT / "book" / "provenance_check.py")
provenance_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(provenance_check)

PNG = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}, "metadata": {}}


def _md(text: str) -> dict:
    return {"output_type": "display_data", "data": {"text/markdown": text, "text/plain": "<Markdown>"}, "metadata": {}}


def _cell(*outputs, source="fig = plot()") -> dict:
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": list(outputs), "execution_count": 1}


def _write(tmp_path: Path, cells, profile="quick", name="04_samples.ipynb") -> Path:
    nb = {"cells": cells, "metadata": {"papermill": {"parameters": {"profile": profile}}}, "nbformat": 4,
          "nbformat_minor": 5}
    path = tmp_path / name
    path.write_text(json.dumps(nb))
    return path


GOOD = "*Figure 5 — GANs trained 2 kimg on phantom data, profile quick, seed 0*"


def test_a_captioned_figure_passes(tmp_path):
    path = _write(tmp_path, [_cell(PNG, _md(GOOD))])
    assert provenance_check.check_notebook(path) == []
    assert provenance_check.main(["x", str(tmp_path)]) == 0


@pytest.mark.parametrize("caption, lacks", [
    (None, "'profile quick'"),
    ("*GANs trained 2 kimg on phantom data, seed 0*", "'profile quick'"),
    ("*GANs trained 2 kimg, profile quick, seed 0*", "data source"),
    ("*GANs trained on phantom data, profile quick, seed 0*", "'kimg'"),
    ("*GANs trained 2 kimg on phantom data, profile quick*", "'seed'"),
    ("*FID of phantom data, profile quick*", "feature extractor"),
])
def test_a_figure_without_each_item_fails(tmp_path, caption, lacks):
    outputs = [PNG] + ([_md(caption)] if caption else [])
    path = _write(tmp_path, [_cell(*outputs)])
    found = provenance_check.check_notebook(path)
    assert len(found) == 1 and lacks in found[0] and "cell 0" in found[0]
    assert provenance_check.main(["x", str(tmp_path)]) == 1


def test_the_profile_is_the_injected_one(tmp_path):
    path = _write(tmp_path, [_cell(PNG, _md(GOOD))], profile="paper")
    assert "'profile paper'" in provenance_check.check_notebook(path)[0]


def test_a_table_counts_its_caption_and_a_printed_line(tmp_path):
    table = {"output_type": "display_data", "metadata": {},
             "data": {"text/html": "<div><table><caption>Table 2 — phantom data, profile quick</caption></table></div>"}}
    bare = {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<table><tr><td>1</td></tr></table>"}}
    printed = {"output_type": "stream", "name": "stdout", "text": "Dice — profile quick, raw data\n"}
    path = _write(tmp_path, [_cell(table), _cell(bare), _cell(bare, printed), _cell(printed)])
    found = provenance_check.check_notebook(path)
    assert len(found) == 1 and "cell 1" in found[0]


def test_no_notebooks_is_an_error_not_a_pass(tmp_path):
    (tmp_path / "05_table2.ipynb.tmp.ipynb").write_text("{}")  # a half-written notebook is not a book page
    assert provenance_check.main(["x", str(tmp_path)]) == 1
