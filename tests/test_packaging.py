"""The install paths agree: requirements.txt, requirements-lock.txt and environment.yml carry the same pins."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip().lstrip("- ").strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_environment_yml_has_the_requirements_pins():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert req, "requirements.txt pins nothing"
    assert env == req


def test_lock_file_agrees_with_direct_pins():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    lock = _pins((ROOT / "requirements-lock.txt").read_text().splitlines())
    disagree = {k: (v, lock.get(k)) for k, v in req.items() if lock.get(k) != v}
    assert not disagree, f"requirements.txt and requirements-lock.txt disagree: {disagree}"


def test_required_pins_present():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert req["torch"] == "2.14.1" and req["torchvision"] == "0.29.1"
    assert int(req["jupyter-book"].split(".")[0]) < 2, "jupyter-book 2.x downloads a theme at build time"
    for name in ("pytorch-fid", "papermill", "nbval", "jupyterlab", "umap-learn", "matplotlib", "seaborn", "pandas",
                 "nibabel", "simpleitk", "pillow", "scipy", "optuna", "tqdm", "pytest"):
        assert name in req, name


def test_notebooks_are_committed_without_outputs_and_with_parameters():
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name}: no parameters cell"
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: has outputs"


def test_cli_has_one_command_per_arrow_of_the_data_flow():
    from medgan.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {"data", "train", "generate", "export", "fid", "segment", "classify", "recon", "sweep",
                             "turing", "bench"}
    bench = next(a for a in commands["bench"]._actions if a.dest == "bench").choices
    assert {"train", "fid"} <= set(bench)
