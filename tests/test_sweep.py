"""The Optuna sweep: search space per GAN, trials.csv/sweep.json, resuming, failed trials, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medgan.config import TABLE1, ConfigError, LossConfig
from medgan.sweep import SWEEP_GANS, SweepConfig, run_sweep, search_space
from medgan.training import METRIC_HOOKS

# Pin the knobs that are slow on CPU or need absent weights (VGG); Table 1 knobs named here are not sampled.
FAST = ["loss.vgg_weight=0", "tick_kimg=0.032", "snapshot_kimg=1", "ema_kimg=0"]


def _meanabs(ctx):
    """A cheap metric: mean |generated image| over 8 samples (no Inception)."""
    image, _ = ctx.sample(8)
    return {"value": float(np.abs(image).mean()), "features": "none"}


@pytest.fixture(scope="session")
def fast(tiny_overrides) -> list[str]:
    return [*tiny_overrides, *FAST]


@pytest.fixture(scope="session")
def sweep_cfg(fast):
    """``sweep_cfg(data, out, *, trials=2, fixed=(), **kw) -> SweepConfig`` with the fast knobs pinned."""

    def cfg(data, out, *, trials=2, fixed=(), **kw):
        return SweepConfig(data=str(data), gan=kw.pop("gan", "dcgan"), out=str(out), trials=trials, kimg=0.032, batch=8,
                           metric=kw.pop("metric", "kid"), fixed=tuple([*fast, *fixed]), **kw)

    return cfg


@pytest.mark.parametrize("gan", SWEEP_GANS)
def test_search_space_holds_only_knobs_the_loss_accepts(gan):
    from medgan.losses import LOSSES

    space = search_space(gan)
    assert set(space) <= set(TABLE1)
    assert ("loss.clip" in space) == (gan == "wgan")
    assert ("loss.gp_weight" in space) == (gan == "wgan-gp")
    assert ("loss.label_smoothing" in space) == (gan in ("dcgan", "lsgan"))
    # every value of every knob in the space passes the loss's own validation; every dropped knob fails it
    cls = LOSSES[gan]
    for key in ("loss.clip", "loss.gp_weight", "loss.label_smoothing"):
        for value in TABLE1[key]:
            loss_cfg = LossConfig(name=gan, **{key.split(".")[1]: value})
            obj = cls.__new__(cls)
            obj.cfg, obj.vgg = loss_cfg, None
            if key in space or value == 0:
                obj.validate()
            else:
                with pytest.raises(ConfigError):
                    obj.validate()
    # the other Table 1 knobs are all searched
    assert set(TABLE1) - set(space) <= {"loss.clip", "loss.gp_weight", "loss.label_smoothing"}
    assert all(space[k] == TABLE1[k] for k in space)


def test_search_space_unknown_gan():
    with pytest.raises(ConfigError, match="stylegan2"):
        search_space("stylegan2")


def _patch_kid(monkeypatch):
    # the sweep asks for "kid"; serve it with a cheap stand-in for this test only (monkeypatch restores it)
    monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "kid": _meanabs})


def test_sweep_runs_trials_writes_outputs_and_resumes(sweep_cfg, tmp_path, small_discs, monkeypatch):
    _patch_kid(monkeypatch)
    out = tmp_path / "sweep"
    frame = run_sweep(sweep_cfg(small_discs, out, trials=2))
    assert list(frame["trial"]) == [0, 1]
    csv = pd.read_csv(out / "trials.csv")
    assert len(csv) == 2 and list(csv["trial"]) == [0, 1]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["n_trials"] == 2 and summary["metric"] == "kid"
    # pinned knobs are not searched; the rest of the dcgan space is
    assert "model.g_filters" not in summary["search_space"] and "loss.vgg_weight" not in summary["search_space"]
    assert "lr" in summary["search_space"] and "loss.label_smoothing" in summary["search_space"]
    for _, row in frame.iterrows():
        run_dir = out / f"trial-{row['trial']}"
        assert row["run_dir"] == str(run_dir)
        status = json.loads((run_dir / "status.json").read_text())["status"]
        assert row["status"] == status
        cfg = json.loads((run_dir / "config.json").read_text())["config"]
        # the row's knobs are the ones the run trained with, the pinned ones too
        assert cfg["lr"] == row["lr"] and cfg["model"]["init"] == row["model.init"]
        assert cfg["model"]["g_filters"] == 8 and cfg["metrics"] == ["kid"] and cfg["metric_kimg"] == 0
        # seeded sampler, tiny stable runs: every trial finishes and reports its last metric line
        assert status == "finished", row["reason"]
        lines = (run_dir / "metric-kid.jsonl").read_text().splitlines()
        assert row["value"] == json.loads(lines[-1])["value"] and math.isfinite(row["value"])
    assert summary["best"]["value"] == frame["value"].min()
    assert summary["best"]["trial"] == int(frame.loc[frame["value"].idxmin(), "trial"])

    # rerunning with one more trial runs exactly one more, and keeps the first two
    frame2 = run_sweep(sweep_cfg(small_discs, out, trials=3))
    assert list(frame2["trial"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(frame2.iloc[:2].reset_index(drop=True), frame.reset_index(drop=True))
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-0", "trial-1", "trial-2"]
    # rerunning with the same total runs nothing
    assert len(run_sweep(sweep_cfg(small_discs, out, trials=3))) == 3
    assert len(list(out.glob("trial-*"))) == 3
    # the same storage with other settings is refused, not mixed in
    with pytest.raises(ConfigError, match="metric_n"):
        run_sweep(sweep_cfg(small_discs, out, trials=4, metric_n=5))


def test_diverging_and_failing_trials_are_recorded_not_raised(sweep_cfg, tmp_path, small_discs, monkeypatch):
    _patch_kid(monkeypatch)
    out = tmp_path / "sweep"
    # lr=1e30 sends D's parameters to inf within a tick: the trainer reports "diverged"
    frame = run_sweep(sweep_cfg(small_discs, out, trials=2, fixed=("lr=1e30",)))
    assert len(frame) == 2
    assert set(frame["status"]) == {"diverged"}
    assert frame["value"].isna().all() and set(frame["state"]) == {"FAIL"}
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["best"] is None and summary["status_counts"] == {"diverged": 2}

    # a hook that raises marks the trial failed with its reason, and the study goes on
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "kid": broken})
    frame = run_sweep(sweep_cfg(small_discs, tmp_path / "s2", trials=2))
    assert list(frame["status"]) == ["failed", "failed"]
    assert all("boom" in r for r in frame["reason"])


def test_bad_fixed_override_fails_before_any_trial(sweep_cfg, tmp_path, small_discs):
    with pytest.raises(ConfigError, match="no_such_knob"):
        run_sweep(sweep_cfg(small_discs, tmp_path / "s", fixed=("no_such_knob=1",)))
    assert not (tmp_path / "s").exists()


def test_bad_sweep_settings():
    with pytest.raises(ConfigError, match="metric"):
        SweepConfig(data="d", gan="dcgan", out="o", metric="is")
    with pytest.raises(ConfigError, match="metric_features"):
        SweepConfig(data="d", gan="dcgan", out="o", metric_features="vgg")
    with pytest.raises(ConfigError, match="gan"):
        SweepConfig(data="d", gan="spade", out="o")


def test_inception_random_kid_names_its_features_in_every_result(sweep_cfg, tmp_path, small_discs):
    """The real kid hook with random-weight Inception (no weights on this machine): the name travels."""
    out = tmp_path / "sweep"
    frame = run_sweep(sweep_cfg(small_discs, out, trials=1, metric_features="inception-random", metric_n=8))
    assert list(frame["features"]) == ["inception-random"]
    assert frame["status"].iloc[0] == "finished", frame["reason"].iloc[0]
    assert math.isfinite(frame["value"].iloc[0])
    record = json.loads((out / "trial-0" / "metric-kid.jsonl").read_text().splitlines()[-1])
    assert record["features"] == "inception-random" and record["value"] == frame["value"].iloc[0]
    assert json.loads((out / "sweep.json").read_text())["features"] == "inception-random"
    assert set(pd.read_csv(out / "trials.csv")["features"]) == {"inception-random"}


def test_cli_sweep(fast, tmp_path, small_discs, monkeypatch, capsys):
    from medgan.cli import main

    _patch_kid(monkeypatch)
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(small_discs), "--gan", "hinge", "--out", str(out), "--trials", "2", "--kimg", "0.032",
            "--batch", "8", "--metric", "kid", "--set", *fast]
    rc = main(args)
    text = capsys.readouterr().out
    frame = pd.read_csv(out / "trials.csv")
    assert len(frame) == 2 and "loss.label_smoothing" not in frame.columns
    assert list(frame["status"]) == ["finished", "finished"] and rc == 0
    assert f"best: trial {int(frame.loc[frame['value'].idxmin(), 'trial'])} kid" in text
    assert main(["sweep", "--data", str(small_discs), "--gan", "dcgan", "--out", str(tmp_path / "x"), "--trials", "1",
                 "--kimg", "1", "--set", "bogus=1"]) == 2
    assert "unknown config field 'bogus'" in capsys.readouterr().err
