"""Every notebook reruns with any parameters it advertises (issue 12, item 8): notebook 05 at its defaults, which
trains, samples, scores and segments all 7 GANs x 3 datasets; 04 and 06 on other selections; and how the quick
profile shapes the big models. 02 and 07 for every pair, 01 per dataset and 03 on a subset: test_notebook_reruns.py
(see tests/notebook_reruns.py for what the two files share); the two files run in parallel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notebook_reruns import DATASETS, GANS, PROFILE, advertised, execute, images, printed

pytest.importorskip("papermill")


@pytest.fixture
def config_of_trained_run(monkeypatch):
    """``trained_run`` with training replaced by handing back the config it would train."""
    from medgan import experiments

    monkeypatch.setattr(experiments, "run_training", lambda cfg, **kw: cfg)
    return experiments.trained_run


@pytest.mark.parametrize("gan", ["stylegan2", "spade"])
def test_quick_profile_shrinks_the_big_models_and_paper_keeps_them(gan, discs, tmp_path, config_of_trained_run):
    from medgan.config import PROFILES
    from medgan.data.prepared import load_prepared
    from medgan.training import make_config

    real = load_prepared(discs)
    quick = config_of_trained_run(real, gan, "quick", runs_root=tmp_path)
    paper = config_of_trained_run(real, gan, "paper", runs_root=tmp_path)
    published = make_config(out=tmp_path, gan=gan).model
    assert PROFILES["quick"].gan_knobs[gan] and not PROFILES["paper"].gan_knobs
    assert paper.model == published  # the paper profile trains the published architecture
    for knob in PROFILES["quick"].gan_knobs[gan]:
        key, value = knob.split("=")
        field = key.split(".")[-1]
        assert str(getattr(quick.model, field)) == value != str(getattr(published, field)), knob


def test_sample_grid_never_asks_for_more_masks_than_the_set_has(discs, tmp_path, config_of_trained_run):
    from medgan.data.prepared import load_prepared

    real = load_prepared(discs)
    n = len(real.indices("train+val"))
    cfg = config_of_trained_run(real, "spade", "quick", runs_root=tmp_path, overrides=[f"grid={n + 5}"])
    assert cfg.grid == n
    assert config_of_trained_run(real, "spade", "quick", runs_root=tmp_path, overrides=["grid=2"]).grid == 2


def test_the_advertised_values_are_the_papers():
    assert GANS == ["dcgan", "lsgan", "wgan", "wgan-gp", "hinge", "stylegan2", "spade"]
    assert DATASETS == ["acdc", "sliver07", "idrid"]
    # the rerun matrix of notebook 07 is built from 02's lists: 07 must advertise the same
    assert advertised("07_visual_turing_test.ipynb", "gan") == GANS
    assert advertised("07_visual_turing_test.ipynb", "dataset") == DATASETS


def test_table2_notebook_reruns_every_gan_on_every_dataset(notebook_roots, tmp_path, monkeypatch):
    """Notebook 05 at its defaults trains, samples, scores and segments all 7 GANs x 3 datasets: every pair the
    parameters allow, through the very code Table 2 runs (smoke sizes)."""
    nb = execute("05_table2.ipynb", tmp_path / "05.ipynb", monkeypatch, **notebook_roots)
    assert images(nb) >= 1
    shown = "".join(o.get("data", {}).get("text/html", "") if isinstance(o.get("data", {}).get("text/html"), str)
                    else "".join(o.get("data", {}).get("text/html", [])) for c in nb["cells"] for o in c.get("outputs", []))
    for name in ("ACDC", "SLiver07", "IDRiD"):
        assert f"Table 2 — {name}, phantom data at 32²" in shown and "profile smoke" in shown
    assert "stylegan2, spade shrunk for the CPU" in shown and "paper Dice" in shown
    runs = Path(notebook_roots["runs_root"])
    for dataset in DATASETS:
        result = json.loads((runs / f"table2-{dataset}-32-{PROFILE}" / "table2.json").read_text())
        assert sorted(result["fid"]) == sorted(GANS) and result["spearman"]["fid"]["n"] == len(GANS)


def test_umap_notebook_reruns_on_another_dataset(notebook_roots, tmp_path, monkeypatch):
    nb = execute("06_umap.ipynb", tmp_path / "06.ipynb", monkeypatch, dataset="idrid", gans=["stylegan2"], **notebook_roots)
    assert images(nb) >= 1


def test_umap_notebook_picks_the_least_and_most_effective_gan(notebook_roots, tmp_path, monkeypatch):
    from medgan import table2

    nb = execute("06_umap.ipynb", tmp_path / "06.ipynb", monkeypatch, dataset="sliver07", **notebook_roots)
    result = json.loads((Path(notebook_roots["runs_root"]) / f"table2-sliver07-32-{PROFILE}" / "table2.json").read_text())
    ranked = table2.effectiveness(result)
    shown = f"GANs shown (Dice of a U-Net trained on the generated set alone): {table2.row_label(ranked[0])} "
    assert shown in printed(nb) and f", {table2.row_label(ranked[-1])} " in printed(nb)


def test_samples_notebook_reruns_on_another_selection(notebook_roots, tmp_path, monkeypatch):
    nb = execute("04_samples.ipynb", tmp_path / "04.ipynb", monkeypatch, datasets=["idrid"], gans=["stylegan2", "spade"],
                 **notebook_roots)
    assert images(nb) == 1
    assert "GANs trained on phantom data for 0.064 kimg, profile smoke" in printed(nb)
