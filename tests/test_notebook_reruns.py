"""Notebooks 02 (train one GAN) and 07 (the visual Turing test kit) rerun for every GAN x dataset pair their
parameters cells list, 01 for each dataset alone and 03 on a subset of datasets and GANs (issue 12, item 8; smoke
profile; tests/notebook_reruns.py). The tests run in this order on one worker, so 07 reuses the runs and generated
sets 02 made, as it does in the book.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notebook_reruns import DATASETS, PAIR_IDS, PAIRS, PROFILE, execute, images, printed

pytest.importorskip("papermill")


@pytest.mark.parametrize(("gan", "dataset"), PAIRS, ids=PAIR_IDS)
def test_train_gan_notebook_reruns(gan, dataset, notebook_roots, tmp_path, monkeypatch):
    nb = execute("02_train_gan.ipynb", tmp_path / "02.ipynb", monkeypatch, dataset=dataset, gan=gan, **notebook_roots)
    assert images(nb) >= 3  # training curves, the sample grid, the generated examples
    run = Path(notebook_roots["runs_root"]) / f"{dataset}-32-{gan}-{PROFILE}"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert json.loads((run / "config.json").read_text())["gan"] == gan


@pytest.mark.parametrize(("gan", "dataset"), PAIRS, ids=PAIR_IDS)
def test_turing_notebook_reruns(gan, dataset, notebook_roots, tmp_path, monkeypatch):
    nb = execute("07_visual_turing_test.ipynb", tmp_path / "07.ipynb", monkeypatch, dataset=dataset, gan=gan, n=10,
                 **notebook_roots)
    assert images(nb) == 1
    decks = list((Path(notebook_roots["runs_root"]) / "turing").glob(f"{dataset}-32-{gan}-{PROFILE}-n10-seed0/*.html"))
    assert len(decks) == 1 and "10 images, 5 real" in printed(nb)


@pytest.mark.parametrize("dataset", DATASETS)
def test_datasets_notebook_reruns_for_one_dataset(dataset, notebook_roots, tmp_path, monkeypatch):
    nb = execute("01_datasets.ipynb", tmp_path / "01.ipynb", monkeypatch, dataset=dataset, **notebook_roots)
    assert images(nb) >= 1 and (Path(notebook_roots["data_root"]) / "prepared").is_dir()


def test_sweep_notebook_reruns_on_a_subset(notebook_roots, tmp_path, monkeypatch):
    nb = execute("03_sweep_sensitivity.ipynb", tmp_path / "03.ipynb", monkeypatch, datasets=["idrid"],
                 gans=["wgan-gp", "hinge"], **notebook_roots)
    assert images(nb) >= 1
    runs = Path(notebook_roots["runs_root"])
    assert sorted(p.name for p in runs.glob(f"sweep-idrid-32-{PROFILE}/*") if p.is_dir()) == ["hinge", "wgan-gp"]
    best = json.loads((runs / f"{PROFILE}-sweep-best.json").read_text())["best"]
    assert sorted(best) == ["idrid"] and sorted(best["idrid"]) == ["hinge", "wgan-gp"]
