"""The trainer: run-folder contract for each loss, D learning, divergence, metric hooks, CLI, bad input.

All runs are tiny (16² discs/rings, 8-filter DCGAN, a handful of steps) so the module stays CPU-fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.cli import main as cli_main
from medgan.config import ConfigError, TrainConfig
from medgan.data.prepared import load_prepared
from medgan.errors import CheckpointError
from medgan.runtime import capture_rng, restore_rng
from medgan.training import (
    METRIC_HOOKS,
    DataOrder,
    load_checkpoint,
    load_run_config,
    make_config,
    read_stats,
    run_status,
    run_training,
)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_overrides):
    """``tiny_cfg(data, out, gan="dcgan", kimg=0.032, batch=8, extra=()) -> TrainConfig`` for a tiny DCGAN run."""

    def cfg(data: Path, out: Path, gan: str = "dcgan", kimg: float = 0.032, batch: int = 8, extra=()) -> TrainConfig:
        return make_config(data=data, out=out, gan=gan, kimg=kimg, batch=batch,
                           overrides=tiny_overrides + ["tick_kimg=0.016", "snapshot_kimg=0.016", *extra])

    return cfg


# ---------------------------------------------------------------------------------------------
# the run-folder contract, once per loss
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def sequence_metric(monkeypatch) -> list[float]:
    """Registers METRIC_HOOKS["test-sequence"] for one test (restored after); returns the values it gave."""
    values: list[float] = []

    def _sequence_metric(ctx) -> dict:
        """Returns 3, 1, 2, ... so the best checkpoint must be the second evaluation's."""
        images, masks = ctx.sample(5)
        assert images.shape == (5, 1, 16, 16) and images.dtype == np.float32 and masks.dtype == np.int64
        assert set(np.unique(masks).tolist()) <= {0, 1, 2}
        again, _ = ctx.sample(5)
        np.testing.assert_array_equal(images, again)  # fixed z: evaluations are comparable
        value = [3.0, 1.0, 2.0][len(values) % 3]
        values.append(value)
        return {"value": value, "n": 5}

    monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "test-sequence": _sequence_metric})
    return values


@pytest.mark.parametrize("gan", ["dcgan", "lsgan", "wgan", "wgan-gp", "hinge"])
def test_each_loss_writes_the_run_folder_contract(tiny_cfg, disc_labels, discs, tmp_path, gan):
    out = tmp_path / "run"
    cfg = tiny_cfg(discs, out, gan=gan, kimg=0.048, extra=["aug.diffaugment=color,translation,cutout"])
    assert run_training(cfg, progress=False) == out
    # training stops at the first whole iteration (batch * n_critic real images) that reaches cfg.kimg
    per_iteration = cfg.batch * cfg.loss.n_critic
    nimg = -(-round(cfg.kimg * 1000) // per_iteration) * per_iteration
    assert {"dcgan": 48, "lsgan": 48, "hinge": 48, "wgan": 80, "wgan-gp": 80}[gan] == nimg
    assert run_status(out) == {"status": "finished", "reason": "", "kimg": nimg / 1000}
    assert load_checkpoint(out / "checkpoint-last.pt")["nimg"] == nimg

    info = json.loads((out / "config.json").read_text())
    assert load_run_config(out) == cfg
    assert info["config_hash"] == cfg.hash() and info["gan"] == gan
    assert info["dataset"]["labels"] == disc_labels and info["dataset"]["image_size"] == 16 and info["dataset"]["n_train"] == 32  # train+val
    assert info["torch"] == torch.__version__ and info["device"] == "cpu"

    stats = read_stats(out)
    assert stats and [s["tick"] for s in stats] == list(range(1, len(stats) + 1))
    assert stats[-1]["kimg"] >= cfg.kimg
    for s in stats:
        for key in ("kimg", "D_real", "D_fake", "D_total", "G_total", "D_adv", "G_adv", "grad_norm_G", "grad_norm_D",
                    "img_per_s", "peak_mem_mb", "time_s"):
            assert isinstance(s[key], float) and np.isfinite(s[key]), (key, s)
        assert s["peak_mem_mb"] > 0 and s["img_per_s"] > 0
    if gan == "wgan-gp":
        assert "D_gp" in stats[0]

    from PIL import Image

    samples = sorted(out.glob("samples-*.png"))
    assert samples[0].name == "samples-0000.000.png" and len(samples) >= 2
    grid = np.asarray(Image.open(samples[-1]))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[1] > 2 * grid.shape[0]  # 4 pairs of image|mask in a row

    state = torch.load(out / "checkpoint-last.pt", weights_only=True)
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "rng", "data", "step", "nimg"):
        assert key in state
    assert state["nimg"] / 1000 == pytest.approx(stats[-1]["kimg"])


def test_metric_hook_records_and_keeps_the_best_checkpoint(tiny_cfg, discs, tmp_path, sequence_metric):
    out = tmp_path / "run"
    cfg = tiny_cfg(discs, out, kimg=0.048, extra=["metrics=test-sequence", "metric_kimg=0.016"])
    run_training(cfg, progress=False)
    lines = [json.loads(x) for x in (out / "metric-test-sequence.jsonl").read_text().splitlines()]
    assert [x["value"] for x in lines] == [3.0, 1.0, 2.0]  # at 16, 32 and 48 images: every metric_kimg, the end too
    assert [x["kimg"] for x in lines] == [0.016, 0.032, 0.048]
    best = load_checkpoint(out / "checkpoint-best-test-sequence.pt")
    assert best["nimg"] == 32 and best["best"] == {"test-sequence": 1.0}
    assert sequence_metric == [3.0, 1.0, 2.0]
    assert load_checkpoint(out / "checkpoint-last.pt")["nimg"] == 48


def test_d_loss_goes_down_against_a_frozen_generator(tiny_cfg, discs, tmp_path):
    # G's lr = 0 makes D's task stationary: real discs vs a fixed G's noise. D's BCE must fall.
    out = tmp_path / "run"
    cfg = tiny_cfg(discs, out, kimg=0.16, extra=["lr=0", "lr_d=2e-3", "tick_kimg=0.04", "saturate_loss=0", "saturate_gap=0"])
    run_training(cfg, progress=False)
    d = [s["D_total"] for s in read_stats(out)]
    assert len(d) == 4
    assert d[-1] < 0.5 * d[0], d


def test_d_saturation_ends_the_run_as_diverged(tiny_cfg, discs, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(discs, out, kimg=2.0, extra=["lr=0", "lr_d=2e-3", "tick_kimg=0.04", "saturate_loss=0.05"])
    assert run_training(cfg, progress=False) == out  # returns normally
    status = run_status(out)
    assert status["status"] == "diverged" and "D saturated" in status["reason"]
    assert status["kimg"] < 2.0
    assert read_stats(out)[-1]["D_adv_max"] < 0.05


def test_nan_injection_is_diverged_not_an_exception(tiny_cfg, discs, tmp_path):
    out = tmp_path / "run"
    run_training(tiny_cfg(discs, out, extra=["lr=1e30"]), progress=False)
    status = run_status(out)
    assert status["status"] == "diverged" and "non-finite" in status["reason"]
    assert not (out / "checkpoint-last.pt").exists()  # a NaN state is never saved as the resume point
    assert read_stats(out)[-1]["D_total"] is None  # NaN is recorded as null (strict JSON)


def test_other_errors_mark_failed_and_reraise(tiny_cfg, monkeypatch, discs, tmp_path):
    def _broken(ctx):
        raise RuntimeError("metric exploded")

    monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "test-broken": _broken})

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="metric exploded"):
        run_training(tiny_cfg(discs, out, extra=["metrics=test-broken"]), progress=False)
    status = run_status(out)
    assert status["status"] == "failed" and "metric exploded" in status["reason"]


def test_conditional_generator_gets_the_real_batch_masks(tiny_cfg, conditional_model, discs, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(discs, out, extra=[f"model.name={conditional_model}"])
    run_training(cfg, progress=False)  # the stand-in G asserts a valid one-hot mask on every call
    assert run_status(out)["status"] == "finished"


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
def test_data_order_covers_each_epoch_and_resumes_exactly():
    a = DataOrder(10, seed=3)
    first = torch.cat([a.next(4) for _ in range(5)])  # 20 rows = two epochs, batches cross the boundary
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    state = a.state_dict()
    cont = [a.next(3) for _ in range(4)]
    b = DataOrder(10, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(x, b.next(3)) for x in cont)
    assert DataOrder(3, seed=0).next(7).numel() == 7  # a batch larger than the set


def test_rng_capture_restores_every_stream():
    import random

    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_gan_spec_and_sets_are_applied_in_order(discs, tmp_path):
    cfg = make_config(data=discs, out=tmp_path / "r", gan="wgan", kimg=1, overrides=["lr=1e-4", "g_filters=32"])
    assert (cfg.gan, cfg.model.name, cfg.loss.name, cfg.loss.n_critic, cfg.loss.clip) == ("wgan", "dcgan", "wgan", 5, 0.01)
    assert cfg.lr == 1e-4 and cfg.model.g_filters == 32  # --set wins over the GAN's own overrides


# ---------------------------------------------------------------------------------------------
# CLI and bad input: one clear error each, exit != 0, nothing written or overwritten
# ---------------------------------------------------------------------------------------------
def _cli(*args: str) -> int:
    return cli_main(["train", *map(str, args), "--no-progress"])


@pytest.fixture(scope="session")
def train_args(tiny_overrides):
    """``train_args(discs, out, *extra)``: CLI arguments for a tiny DCGAN run."""

    def args(discs, out, *extra):
        return ["--data", discs, "--gan", "dcgan", "--out", out, "--kimg", "0.016", "--batch", "8", "--set",
                *tiny_overrides, *extra]

    return args


@pytest.fixture(scope="module")
def finished_run(train_args, discs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "done"
    assert _cli(*train_args(discs, out)) == 0
    return out


def test_cli_trains_and_resume_extends(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    assert _cli("--out", run, "--resume", "--kimg", "0.032") == 0  # config taken from the run
    assert run_status(run)["status"] == "finished" and load_checkpoint(run / "checkpoint-last.pt")["nimg"] == 32
    assert "finished" in capsys.readouterr().out


def test_bad_knob_value(train_args, discs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(*train_args(discs, out, "model.g_norm=groupnorm")) == 2
    assert "model.g_norm='groupnorm' is not one of" in capsys.readouterr().err
    assert not out.exists()


def test_wgan_clip_with_gradient_penalty(tiny_overrides, discs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli("--data", discs, "--gan", "wgan-gp", "--out", out, "--kimg", "0.016", "--set", "loss.clip=0.01", *tiny_overrides) == 2
    assert "clip" in capsys.readouterr().err
    assert not out.exists()


def test_resolution_the_data_does_not_have(train_args, discs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(*train_args(discs, out, "resolution=64")) == 2
    err = capsys.readouterr().err
    assert "resolution=64" in err and "16x16" in err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["empty", "corrupt", "truncated", "missing"])
def test_broken_checkpoint_on_resume(folder_digest, finished_run, tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    ckpt = run / "checkpoint-last.pt"
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "corrupt":
        ckpt.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:2000])
    else:
        ckpt.unlink()
    before = folder_digest(run)
    assert _cli("--out", run, "--resume", "--kimg", "0.032") == 2
    err = capsys.readouterr().err
    assert "checkpoint-last.pt" in err and err.count("\n") == 1
    assert folder_digest(run) == before
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)


def test_resume_with_a_different_config_lists_the_keys(train_args, folder_digest, finished_run, discs, capsys):
    before = folder_digest(finished_run)
    assert _cli(*train_args(discs, finished_run, "lr=0.001", "model.d_activation=elu"), "--resume") == 2
    err = capsys.readouterr().err
    assert "lr: 0.0002 -> 0.001" in err and "model.d_activation: 'leakyrelu' -> 'elu'" in err
    assert folder_digest(finished_run) == before


def test_existing_run_folder_without_resume(train_args, folder_digest, finished_run, discs, capsys):
    before = folder_digest(finished_run)
    assert _cli(*train_args(discs, finished_run)) == 2
    assert "already exists" in capsys.readouterr().err
    assert folder_digest(finished_run) == before


def test_unknown_metric_fails_before_training(train_args, discs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(*train_args(discs, out, "metrics=nosuchmetric")) == 2
    assert "nosuchmetric" in capsys.readouterr().err and not out.exists()


def test_missing_data_and_unknown_gan(discs, tmp_path, capsys):
    assert _cli("--out", tmp_path / "a", "--kimg", "1") == 2
    assert "--data" in capsys.readouterr().err
    assert _cli("--data", discs, "--gan", "nosuchgan", "--out", tmp_path / "b") == 2
    assert "nosuchgan" in capsys.readouterr().err and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError):
        run_training(TrainConfig(out=str(tmp_path / "c")))


@pytest.mark.parametrize("gan", ["dcgan", "lsgan", "wgan", "wgan-gp", "hinge"])
def test_cli_trains_each_gan_on_the_acdc_phantom(tiny_overrides, acdc_prepared, tmp_path, gan):
    out = tmp_path / gan
    assert _cli("--data", acdc_prepared, "--gan", gan, "--out", out, "--kimg", "0.02", "--batch", "4",
                "--set", *tiny_overrides, "tick_kimg=0.01") == 0
    info = json.loads((out / "config.json").read_text())
    assert info["dataset"]["source"] == "phantom" and info["dataset"]["image_size"] == 64
    stats = read_stats(out)  # wgan/wgan-gp: 5 critic batches of 4 = 0.02 kimg per iteration, so one tick
    assert run_status(out)["status"] == "finished" and len(stats) == (1 if gan.startswith("wgan") else 2)
    assert stats[-1]["kimg"] == 0.02 and all(np.isfinite(s["D_total"]) for s in stats)
    assert {"config.json", "status.json", "stats.jsonl", "checkpoint-last.pt"} <= {p.name for p in out.iterdir()}
    assert len(list(out.glob("samples-*.png"))) == 2
    # the paper's data: the GAN learns from every training patient, the U-Net's val carving included
    counts = load_prepared(acdc_prepared).meta["counts"]
    assert counts["val"] > 0 and counts["test"] > 0
    assert info["config"]["split"] == "train+val" and info["dataset"]["n_train"] == counts["train"] + counts["val"]
    # no G_ema in the DCGAN family (the paper's setting): after training it is G, batch-norm statistics included
    state = load_checkpoint(out / "checkpoint-last.pt")
    assert info["config"]["ema_kimg"] == 0 and state["G"].keys() == state["G_ema"].keys()
    for k, v in state["G"].items():
        assert torch.equal(v, state["G_ema"][k]), k


def test_split_knob_keeps_single_splits_and_refuses_unknown_names(tiny_cfg, discs, tmp_path):
    assert TrainConfig().split == "train+val" and TrainConfig().amp == "off"  # the paper's data and precision
    assert TrainConfig(amp="auto").amp == "auto"  # still accepted: bf16 on CUDA
    out = run_training(tiny_cfg(discs, tmp_path / "train-only", kimg=0.016, extra=["split=train"]), progress=False)
    assert json.loads((out / "config.json").read_text())["dataset"]["n_train"] == 28
    with pytest.raises(ConfigError, match="train\\+val"):
        run_training(tiny_cfg(discs, tmp_path / "bad", extra=["split=training"]), progress=False)
    assert not (tmp_path / "bad").exists()


def test_metric_hooks_and_sample_grids_do_not_shift_training(tiny_cfg, assert_same_state, monkeypatch, discs, tmp_path):
    import random

    def _eater(ctx):
        ctx.sample(3)
        random.random(), np.random.rand(100), torch.rand(100)  # a hook may draw from every global RNG
        return {"value": 0.0}

    monkeypatch.setattr(METRIC_HOOKS, "_items", {**METRIC_HOOKS._items, "test-rng-eater": _eater})

    base = ["deterministic=true", "aug.diffaugment=color,translation", "aug.classical=true"]
    plain = tmp_path / "plain"
    run_training(tiny_cfg(discs, plain, kimg=0.048, extra=[*base, "grid=0"]), progress=False)
    busy = tmp_path / "busy"
    run_training(tiny_cfg(discs, busy, kimg=0.048, extra=[*base, "metrics=test-rng-eater", "metric_kimg=0.016"]), progress=False)
    a, b = load_checkpoint(plain / "checkpoint-last.pt"), load_checkpoint(busy / "checkpoint-last.pt")
    assert_same_state(a, b)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_resume_from_another_device_reseeds_z_with_a_warning(finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    state = load_checkpoint(run / "checkpoint-last.pt")
    state["latent_device"] = "cuda"  # as if written on a GPU: its generator state cannot drive a CPU one
    torch.save(state, run / "checkpoint-last.pt")
    with pytest.warns(UserWarning, match="latent-generator state"):
        run_training(make_config(out=run, kimg=0.032, resume=True), resume=True, progress=False)
    assert run_status(run)["status"] == "finished"
