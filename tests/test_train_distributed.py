"""Data parallelism under torchrun (gloo, 2 CPU processes): same loss curve as 1 process with the whole batch,
one writer of the run folder, and resume across a changed world size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.training import load_checkpoint, make_config, read_stats, run_status, run_training

# instance norm: per-sample statistics, so splitting a batch over ranks changes nothing (batch norm would
# see 4 samples per rank instead of 8); no DiffAugment/GP: the only randomness is the shared z and data order
SETS = ["model.g_norm=instance", "model.d_norm=instance", "tick_kimg=0.016", "snapshot_kimg=0.032",
        "ema_kimg=0.01", "aug.classical=false"]
CURVE = ("D_total", "G_total", "D_real", "D_fake", "grad_norm_D", "grad_norm_G")


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "medgan.cli", "train", *args, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def train_args(data: Path, out: Path, kimg: float, sets: list[str]) -> list[str]:
    return ["--data", str(data), "--gan", "dcgan", "--out", str(out), "--kimg", str(kimg), "--batch", "8", "--set", *sets]


@pytest.fixture(scope="module")
def runs(make_discs, tiny_overrides, tmp_path_factory) -> dict[str, Path]:
    sets = [*tiny_overrides, *SETS]
    root = tmp_path_factory.mktemp("dist")
    data = make_discs(root / "discs")
    single = root / "single"
    run_training(make_config(data=data, out=single, gan="dcgan", kimg=0.064, batch=8, overrides=sets), progress=False)
    two = root / "two"
    proc = torchrun(2, *train_args(data, two, 0.064, sets))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # half on two processes, the rest on one
    mixed = root / "mixed"
    proc = torchrun(2, *train_args(data, mixed, 0.032, sets))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_training(make_config(data=data, out=mixed, gan="dcgan", kimg=0.064, batch=8, overrides=sets, resume=True),
                 resume=True, progress=False)
    return {"data": data, "single": single, "two": two, "mixed": mixed}


def _curve(run: Path) -> np.ndarray:
    return np.array([[s[k] for k in CURVE] for s in read_stats(run)])


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(runs):
    single, two = _curve(runs["single"]), _curve(runs["two"])
    assert single.shape == two.shape == (4, len(CURVE))
    np.testing.assert_allclose(two, single, rtol=2e-3, atol=1e-5)
    a, b = load_checkpoint(runs["single"] / "checkpoint-last.pt"), load_checkpoint(runs["two"] / "checkpoint-last.pt")
    assert a["nimg"] == b["nimg"] == 64 and b["world_size"] == 2 and len(b["rng_ranks"]) == 2
    for part in ("G", "D", "G_ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_rank_zero_is_the_only_writer(runs):
    two = runs["two"]
    assert run_status(two)["status"] == "finished"
    info = json.loads((two / "config.json").read_text())
    assert info["world_size"] == 2
    assert [s["tick"] for s in read_stats(two)] == [1, 2, 3, 4]  # one line per tick, not one per rank
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith("samples-")) == [
        "checkpoint-last.pt", "checkpoint-prev.pt", "config.json", "stats.jsonl", "status.json", "train.lock"]


@pytest.mark.slow
def test_resume_on_a_different_world_size(runs):
    mixed = runs["mixed"]
    assert run_status(mixed)["status"] == "finished"
    assert json.loads((mixed / "config.json").read_text())["world_size"] == 1
    np.testing.assert_allclose(_curve(mixed), _curve(runs["single"]), rtol=2e-3, atol=1e-5)
    state = load_checkpoint(mixed / "checkpoint-last.pt")
    assert state["nimg"] == 64 and state["world_size"] == 1 and "rng_ranks" not in state
