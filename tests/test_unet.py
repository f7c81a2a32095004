"""U-Net: shapes, encoder, loss, the train/eval/segment protocol on a tiny cardiac-like set, bad input, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import medgan.segmentation
import medgan.unet
from medgan.cli import main
from medgan.data.prepared import load_prepared, write_prepared
from medgan.errors import ConfigError, IncompatibleSetsError, InputNotFoundError, OutputExistsError, UserError
from medgan.segmentation import (
    UNet,
    UNetConfig,
    evaluate_unet,
    load_encoder,
    load_unet,
    segment,
    soft_dice_loss,
    train_unet,
)
from medgan.segmentation.train import _training_kind

LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
# small enough for a CPU test, big enough to learn the toy anatomy
FAST = UNetConfig(depth=2, width=8, dropout=0.0, lr=3e-3, batch=8, max_epochs=20, patience=8, device="cpu")
TINY = UNetConfig(depth=2, width=4, dropout=0.0, batch=8, max_epochs=2, patience=0, device="cpu")


def cardiac_like(n_patients=10, slices=6, size=32, seed=0, channels=1):
    """Short-axis-like slices: LV disc (3) in a MYO ring (2), RV crescent (1) absent at the apex, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images, masks, patients, sl = [], [], [], []
    for p in range(n_patients):
        cy, cx = size / 2 + rng.uniform(-3, 3, 2)
        r_lv0 = rng.uniform(0.13, 0.2) * size
        thick = rng.uniform(0.06, 0.1) * size
        for s in range(slices):
            shrink = 1 - 0.5 * s / slices
            r_lv, r_myo = r_lv0 * shrink, (r_lv0 + thick) * shrink
            d = np.hypot(yy - cy, xx - cx)
            mask = np.zeros((size, size), np.uint8)
            mask[d < r_myo] = 2
            mask[d < r_lv] = 3
            if s < slices - 2:
                d_rv = np.hypot((yy - cy) / 1.3, xx - (cx - r_myo - 0.15 * size))
                mask[(d_rv < 0.22 * size * shrink) & (d >= r_myo)] = 1
            level = np.array([-0.6, 0.45, -0.2, 0.6], np.float32)
            img = np.clip(level[mask] + rng.normal(0, 0.15, (size, size)).astype(np.float32), -1, 1)
            images.append(np.repeat(img[None], channels, 0))
            masks.append(mask)
            patients.append(f"P{p:03d}")
            sl.append(s)
    return np.stack(images), np.stack(masks), patients, sl


def write_cardiac(out, *, n_patients=10, size=32, seed=0, channels=1, source="phantom", labels=None, all_train=False):
    images, masks, patients, sl = cardiac_like(n_patients, 6, size, seed, channels)
    ids = sorted(set(patients))
    if all_train:  # how generated sets are stored
        splits = {"train": ids, "val": [], "test": []}
    else:
        k = max(1, n_patients // 5)
        splits = {"train": ids[: -2 * k], "val": ids[-2 * k : -k], "test": ids[-k:]}
    meta = {"name": "acdc-toy", "modality": "MR", "channels": channels, "image_size": size,
            "labels": labels or LABELS, "source": source, "splits": splits, "counts": {},
            "normalisation": "toy", "inputs_sha256": "0" * 64}
    if source == "generated":
        meta["run_id"] = "toy-run"
    return write_prepared(out, images=images, masks=masks, patients=patients, slices=sl, meta=meta)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return write_cardiac(tmp_path_factory.mktemp("sets") / "real")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return write_cardiac(tmp_path_factory.mktemp("sets") / "gen", seed=7, n_patients=6, source="generated", all_train=True)


@pytest.fixture(scope="module")
def trained(real, tmp_path_factory):
    return train_unet([real], real, FAST, tmp_path_factory.mktemp("runs") / "unet", progress=False)


# ------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("channels,labels,depth,width,size", [(1, 4, 1, 4, 8), (3, 2, 2, 8, 16), (1, 3, 3, 4, 32), (3, 4, 4, 2, 32)])
def test_unet_output_shape(channels, labels, depth, width, size):
    model = UNet(channels, labels, depth, width, dropout=0.1)
    x = torch.randn(2, channels, size, size)
    assert model(x).shape == (2, labels, size, size)
    assert model.feature_dim == width * 2**depth
    assert model.features(x).shape == (2, width * 2**depth)
    # skips add every level's width
    assert model.features(x, skips=True).shape == (2, width * (2 ** (depth + 1) - 1))


def test_unet_rejects_bad_input_shape():
    model = UNet(1, 4, depth=3, width=4)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 1, 20, 20))
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        model(torch.randn(1, 3, 16, 16))


def test_soft_dice_loss_closed_form():
    mask = torch.tensor([[[0, 1], [2, 2]]])
    perfect = torch.nn.functional.one_hot(mask, 3).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(perfect, mask, [1, 2], eps=0).item() == pytest.approx(0.0, abs=1e-6)
    # uniform logits: p = 1/3 everywhere; class 1: inter 1/3, denom 4/3 + 1 -> 2/7; class 2: 2/3 / (4/3 + 2) = 2/5
    uniform = torch.zeros(1, 3, 2, 2)
    expected = 1 - (2 * (1 / 3) / (4 / 3 + 1) + 2 * (2 / 3) / (4 / 3 + 2)) / 2
    assert soft_dice_loss(uniform, mask, [1, 2], eps=0).item() == pytest.approx(expected)


def test_config_validation_and_overrides():
    with pytest.raises(ConfigError):
        UNetConfig(depth=0)
    with pytest.raises(ConfigError):
        UNetConfig(amp="fp8")
    with pytest.raises(ConfigError):
        UNetConfig(dropout=1.0)
    cfg = UNetConfig().with_overrides(["depth=2", "augment=true", "lr=1e-4"])
    assert (cfg.depth, cfg.augment, cfg.lr) == (2, True, 1e-4)
    with pytest.raises(ConfigError, match="unknown"):
        UNetConfig().with_overrides(["dept=2"])
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


def test_training_set_names():
    assert _training_kind(["phantom"], False) == "real"
    assert _training_kind(["raw"], True) == "real+aug"
    assert _training_kind(["generated"], False) == "generated"
    assert _training_kind(["raw", "generated"], False) == "real+generated"


# ------------------------------------------------------------------------------------ training
def test_unet_learns_the_toy_set(trained, real):
    """The acceptance check: Dice > 0.8 on the held-out test patients."""
    status = json.loads((trained / "status.json").read_text())
    assert status["status"] == "finished"
    result = evaluate_unet(trained, real, "test")
    assert result["dice"]["mean"] > 0.8, result["dice"]
    for c in ("RV", "MYO", "LV"):
        assert result["dice"][c] > 0.7, result["dice"]
    assert result["n_images"] == len(load_prepared(real).indices("test"))
    assert set(result["per_patient"]) == set(load_prepared(real).meta["splits"]["test"])


@pytest.mark.slow  # ~8 s of CPU, but > 20 s wall when the 2 cores are shared
def test_unet_learns_the_acdc_phantom(acdc_prepared, tmp_path):
    """Same check on the ACDC phantom through the real prepare path (64², 3 train patients, 1 val, 2 test)."""
    cfg = UNetConfig(depth=3, width=16, dropout=0.0, lr=3e-3, batch=8, max_epochs=8, patience=0, device="cpu")
    run = train_unet([acdc_prepared], acdc_prepared, cfg, tmp_path / "unet", progress=False)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    result = evaluate_unet(run, acdc_prepared, "test")
    assert result["dice"]["mean"] > 0.8, result["dice"]
    assert result["n_patients"] == len(load_prepared(acdc_prepared).meta["splits"]["test"])


def test_run_folder_contract(trained):
    ckpt = torch.load(trained / "unet.pt", weights_only=True)
    assert ckpt["channels"] == 1 and ckpt["labels"] == LABELS and ckpt["image_size"] == 32
    assert UNetConfig.from_dict(ckpt["config"]) == FAST
    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    assert len(history) == ckpt["epochs"]
    # the kept weights are the best epoch's (early stopping on val mean Dice)
    best = max(history, key=lambda r: r["val_dice"]["mean"])
    assert ckpt["best_epoch"] == best["epoch"]
    assert ckpt["best_val_dice"] == pytest.approx(best["val_dice"]["mean"])
    assert json.loads((trained / "config.json").read_text())["data"]["training_set"] == "real"


def test_loaded_model_reproduces_validation_dice(trained, real):
    model = load_unet(trained)
    assert not model.training
    val = evaluate_unet(model, real, "val")
    assert val["dice"]["mean"] == pytest.approx(model.meta["best_val_dice"], abs=1e-12)
    assert evaluate_unet(trained, real, "val")["dice"] == val["dice"]


def test_training_is_deterministic_under_a_seed(real, tmp_path):
    a = train_unet([real], real, TINY, tmp_path / "a", progress=False)
    b = train_unet([real], real, TINY, tmp_path / "b", progress=False)
    ha = [json.loads(x) for x in (a / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (b / "history.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["val_dice"]) for r in ha] == [(r["loss"], r["val_dice"]) for r in hb]
    with pytest.raises(OutputExistsError, match="already exists and is not empty"):
        train_unet([real], real, TINY, a, progress=False)
    with pytest.raises(FileExistsError):  # what a plain Python caller catches
        segment([real], real, seeds=1, cfg=TINY, out_dir=a, progress=False)


def test_augmented_training_runs_and_is_named(real, tmp_path):
    run = train_unet([real], real, UNetConfig(**{**TINY.to_dict(), "augment": True, "max_epochs": 1}), tmp_path / "aug",
                     progress=False)
    assert json.loads((run / "config.json").read_text())["data"]["training_set"] == "real+aug"


# ------------------------------------------------------------------------------------ encoder
def test_load_encoder_features(trained, real):
    encoder, info = load_encoder(trained)
    assert info["name"] == f"unet:{trained}"
    assert info["dim"] == FAST.width * 2**FAST.depth
    x = torch.from_numpy(np.asarray(load_prepared(real).images[:6], np.float32))
    feats = encoder(x)
    assert feats.shape == (6, info["dim"]) and feats.dtype == torch.float32
    assert not feats.requires_grad
    encoder.train()  # must stay in eval mode: features may not depend on the batch
    assert torch.allclose(encoder(x[:2]), feats[:2], atol=1e-5)
    enc_skips, info_skips = load_encoder(trained, skips=True)
    assert enc_skips(x).shape == (6, FAST.width * (2 ** (FAST.depth + 1) - 1)) and info_skips["name"].startswith("unet+skips:")


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kind,match", [
    ("channels", r"has 3 image channel\(s\) but .*real has 1"),
    ("size", r"holds 64² images but .*real holds 32²"),
    ("labels", "is a generated set whose labels .* are not the labels"),
])
def test_mismatched_sets_are_refused(real, tmp_path, kind, match):
    if kind == "channels":
        other = write_cardiac(tmp_path / "rgb", channels=3)
    elif kind == "size":
        other = write_cardiac(tmp_path / "big", size=64)
    else:
        other = write_cardiac(tmp_path / "gen", source="generated", all_train=True,
                              labels={"0": "background", "1": "RV", "2": "MYO", "3": "LV-blood"})
    with pytest.raises(IncompatibleSetsError, match=match):
        segment([real, other], real, seeds=1, cfg=TINY, progress=False)
    with pytest.raises(IncompatibleSetsError, match=match):
        train_unet([other], real, TINY, tmp_path / "run", progress=False)


def test_generated_sets_cannot_be_test_or_validation_sets(real, generated, tmp_path):
    with pytest.raises(UserError, match="generated"):
        segment([real], generated, seeds=1, cfg=TINY, progress=False)
    with pytest.raises(UserError, match="generated"):
        train_unet([real], generated, TINY, tmp_path / "run", progress=False)


def test_training_on_held_out_patients_is_refused(real, tmp_path):
    # same dataset, but every patient (the test ones included) in its train split
    leaky = write_cardiac(tmp_path / "leaky", all_train=True)
    with pytest.raises(UserError, match="in the train split of .* and in the test split"):
        segment([leaky], real, seeds=1, cfg=TINY, progress=False)
    with pytest.raises(UserError, match="and in the val split"):
        train_unet([leaky], real, TINY, tmp_path / "run", progress=False)


def test_empty_training_split_is_refused(real, tmp_path):
    only_val = write_cardiac(tmp_path / "noval", all_train=False)
    ps = load_prepared(only_val)
    meta = dict(ps.meta)
    meta["splits"] = {"train": [], "val": meta["splits"]["train"] + meta["splits"]["val"], "test": meta["splits"]["test"]}
    empty = write_prepared(tmp_path / "empty", images=np.asarray(ps.images), masks=np.asarray(ps.masks),
                           patients=list(ps.patients), slices=np.asarray(ps.slices), meta=meta)
    with pytest.raises(UserError, match="no slices in split 'train'"):
        train_unet([empty], real, TINY, tmp_path / "run", progress=False)


# ------------------------------------------------------------------------------------ protocol + CLI
def test_segment_seeds_and_confidence_interval(real, generated, tmp_path):
    result = segment([real, generated], real, seeds=2, cfg=TINY, out_dir=tmp_path / "seg", progress=False)
    assert result["training_set"] == "real+generated"
    assert result["n_train_slices"] == len(load_prepared(real).indices("train")) + len(load_prepared(generated))
    assert [r["seed"] for r in result["seeds"]] == [0, 1]
    values = [r["test"]["dice"]["mean"] for r in result["seeds"]]
    assert result["dice"]["mean"]["values"] == values
    assert result["dice"]["mean"]["mean"] == pytest.approx(np.mean(values))
    # t_{0.975, 1} = 12.7062...: half-width = t * sd / sqrt(2)
    assert result["dice"]["mean"]["ci95"] == pytest.approx(12.706204736174707 * np.std(values, ddof=1) / math.sqrt(2))
    assert (tmp_path / "seg" / "seed-1" / "unet.pt").is_file()
    saved = json.loads((tmp_path / "seg" / "segment.json").read_text())
    assert saved["classes"] == ["RV", "MYO", "LV"] and saved["dice"]["mean"]["values"] == values
    # the segment folder works as an encoder run (first seed)
    assert load_encoder(tmp_path / "seg")[1]["checkpoint"].endswith("seed-0/unet.pt")


def test_cli_segment_smoke(real, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = main(["segment", "--train", str(real), "--test", str(real), "--seeds", "1", "--epochs", "1",
               "--set", "depth=2", "--set", "width=4", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "training set: real" in printed and "mean±CI95" in printed
    result = json.loads(out.read_text())
    assert result["training_set"] == "real" and result["config"]["max_epochs"] == 1 and result["config"]["depth"] == 2
    assert set(result["dice"]) == {"RV", "MYO", "LV", "mean"}


def _cli_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("medgan segment: error:")
    return err


def test_cli_segment_user_errors_exit_2(real, tmp_path, capsys):
    rgb = write_cardiac(tmp_path / "rgb", channels=3)
    err = _cli_error(["segment", "--train", str(rgb), "--test", str(real), "--seeds", "1"], capsys)
    assert f"{rgb} (phantom set) has 3 image channel(s) but {real} has 1" in err
    err = _cli_error(["segment", "--train", str(real), "--test", str(real), "--set", "depth=0"], capsys)
    assert "unet depth and width must be >= 1, got depth=0" in err
    err = _cli_error(["segment", "--train", str(tmp_path / "missing"), "--test", str(real)], capsys)
    assert f"{tmp_path / 'missing'} is not a prepared dataset folder (it does not exist)" in err
    err = _cli_error(["segment", "--train", str(real), "--test", str(real), "--seeds", "0"], capsys)
    assert "seeds must be >= 1, got 0" in err


def test_missing_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputNotFoundError, match=f"no U-Net checkpoint unet.pt in {tmp_path}"):
        load_encoder(tmp_path)


def test_medgan_unet_is_a_facade_over_medgan_segmentation():
    """Code that imported from ``medgan.unet`` gets the very objects of ``medgan.segmentation``."""
    for name in medgan.unet.__all__:
        assert getattr(medgan.unet, name) is getattr(medgan.segmentation, name), name
    assert {"UNetConfig", "train_unet", "segment", "load_encoder", "evaluate_unet", "load_unet"} <= set(medgan.unet.__all__)


def test_unet_trains_on_train_early_stops_on_val_and_never_sees_test_patients(acdc_prepared, tmp_path, monkeypatch):
    """The Table-2 carving on the ACDC phantom: U-Net weights come from ``train`` patients only, early stopping
    watches ``val`` (both carved from the paper's training patients, which the GANs see whole), Dice is on ``test``."""
    import medgan.segmentation.train as unet_train

    seen: list[tuple[str, set]] = []
    real = unet_train.split_arrays

    def spy(ps, split):
        images, masks, patients = real(ps, split)
        seen.append((split, set(patients.tolist())))
        return images, masks, patients

    monkeypatch.setattr(unet_train, "split_arrays", spy)
    segment([acdc_prepared], acdc_prepared, seeds=1, cfg=TINY, out_dir=tmp_path / "seg", progress=False)
    splits = load_prepared(acdc_prepared).meta["splits"]
    assert [s for s, _ in seen] == ["train", "val"]
    assert seen[0][1] == set(splits["train"]) and seen[1][1] == set(splits["val"])
    assert not (seen[0][1] | seen[1][1]) & set(splits["test"])
