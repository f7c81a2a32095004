"""The sweep's budget under races, pruning by chunks, ``--gans``, ``status``/``export`` on SQLite, the CLI's
argument rules, and the Table 1 space checked value for value against the paper's Table 1."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medgan.config import TABLE1, ConfigError
from medgan.sweep import SweepConfig, counted_trials, is_surplus, run_sweep, search_space
from medgan.sweep.study import ONLY_FOR, _objective, open_study
from medgan.training import METRIC_HOOKS

FAST = ["model.g_filters=8", "model.d_filters=8", "grid=4", "loss.vgg_weight=0", "tick_kimg=0.032",
        "snapshot_kimg=1", "ema_kimg=0"]


def _cfg(data, out, **kw):
    return SweepConfig(data=str(data), gan=kw.pop("gan", "dcgan"), out=str(out), trials=kw.pop("trials", 2),
                       kimg=kw.pop("kimg", 0.032), batch=8, metric="kid", fixed=tuple([*FAST, *kw.pop("fixed", ())]),
                       **kw)


def _by_lr(ctx):
    """A cheap deterministic metric that ranks trials by their learning rate (and never changes with kimg)."""
    return {"value": float(ctx.cfg.lr) * 1000.0, "features": "none"}


def _meanabs(ctx):
    image, _ = ctx.sample(8)
    return {"value": float(np.abs(image).mean()), "features": "none"}


@pytest.fixture
def hook(monkeypatch):
    def use(fn):
        monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "kid": fn})

    return use


# ---------------------------------------------------------------------------------------------
# the budget
# ---------------------------------------------------------------------------------------------
def _t(number, *, surplus=False, history=()):
    return SimpleNamespace(number=number, user_attrs={"surplus": True} if surplus else {},
                           system_attrs={"retry_history": list(history)} if history else {})


def test_counting_rules():
    trials = [_t(0), _t(1), _t(2, surplus=True), _t(3, history=[0]), _t(4)]
    assert [t.number for t in counted_trials(trials)] == [1, 3, 4]  # 0 re-run as 3; 2 never trained
    assert not is_surplus(trials, 4, 3) and is_surplus(trials, 4, 2)
    # a not-yet-marked surplus trial below does not change the verdict: if it is surplus, so is this one
    assert is_surplus([_t(0), _t(1), _t(2)], 3, 2) and is_surplus([_t(0), _t(1), _t(2)], 2, 2)


def test_two_asks_for_the_last_slot_run_one_trial(hook, tmp_path, small_discs):
    """Two workers ask at once when one trial is left: the later number is surplus and trains nothing."""
    from optuna.trial import TrialState

    hook(_meanabs)
    cfg = _cfg(small_discs, tmp_path / "s", trials=1)
    (tmp_path / "s").mkdir()
    study = open_study(cfg)
    objective = _objective(cfg, search_space("dcgan"), False)
    a, b = study.ask(), study.ask()  # both asked before either checked the budget
    for trial in (b, a):
        study.tell(trial, objective(trial))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs == {"surplus": True}
    assert sorted(p.name for p in (tmp_path / "s").glob("trial-*")) == ["trial-0"]
    assert len(counted_trials(trials)) == 1
    # the frame, sweep.json and a resume all ignore the surplus trial
    frame = run_sweep(cfg)
    assert list(frame["trial"]) == [0] and json.loads((tmp_path / "s" / "sweep.json").read_text())["n_trials"] == 1


# ---------------------------------------------------------------------------------------------
# pruning
# ---------------------------------------------------------------------------------------------
def test_chunked_trial_is_bit_identical_to_one_run(hook, tmp_path, small_discs, assert_same_state):
    from medgan.train import load_checkpoint

    hook(_meanabs)
    one = run_sweep(_cfg(small_discs, tmp_path / "one", trials=1, kimg=0.064))
    four = run_sweep(_cfg(small_discs, tmp_path / "four", trials=1, kimg=0.064, report_kimg=0.016))
    assert one["value"].iloc[0] == four["value"].iloc[0]
    assert len((tmp_path / "four" / "trial-0" / "metric-kid.jsonl").read_text().splitlines()) == 4
    assert_same_state(load_checkpoint(tmp_path / "one" / "trial-0" / "checkpoint-last.pt"),
                      load_checkpoint(tmp_path / "four" / "trial-0" / "checkpoint-last.pt"))


def test_halving_pruner_stops_hopeless_trials_and_keeps_their_runs(hook, tmp_path, small_discs):
    hook(_by_lr)
    out = tmp_path / "s"
    cfg = _cfg(small_discs, out, trials=6, kimg=0.064, pruner="halving", report_kimg=0.016)
    # the first two trials are set, not drawn: trial 1 (value 1.0) is then worse than the better half of its rung
    # ([0.05, 1.0]) and must be pruned, whatever the sampler draws for the other four
    out.mkdir()
    study = open_study(cfg)
    for lr in (5e-5, 1e-3):
        study.enqueue_trial({"lr": lr})
    frame = run_sweep(cfg)
    assert len(frame) == 6 and list(frame["lr"][:2]) == [5e-5, 1e-3]
    pruned = frame[frame["status"] == "pruned"]
    assert 1 in set(pruned["trial"]) and set(pruned["state"]) == {"PRUNED"}
    for _, row in pruned.iterrows():
        lines = (Path(row["run_dir"]) / "metric-kid.jsonl").read_text().splitlines()
        assert 1 <= len(lines) < 4  # stopped between chunks
        assert row["value"] == json.loads(lines[-1])["value"] == pytest.approx(row["lr"] * 1000)
    finished = frame[frame["status"] == "finished"]
    for _, row in finished.iterrows():
        assert len((Path(row["run_dir"]) / "metric-kid.jsonl").read_text().splitlines()) == 4
    # a pruned trial is never the best
    best = json.loads((out / "sweep.json").read_text())["best"]
    assert best["trial"] in set(finished["trial"]) and best["value"] == finished["value"].min()


def test_same_seed_draws_the_same_knobs_in_any_worker_process(hook, tmp_path, small_discs, monkeypatch):
    """Knobs are a function of (seed, trial number, history): a rerun in another process repeats them trial for
    trial, trials of one sweep differ (so do workers asking at once: their numbers differ), another seed differs."""
    import os

    hook(_by_lr)
    knobs = [c for c in search_space("dcgan") if c != "lr"]
    first = run_sweep(_cfg(small_discs, tmp_path / "a", trials=3))
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # what another worker process would be
    again = run_sweep(_cfg(small_discs, tmp_path / "b", trials=3))
    other = run_sweep(_cfg(small_discs, tmp_path / "c", trials=3, seed=1))
    assert first[knobs].equals(again[knobs]) and list(first["value"]) == list(again["value"])
    assert len(first[knobs].drop_duplicates()) == 3  # each trial number has its own draw
    assert not first[knobs].equals(other[knobs])


def test_pruner_flag_picks_the_pruner():
    import optuna

    from medgan.sweep.study import MEDIAN_STARTUP, make_pruner

    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    median = make_pruner("median")
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_startup_trials == MEDIAN_STARTUP
    assert isinstance(make_pruner("halving"), optuna.pruners.SuccessiveHalvingPruner)


def test_report_points():
    c = SweepConfig(data="d", gan="dcgan", out="o", kimg=1.0)
    assert c.report_points() == [1.0]
    assert SweepConfig(data="d", gan="dcgan", out="o", kimg=1.0, pruner="median").report_points() == [0.25, 0.5, 0.75, 1]
    assert SweepConfig(data="d", gan="dcgan", out="o", kimg=1.0, report_kimg=0.4).report_points() == [0.4, 0.8, 1.0]
    with pytest.raises(ConfigError, match="pruner"):
        SweepConfig(data="d", gan="dcgan", out="o", pruner="hyperband")


# ---------------------------------------------------------------------------------------------
# --gans, status, export, CLI rules
# ---------------------------------------------------------------------------------------------
def test_cli_gans_status_export(hook, tmp_path, small_discs, capsys):
    from medgan.cli import main

    hook(_meanabs)
    out = tmp_path / "sweep"
    rc = main(["sweep", "--data", str(small_discs), "--gans", "dcgan,wgan", "--out", str(out), "--trials", "1",
               "--kimg", "0.032", "--batch", "8", "--metric", "kid", "--set", *FAST])
    assert rc == 0, capsys.readouterr()
    capsys.readouterr()
    name = Path(small_discs).name  # one study per GAN x dataset: <dataset>-<gan>, in <out>/<gan>
    for gan in ("dcgan", "wgan"):
        summary = json.loads((out / gan / "sweep.json").read_text())
        assert summary["study"] == f"{name}-{gan}" and summary["n_trials"] == 1
        assert ("loss.clip" in summary["search_space"]) == (gan == "wgan")
        storage = f"sqlite:///{out / gan / 'study.db'}"
        assert main(["sweep", "status", f"{name}-{gan}", "--storage", storage]) == 0
        text = capsys.readouterr().out
        assert "trials counted: 1  COMPLETE=1" in text and "diverged share: 0.0%" in text and "best #1: trial 0" in text
    target = tmp_path / "x" / "trials.parquet"
    assert main(["sweep", "export", f"{name}-wgan", "--storage", f"sqlite:///{out / 'wgan' / 'study.db'}",
                 "--out", str(target)]) == 0
    said = capsys.readouterr().out
    written = Path(said.split()[1])
    try:
        import pyarrow  # noqa: F401

        assert written == target and "CSV" not in said
        table = pd.read_parquet(written)
    except ImportError:
        assert written == target.with_suffix(".csv") and "pyarrow is not installed" in said
        table = pd.read_csv(written)
    pd.testing.assert_frame_equal(table, pd.read_csv(out / "wgan" / "trials.csv"), check_dtype=False)
    # unknown study: a clear error naming what the storage holds
    assert main(["sweep", "status", "nope", "--storage", f"sqlite:///{out / 'wgan' / 'study.db'}"]) == 2
    assert f"{name}-wgan" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--gan", "dcgan", "--out", "o", "--trials", "1", "--kimg", "1"], "--data"),
    (["--data", "d", "--out", "o", "--trials", "1", "--kimg", "1"], "--gan/--gans"),
    (["--data", "d", "--gan", "dcgan", "--gans", "wgan", "--out", "o", "--trials", "1", "--kimg", "1"], "--gan/--gans"),
    (["status"], "STUDY"),
    (["frobnicate", "x"], "unknown sweep action"),
])
def test_cli_argument_rules(args, message, capsys):
    from medgan.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sweep", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_gans_refuses_bad_names(tmp_path, small_discs, capsys):
    from medgan.cli import main

    assert main(["sweep", "--data", str(small_discs), "--gans", "dcgan,spade", "--out", str(tmp_path), "--trials", "1",
                 "--kimg", "1"]) == 2
    assert "spade" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Table 1, value for value
# ---------------------------------------------------------------------------------------------
# The paper's Table 1 rows (text as in the paper) -> the config key they map to, and how a paper value reads.
PAPER_TABLE1 = """\
Differentiable Augmentation (Zhao et al., 2020) TRUE/FALSE
Activation fn of Discriminator ReLU/LeakyRelu/Elu/Selu
Activation fn of Generator ReLU/LeakyRelu/Elu/Selu
Normalization layer of Discriminator BatchNorm (Ioffe and Szegedy, 2015)/ InstanceNorm (Ulyanov et al., 2017)
Normalization layer of Generator BatchNorm (Ioffe and Szegedy, 2015)/ InstanceNorm (Ulyanov et al., 2017)
Number of Filters of Discriminator 16/32/64/128
Number of Filters of Generator 16/32/64/128
Use Spectral norm for Discriminator TRUE/FALSE
Use Spectral norm for Generator TRUE/FALSE
Weight initialization function Normal/Xavier/Xavier Uniform/ Kaiming He
Weight initialization Gain 0.01/0.02/0.1/1.0
Gradient Penalty loss weight (WGAN-GP only) 0/0.1/1.0/10.0
Weight Clipping Value (WGAN only) 0 / 0.01 / 0.1
Feature matching loss weight 0 / 1.0 /10.0
VGG loss weight 0 / 1.0 /10.0
Learning Rate 0.00004 / 0.00005 / 0.0001 / 0.0002 / 0.001
Use of Label Smoothing (Salimans et al., 2016) TRUE/FALSE
Use of Data Augmentation TRUE/FALSE"""
WORDS = {"TRUE": True, "FALSE": False, "ReLU": "relu", "LeakyRelu": "leakyrelu", "Elu": "elu", "Selu": "selu",
         "BatchNorm": "batch", "InstanceNorm": "instance", "Normal": "normal", "Xavier": "xavier",
         "Xavier Uniform": "xavier-uniform", "Kaiming He": "kaiming"}
ROWS = {  # paper row -> (config key, TRUE/FALSE as the config spells them)
    "Differentiable Augmentation": ("aug.diffaugment", {True: "color,translation,cutout", False: ""}),
    "Activation fn of Discriminator": ("model.d_activation", None),
    "Activation fn of Generator": ("model.g_activation", None),
    "Normalization layer of Discriminator": ("model.d_norm", None),
    "Normalization layer of Generator": ("model.g_norm", None),
    "Number of Filters of Discriminator": ("model.d_filters", None),
    "Number of Filters of Generator": ("model.g_filters", None),
    "Use Spectral norm for Discriminator": ("model.d_spectral", None),
    "Use Spectral norm for Generator": ("model.g_spectral", None),
    "Weight initialization function": ("model.init", None),
    "Weight initialization Gain": ("model.init_gain", None),
    "Gradient Penalty loss weight": ("loss.gp_weight", None),
    "Weight Clipping Value": ("loss.clip", None),
    "Feature matching loss weight": ("loss.fm_weight", None),
    "VGG loss weight": ("loss.vgg_weight", None),
    "Learning Rate": ("lr", None),
    "Use of Label Smoothing": ("loss.label_smoothing", {True: 0.1, False: 0.0}),
    "Use of Data Augmentation": ("aug.classical", None),
}


def _paper_values(text: str) -> list:
    import re

    text = re.sub(r"\([^)]*\)", "", text)  # citations and "(WGAN only)"
    out = []
    for v in (p.strip() for p in text.split("/")):
        out.append(WORDS[v] if v in WORDS else (int(v) if v.isdigit() and "." not in v else float(v)))
    return out


def _norm(values) -> list[str]:
    """Order-free, with 0 == 0.0 but True != 1 and "" != False."""
    n = [repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v) for v in values]
    assert len(set(n)) == len(n), values
    return sorted(n)


def test_table1_space_is_the_papers_table1_value_for_value():
    seed = sorted(Path("/work/shared/seeds").glob("001_*.txt")) if Path("/work/shared/seeds").is_dir() else []
    if seed:  # the rows above are the paper's text, verbatim
        paper = seed[0].read_text().replace("\xa0", " ")  # "et\xa0al." in the paper's text
        assert all(line in paper for line in PAPER_TABLE1.splitlines())
    seen = set()
    for line in PAPER_TABLE1.splitlines():
        row = next(r for r in ROWS if line.startswith(r))
        key, spell = ROWS[row]
        values = _paper_values(line[len(row):])
        if spell:
            values = [spell[v] for v in values]
        assert _norm(values) == _norm(TABLE1[key]), (row, values, TABLE1[key])
        only = "(WGAN-GP only)" in line and ("wgan-gp",) or "(WGAN only)" in line and ("wgan",) or None
        if only:
            assert ONLY_FOR[key] == only
            assert all((key in search_space(g)) == (g in only) for g in ("dcgan", "lsgan", "wgan", "wgan-gp", "hinge"))
        seen.add(key)
    assert seen == set(TABLE1)  # every row maps to a knob and every knob is a row


def test_table1_parser_notices_a_wrong_value():
    assert _paper_values(" 0 / 0.01 / 0.1") == [0, 0.01, 0.1]
    assert _norm(_paper_values(" 0 / 0.01 / 0.1")) == _norm(TABLE1["loss.clip"])
    assert _norm(_paper_values(" 0 / 0.01 / 0.2")) != _norm(TABLE1["loss.clip"])
    assert _norm(_paper_values("TRUE/FALSE")) != _norm((1, 0))
    assert math.isclose(_paper_values(" 0.00004 / 0.001")[0], 4e-5)
