"""book/publish.py: what papermill executed becomes a page a reader would publish (issue 12, item 7).

The injected-parameters cell (this machine's absolute paths) is hidden from the book but kept for nbval; stderr
(warnings, progress bars: the kernel's temporary paths) and medgan's build-log lines go to a log file; everything
else is kept as it was. The source notebooks render inline and keep warnings off the cells nbval compares.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def _load_publish():
    spec = importlib.util.spec_from_file_location("book_publish", REPO / "book" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publish = _load_publish()


def stream(name: str, text: str) -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def executed() -> dict:
    png = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}
    return {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "dataset = 'acdc'", "outputs": []},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
         "source": "# Parameters\ndata_root = \"/home/someone/medgan/data\"\n", "outputs": []},
        {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": "run()", "outputs": [
            stream("stdout", "runs/acdc-64-hinge-quick: not reused (status absent); kept as runs/acdc-64-hinge-quick.stale-x\n"
                             "acdc: 116 training slices\n"),
            stream("stderr", "/tmp/ipykernel_123/45.py:1: UserWarning: FID on 96 samples\n  result = evaluate(...)\n"),
            png]},
        {"cell_type": "markdown", "metadata": {}, "source": "## Checks"},
        {"cell_type": "code", "metadata": {"tags": ["nbval-check-output"]}, "source": "print(1)",
         "outputs": [stream("stdout", "1\n")]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_injected_parameters_are_hidden_but_kept_for_nbval():
    nb = executed()
    publish.publish(nb)
    injected = nb["cells"][1]
    assert injected["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert injected["source"] == executed()["cells"][1]["source"]  # nbval re-executes it: same paths, same runs
    assert "remove-cell" not in nb["cells"][0]["metadata"]["tags"]  # the notebook's own defaults stay visible


def test_stderr_and_build_log_lines_leave_the_page_and_nothing_else_does():
    nb = executed()
    log = publish.publish(nb)
    outputs = nb["cells"][2]["outputs"]
    assert outputs[0] == stream("stdout", "acdc: 116 training slices\n")
    assert outputs[1]["data"]["image/png"] == "iVBOR" and len(outputs) == 2
    assert any("UserWarning: FID on 96 samples" in line for line in log)
    assert any("not reused (status absent)" in line for line in log)
    assert not any("acdc: 116 training slices" in line for line in log)
    assert nb["cells"][4]["outputs"] == [stream("stdout", "1\n")]  # what nbval compares is untouched
    page = json.dumps(nb)
    assert "/tmp/ipykernel" not in page and "not reused" not in page


def test_publishing_twice_changes_nothing_and_keeps_the_log(tmp_path):
    path = tmp_path / "02_train_gan.ipynb.tmp.ipynb"
    path.write_text(json.dumps(executed()))
    assert publish.main([str(path)]) == 0
    once, log = path.read_text(), path.with_suffix(".log").read_text()
    assert "UserWarning" in log and "/home/someone" in once  # the injected paths stay in the file (for nbval)
    assert publish.main([str(path)]) == 0
    assert path.read_text() == once and path.with_suffix(".log").read_text() == log
    assert not list(tmp_path.glob("*publish-tmp*"))


def test_an_untouched_notebook_stays_the_same():
    nb = executed()
    nb["cells"] = [nb["cells"][0], nb["cells"][4]]
    before = copy.deepcopy(nb)
    assert publish.publish(nb) == [] and nb == before


def test_usage_error_without_arguments(capsys):
    assert publish.main([]) == 2 and "usage" in capsys.readouterr().err


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_renders_inline_and_silences_warnings_before_any_checked_output(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"]["tags"]
    setup = "".join(code[1]["source"])
    # MPLBACKEND=Agg exported by the caller would otherwise leave the pages without figures
    assert setup.startswith("%matplotlib inline\n")
    # nbval compares checked cells including stderr, and publish.py drops stderr from the executed notebook
    assert 'warnings.simplefilter("ignore")' in setup
    assert all("nbval-check-output" not in c["metadata"].get("tags", []) for c in code[:2])
