"""Rerunning the notebooks through papermill (issue 12, item 8): what the two rerun test files share.

Every rerun runs in the ``smoke`` profile (32² phantoms, 0.064 kimg of training, 16 generated pairs) with
``MPLBACKEND=Agg`` exported, as on a headless server: figures must still be rendered inline (image/png outputs). A
rerun passes when papermill finishes it: each notebook ends with a Checks cell that asserts its results (finished
run, finite metrics, data source). The files run in parallel (``--dist loadfile``: one file, one worker), each
with its own data and runs folder (the ``notebook_roots`` fixture), made once per file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PROFILE = "smoke"


def advertised(notebook: str, name: str) -> list[str]:
    """The values the parameters cell of ``notebook`` lists for ``name``: ``gan = "hinge"  # dcgan | lsgan | ...``."""
    nb = json.loads((NOTEBOOKS / notebook).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    for line in "".join(cell["source"]).splitlines():
        m = re.match(rf"{name}\s*=.*#\s*(.*)$", line)
        if m:
            return [v.strip() for v in m.group(1).split("|") if re.fullmatch(r"[a-z0-9-]+", v.strip())]
    raise AssertionError(f"{notebook}: no '# a | b' list of values for {name!r} in its parameters cell")


GANS = advertised("02_train_gan.ipynb", "gan")
DATASETS = advertised("02_train_gan.ipynb", "dataset")
# Every GAN x dataset pair the parameters allow (02 and 07: 21 each); MEDGAN_NOTEBOOK_MATRIX=short, for an edit loop,
# keeps the two reruns a user reported broken: SPADE on IDRiD (6 training masks for a 16-cell grid) and StyleGAN2 on
# SLiver07 (not shrunk by the quick profile).
MATRIX = os.environ.get("MEDGAN_NOTEBOOK_MATRIX", "")
if MATRIX not in ("", "short"):
    raise ValueError(f"MEDGAN_NOTEBOOK_MATRIX={MATRIX!r}: use 'short' or leave it unset (every pair)")
PAIRS = [("spade", "idrid"), ("stylegan2", "sliver07")] if MATRIX == "short" else [
    (g, d) for d in DATASETS for g in GANS]
PAIR_IDS = [f"{g}-{d}" for g, d in PAIRS]


def execute(notebook: str, out: Path, monkeypatch, **parameters) -> dict:
    """Run ``notebook`` with ``parameters`` (profile smoke unless given) into ``out``; return the executed JSON."""
    import papermill

    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it; %matplotlib inline must win
    papermill.execute_notebook(str(NOTEBOOKS / notebook), str(out), parameters={"profile": PROFILE, **parameters},
                               kernel_name="python3", cwd=str(REPO), progress_bar=False, log_output=False)
    return json.loads(out.read_text())


def printed(nb: dict) -> str:
    """Everything the notebook printed (its stream outputs)."""
    return "".join(o["text"] if isinstance(o["text"], str) else "".join(o["text"])
                   for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream")


def images(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
