"""Reading a sweep (medgan.sweep.analysis): restricted spaces, Fig 3/4 inputs, best configs -> Table 2, and
notebook 03's recipe (experiments.swept: reuse, continue, set aside when stale)."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from medgan import config, experiments
from medgan.config import TABLE1, ConfigError
from medgan.runtime import code_version
from medgan.sweep import analysis
from medgan.sweep.study import SweepConfig, restrict_space, search_space
from medgan.training import METRIC_HOOKS

matplotlib.use("Agg")


# ---------------------------------------------------------------------------------------------
# restricted space (the quick profile's CPU budget); the paper's is exact
# ---------------------------------------------------------------------------------------------
def test_restrict_space_narrows_to_table1_values_in_table1_order():
    space = restrict_space(search_space("hinge"), ("model.d_filters=64|16", "lr=0.0002", "aug.classical=False"))
    assert space["model.d_filters"] == (64, 16)
    assert space["lr"] == (0.0002,) and space["aug.classical"] == (False,)
    assert space["model.g_filters"] == TABLE1["model.g_filters"]  # untouched knobs stay exact
    assert restrict_space(search_space("hinge"), ()) == search_space("hinge")


@pytest.mark.parametrize("bad, match", [
    ("model.d_filters=48", "not among Table 1"),       # a value outside Table 1
    ("model.d_filters", "knob=v1"),                    # no values
    ("model.nope=1", "Table 1 knob"),                  # not a knob
    ("loss.clip=0.01", "not searched for this GAN"),   # clipping is WGAN's only
])
def test_restrict_space_refuses(bad, match):
    with pytest.raises(ConfigError, match=match):
        restrict_space(search_space("hinge"), (bad,))
    with pytest.raises(ConfigError, match=match):  # once, when the sweep is configured
        SweepConfig(data="d", gan="hinge", out="o", restrict=(bad,))


# ---------------------------------------------------------------------------------------------
# the trials table
# ---------------------------------------------------------------------------------------------
def _frame() -> pd.DataFrame:
    rows = []
    # acdc/hinge: 3 finished (10, 20, 40), 1 diverged; acdc/dcgan: 1 finished (5), 1 failed, 1 pruned (value kept)
    spec = [("acdc-32", "hinge", "finished", 10.0, 16), ("acdc-32", "hinge", "finished", 20.0, 32),
            ("acdc-32", "hinge", "finished", 40.0, 64), ("acdc-32", "hinge", "diverged", math.nan, 64),
            ("acdc-32", "dcgan", "finished", 5.0, 32), ("acdc-32", "dcgan", "failed", math.nan, 16),
            ("acdc-32", "dcgan", "pruned", 1.0, 16), ("idrid-32", "hinge", "finished", 7.0, 16)]
    for i, (data, gan, status, value, d_filters) in enumerate(spec):
        row = {k: v[0] for k, v in TABLE1.items()}
        row.update({"trial": i, "model.d_filters": d_filters, "status": status, "value": value, "gan": gan,
                    "data": data, "metric": "fid", "features": "inception-random", "reason": "", "state": "x",
                    "run_dir": f"r/{i}"})
        rows.append(row)
    return pd.DataFrame(rows)


def test_dataset_of():
    assert [analysis.dataset_of(d) for d in ("acdc-32", "/x/sliver07-paper", "idrid", "acdc-64")] == \
        ["acdc", "sliver07", "idrid", "acdc"]


def test_status_shares_and_spread_by_hand():
    frame = analysis.collect(frames=[_frame()])
    shares = analysis.status_shares(frame)
    assert shares.loc[("acdc", "hinge"), "finished"] == 0.75 and shares.loc[("acdc", "hinge"), "diverged"] == 0.25
    assert shares.loc[("acdc", "dcgan"), ["finished", "failed", "pruned"]].tolist() == pytest.approx([1 / 3] * 3)
    assert shares.loc[("acdc", "dcgan"), "n"] == 3
    assert np.allclose(shares[list(analysis.STATUSES)].sum(axis=1), 1)
    spread = analysis.spread(frame)
    # finished only: the pruned trial's 1.0 is not a result, the diverged NaN is not either
    assert spread.loc[("acdc", "dcgan"), "best"] == 5.0 and spread.loc[("acdc", "dcgan"), "n"] == 1
    assert spread.loc[("acdc", "hinge"), "median"] == 20.0
    assert spread.loc[("acdc", "hinge"), "iqr"] == pytest.approx(30.0 - 15.0)  # linear quartiles of 10, 20, 40


def test_best_configs_pick_the_lowest_finished_trial_and_round_trip(tmp_path):
    frame = analysis.collect(frames=[_frame()])
    best = analysis.best_configs(frame)
    assert best["acdc"]["hinge"]["trial"] == 0 and best["acdc"]["hinge"]["value"] == 10.0
    assert best["acdc"]["dcgan"]["trial"] == 4  # not the pruned trial 6 with its lower last value
    assert best["acdc"]["hinge"]["knobs"]["model.d_filters"] == 16
    path = analysis.write_best(tmp_path / "best.json", best, profile="quick")
    assert analysis.read_best(path) == {"profile": "quick", "best": best}
    sets = analysis.best_overrides(path, "acdc", "hinge")
    assert "model.d_filters=16" in sets and "aug.diffaugment=" in sets and len(sets) == len(TABLE1)
    assert analysis.best_overrides(path, "acdc", "stylegan2") == []  # not swept: upstream defaults
    # the strings are valid --set assignments that reproduce the knobs
    cfg = config.TrainConfig().with_overrides(sets)
    assert cfg.model.d_filters == 16 and cfg.aug.diffaugment == ""


def test_read_trials_keeps_knob_types_through_csv(tmp_path):
    frame = _frame()
    frame.loc[0, "aug.diffaugment"] = ""
    frame.loc[1, "aug.diffaugment"] = "color,translation,cutout"
    frame.to_csv(tmp_path / "trials.csv", index=False)
    back = analysis.read_trials(tmp_path)  # a sweep folder
    assert back.loc[0, "aug.diffaugment"] == "" and back.loc[1, "aug.diffaugment"] == "color,translation,cutout"
    assert back["dataset"].tolist()[:1] == ["acdc"]
    best = analysis.best_configs(back)["acdc"]["hinge"]["knobs"]
    assert best["model.d_spectral"] is True and best["lr"] == TABLE1["lr"][0]  # CSV text back to bool / float
    with pytest.raises(ConfigError, match="no sweep trials"):
        analysis.read_trials(tmp_path / "absent.csv")
    with pytest.raises(ConfigError, match="columns"):
        analysis.collect(frames=[frame.drop(columns=["gan"])])


def test_importances_find_the_knob_that_moves_the_metric():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        row = {k: v[0] for k, v in TABLE1.items()}
        row["model.d_filters"] = int(rng.choice(TABLE1["model.d_filters"]))
        row["lr"] = float(rng.choice(TABLE1["lr"]))  # varies, but the metric ignores it
        row.update(trial=i, status="finished", value=float(row["model.d_filters"]) + 0.01 * i, gan="hinge",
                   data="acdc-32")
        rows.append(row)
    imp = analysis.importances(analysis.collect(frames=[pd.DataFrame(rows)]))
    assert imp.loc[("acdc", "hinge"), "model.d_filters"] > 0.8
    assert imp.loc[("acdc", "hinge"), "model.d_filters"] > imp.loc[("acdc", "hinge"), "lr"]


def test_figures_draw_every_finished_trial():
    frame = analysis.collect(frames=[_frame()])
    fig = analysis.fig3(frame, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["IDRiD", "ACDC"]  # the paper's panel order
    acdc = fig.axes[1]
    dots = sum(len(c.get_offsets()) for c in acdc.collections)
    assert dots == 4  # hinge 3 + dcgan 1 finished; diverged, failed and pruned trials have no dot
    assert any("1 ok, 2 not" in t.get_text() for t in acdc.get_xticklabels())
    fig4 = analysis.knob_figure(frame, "model.d_filters")
    assert [ax.get_title() for ax in fig4.axes if ax.get_visible()] == ["DCGAN", "HingeGAN"]
    assert [t.get_text() for t in fig4.axes[1].get_xticklabels()] == ["16", "32", "64"]
    assert [t.get_text() for t in fig4.legends[0].get_texts()] == ["ACDC"]  # one figure legend: the datasets
    overview = analysis.knobs_overview(frame)
    diffaugment = next(ax for ax in overview.axes if ax.get_title() == "aug.diffaugment")
    assert [t.get_text() for t in diffaugment.get_xticklabels()] == ["off"]  # the empty policy reads "off"
    assert [t.get_text() for t in overview.legends[0].get_texts()] == ["DCGAN", "HingeGAN"]
    assert analysis.shares_figure(analysis.status_shares(frame)).axes


# ---------------------------------------------------------------------------------------------
# notebook 03's recipe: run, reuse, set aside
# ---------------------------------------------------------------------------------------------
def _meanabs(ctx):
    image, _ = ctx.sample(8)
    return {"value": float(np.abs(image).mean()), "features": "none"}


def test_swept_runs_then_reuses_then_sets_aside_when_code_changes(small_discs, tmp_path, monkeypatch, tiny_overrides):
    monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "fid": _meanabs})
    tiny = dataclasses.replace(config.PROFILES["quick"], name="tiny", sweep_trials=2, sweep_kimg=0.032,
                               sweep_batch=8, sweep_metric_n=8,
                               sweep_knobs=(*tiny_overrides, "loss.vgg_weight=0", "tick_kimg=0.032", "ema_kimg=0"),
                               sweep_restrict=("lr=0.0002|0.001",))
    monkeypatch.setitem(config.PROFILES, "tiny", tiny)
    real = experiments.load_prepared(small_discs)
    frame = experiments.swept(real, "hinge", "tiny", runs_root=tmp_path, progress=False)
    folder = tmp_path / f"sweep-{real.root.name}-tiny" / "hinge"
    assert len(frame) == 2 and set(frame["lr"]) <= {0.0002, 0.001}
    assert (folder / "sweep.json").is_file() and frame["gan"].eq("hinge").all()
    stamp = (folder / "trial-0" / "config.json").stat().st_mtime_ns
    again = experiments.swept(real, "hinge", "tiny", runs_root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, frame)
    assert (folder / "trial-0" / "config.json").stat().st_mtime_ns == stamp  # reused: nothing retrained
    monkeypatch.setattr(experiments, "code_version", lambda: "0.0.0+other")
    experiments.swept(real, "hinge", "tiny", runs_root=tmp_path, progress=False)
    assert (folder.parent / f"hinge.stale-{code_version()}").is_dir()
    assert (folder / "sweep.json").is_file()
