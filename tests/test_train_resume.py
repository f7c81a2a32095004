"""Exact resume: 2N steps in one go == N steps, the process ends, a new process resumes for N more.

Deterministic mode on CPU; the comparison is ``torch.equal`` on every tensor of the final checkpoint
(G, D, G_ema, both optimisers, RNG states, data order), not just "close".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medgan.training import load_checkpoint, make_config, run_status, run_training


def _args(discs: Path, out: Path, gan: str, kimg: float, sets: list[str]) -> list[str]:
    return ["--data", str(discs), "--gan", gan, "--out", str(out), "--kimg", str(kimg), "--batch", "8",
            "--no-progress", "--set", *sets]


# dcgan: batch norm, classical augmentation and DiffAugment (three consumers of the RNG, one of the data
# order); wgan-gp: 5 critic steps per G step, weight-free GP interpolates drawn from the RNG.
CASES = {
    "dcgan": ["deterministic=true", "aug.classical=true", "aug.diffaugment=color,translation,cutout",
              "ema_kimg=0.01", "tick_kimg=0.016", "snapshot_kimg=0.032"],
    "wgan-gp": ["deterministic=true", "aug.diffaugment=translation", "ema_kimg=0.01", "tick_kimg=0.04"],
}


@pytest.mark.parametrize("gan,n_kimg", [("dcgan", 0.048), ("wgan-gp", 0.08)])
def test_resume_is_bit_identical(tiny_overrides, discs, tmp_path, gan, n_kimg, checkpoint_tensors):
    sets = [*tiny_overrides, *CASES[gan]]
    straight = tmp_path / "straight"
    run_training(make_config(data=discs, out=straight, gan=gan, kimg=2 * n_kimg, batch=8, overrides=sets), progress=False)

    halves = tmp_path / "halves"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same count as this process
    first = subprocess.run([sys.executable, "-m", "medgan.cli", "train", *_args(discs, halves, gan, n_kimg, sets)],
                           capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert load_checkpoint(halves / "checkpoint-last.pt")["nimg"] == round(n_kimg * 1000)
    second = subprocess.run([sys.executable, "-m", "medgan.cli", "train", *_args(discs, halves, gan, 2 * n_kimg, sets),
                             "--resume"], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert run_status(halves)["status"] == "finished"

    a = load_checkpoint(straight / "checkpoint-last.pt")
    b = load_checkpoint(halves / "checkpoint-last.pt")
    assert (a["step"], a["nimg"]) == (b["step"], b["nimg"])
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert ta.keys() == tb.keys()
    for name in ("/G/", "/D/", "/G_ema/"):
        assert any(k.startswith(name) for k in ta)
    unequal = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not unequal, (len(unequal), len(ta), [k for k in unequal if not k.startswith("/G")])

    # and the comparison can fail: one more step changes the parameters
    later = tmp_path / "later"
    run_training(make_config(data=discs, out=later, gan=gan, kimg=2 * n_kimg + 0.008, batch=8, overrides=sets), progress=False)
    c = load_checkpoint(later / "checkpoint-last.pt")
    assert not all(torch.equal(v, c["G"][k]) for k, v in a["G"].items())
