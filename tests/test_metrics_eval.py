"""Features (pytorch-fid equality, weights lookup, cache), ``evaluate`` / ``medgan fid``, bad inputs, trainer hooks.

Inception runs at ~1-5 images/s on this CPU, so every test that uses it feeds a handful of images;
the rest use ``test-pixels``, a registered stand-in extractor (4x4 average-pooled pixels) that counts
the images it sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_fid.inception as pfi
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance, get_activations

from medgan.cli import main as cli_main
from medgan.config import TrainConfig
from medgan.data.prepared import check_compatible, load_prepared, write_prepared
from medgan.errors import FeatureInputError, IncompatibleSetsError, UserError, WeightsNotFoundError
from medgan.metrics import (
    FEATURES,
    InceptionWeightsNotFoundError,
    dataset_features,
    evaluate,
    extract_features,
    get_extractor,
    patient_halves,
)
from medgan.metrics import hooks as metric_hooks
from medgan.metrics.features import INCEPTION_FILE, Extractor, _fid_inception_skeleton_state, cache_dir
from medgan.segmentation import UNetConfig, train_unet
from medgan.training.hooks import METRIC_HOOKS, MetricContext

SEEN = {"images": 0}  # images that went through the test-pixels extractor


def _pool_forward(model, x):
    SEEN["images"] += len(x)
    return F.adaptive_avg_pool2d(x, 4).flatten(1)


def _test_pixels(arg, device):
    return Extractor("test-pixels", 0, torch.nn.Identity(), lambda x: x.float(), _pool_forward, "pool4-v1", device)


LABELS = {"0": "background", "1": "organ"}


def make_set(root: Path, name: str, *, n_patients: int = 6, per_patient: int = 2, channels: int = 1, size: int = 16,
             labels=None, seed: int = 0, shift: float = 0.0, test_patients: int = 2, val_patients: int = 0, images=None,
             source="phantom") -> Path:
    """A prepared set of blocky random images; the last ``test_patients`` patients are the test split, the
    ``val_patients`` before them the val split."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    if images is None:
        low = rng.normal(shift, 0.5, (n, channels, 4, 4))
        images = np.repeat(np.repeat(low, size // 4, axis=2), size // 4, axis=3) + rng.normal(0, 0.1, (n, channels, size, size))
    images = np.clip(images, -1, 1).astype(np.float16)
    patients = [f"{name}-p{i // per_patient}" for i in range(len(images))]
    unique = sorted(set(patients), key=patients.index)
    te = len(unique) - test_patients
    va = te - val_patients
    meta = dict(name=name, modality="MR", labels=labels or LABELS, source=source, normalisation="test",
                inputs_sha256="0" * 64, splits={"train": unique[:va], "val": unique[va:te], "test": unique[te:]})
    masks = (rng.random((len(images), size, size)) > 0.5).astype(np.uint8)
    return write_prepared(root / name, images=images, masks=masks, patients=patients, meta=meta)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A private feature cache and ``FEATURES["test-pixels"]`` for each test (both restored afterwards)."""
    monkeypatch.setenv("MEDGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(FEATURES, "_items", {**FEATURES._items, "test-pixels": _test_pixels})


# ---------------------------------------------------------------------------------- cache
def test_features_are_cached_by_content_and_split(tmp_path):
    real = make_set(tmp_path, "real", n_patients=6, test_patients=2)
    before = SEEN["images"]
    a = dataset_features(real, "test-pixels", split="train", progress=False)
    assert SEEN["images"] - before == 8 and a.shape == (8, 16)
    files = list(cache_dir().glob("real-test-pixels-*.npy"))
    assert len(files) == 1 and str(files[0]).startswith(str(tmp_path / "cache" / "features"))
    b = dataset_features(real, "test-pixels", split="train", progress=False)
    assert SEEN["images"] - before == 8  # second call: read from disk, the network never ran
    np.testing.assert_array_equal(a, b)
    dataset_features(real, "test-pixels", split="test", progress=False)  # another split: computed
    assert SEEN["images"] - before == 12
    dataset_features(real, "test-pixels", split="train", cache=False, progress=False)
    assert SEEN["images"] - before == 20
    other = make_set(tmp_path, "real2", seed=1)  # other content: another key
    dataset_features(other, "test-pixels", split="train", progress=False)
    assert SEEN["images"] - before == 28 and len(list(cache_dir().glob("*.npy"))) == 3


def test_patient_halves_are_disjoint_and_balanced(tmp_path):
    ps = load_prepared(make_set(tmp_path, "real", n_patients=7, per_patient=3, test_patients=0))
    idx = ps.indices("train")
    a, b = patient_halves(ps, idx, seed=0)
    assert not set(ps.patients[a]) & set(ps.patients[b])
    assert sorted(np.concatenate([a, b])) == sorted(idx) and abs(len(a) - len(b)) == 3


# ---------------------------------------------------------------------------------- evaluate / CLI
def test_evaluate_returns_every_metric_as_json(tmp_path):
    real = make_set(tmp_path, "real", n_patients=12, test_patients=4, val_patients=2)
    gen = make_set(tmp_path, "gen", n_patients=8, test_patients=0, seed=5, shift=0.3, source="generated")
    with pytest.warns(UserWarning, match="rank-deficient"):
        r = evaluate(real, gen, features="test-pixels", kid=True, prdc=True, memorisation=real, bootstrap=20,
                     kid_subsets=10, progress=False)
    json.dumps(r, allow_nan=False)
    assert r["features"] == "test-pixels" and r["feature_dim"] == 16
    # the reference is every patient the GAN learnt from: train (12 images) + val (4)
    assert r["n_real"] == 16 and r["n_gen"] == 16 and r["real_split"] == "train+val"
    assert r["rank_deficient"] is True and "KID" in r["warnings"][0]
    assert r["fid"] > 0 and r["fid_ci95"][0] < r["fid_ci95"][1]
    assert {"kid_mean", "kid_std", "precision", "recall", "density", "coverage"} <= set(r)
    assert r["memorisation"]["n_train"] == 16 and r["memorisation"]["n_test"] == 8
    fl = r["floor"]
    assert fl["n_a"] + fl["n_b"] == 16 and fl["fid"] >= 0 and "kid_mean" in fl
    # the same set against itself: FID 0, perfect PRDC
    same = evaluate(real, real, features="test-pixels", prdc=True, real_split="all", bootstrap=0, floor=False,
                    progress=False)
    assert abs(same["fid"]) < 1e-9 and same["precision"] == same["recall"] == 1.0 and same["fid_ci95"] is None


def test_default_reference_follows_the_gans_training_split(tmp_path):
    real = make_set(tmp_path, "real", n_patients=12, test_patients=4, val_patients=2)
    gen = make_set(tmp_path, "gen", n_patients=8, test_patients=0, seed=5, source="generated")
    meta_path = gen / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["real_dataset"] = {"name": "real", "train_split": "train"}  # what `generate` records of a split=train run
    meta_path.write_text(json.dumps(meta))
    kw = dict(features="test-pixels", memorisation=real, bootstrap=0, floor=False, progress=False)
    with pytest.warns(UserWarning):
        r = evaluate(real, gen, **kw)
    assert (r["real_split"], r["n_real"], r["memorisation"]["n_train"]) == ("train", 12, 12)
    with pytest.warns(UserWarning):
        r = evaluate(real, gen, real_split="test", **kw)
    assert (r["real_split"], r["n_real"]) == ("test", 8)


def test_rank_deficient_only_when_n_does_not_exceed_the_feature_dimension(tmp_path):
    real = make_set(tmp_path, "real", n_patients=10, per_patient=2, test_patients=0)  # 20 images > 16-d
    gen = make_set(tmp_path, "gen", n_patients=9, per_patient=2, test_patients=0, seed=3)  # 18 > 16
    r = evaluate(real, gen, features="test-pixels", bootstrap=0, floor=False, progress=False)
    assert r["rank_deficient"] is False and r["warnings"] == []
    small = make_set(tmp_path, "small", n_patients=8, per_patient=2, test_patients=0, seed=4)  # 16 <= 16
    with pytest.warns(UserWarning, match="prefer KID"):
        r = evaluate(real, small, features="test-pixels", bootstrap=0, floor=False, progress=False)
    assert r["rank_deficient"] is True


def test_memorisation_flags_a_generator_that_outputs_training_images(tmp_path):
    real = make_set(tmp_path, "real", n_patients=40, per_patient=2, test_patients=15)
    ps = load_prepared(real)
    train_images = np.asarray(ps.images[ps.indices("train")], np.float32)
    copies = make_set(tmp_path, "copies", images=train_images[:40], n_patients=20, test_patients=0,
                      source="generated")
    fresh = make_set(tmp_path, "fresh", n_patients=20, test_patients=0, seed=99, source="generated")
    kw = dict(features="test-pixels", memorisation=real, bootstrap=0, floor=False, progress=False)
    copied = evaluate(real, copies, **kw)["memorisation"]
    honest = evaluate(real, fresh, **kw)["memorisation"]
    assert copied["memorised"] and copied["near_copy_fraction"] == 1.0 and copied["median_ratio"] < 1e-3
    assert not honest["memorised"] and honest["near_copy_fraction"] < 0.15 and honest["median_ratio"] > 0.5


def test_cli_fid_writes_json_and_prints_a_summary(tmp_path, capsys):
    real = make_set(tmp_path, "real", n_patients=12, test_patients=4)
    gen = make_set(tmp_path, "gen", n_patients=8, test_patients=0, seed=5, source="generated")
    out = tmp_path / "res" / "fid.json"
    rc = cli_main(["fid", str(real), str(gen), "--features", "test-pixels", "--kid", "--prdc", "--memorisation",
                   str(real), "--bootstrap", "10", "--kid-subsets", "5", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "floor" in printed and "precision" in printed and "near-copies" in printed
    r = json.loads(out.read_text())
    assert r["features"] == "test-pixels" and r["n_gen"] == 16 and len(r["fid_ci95"]) == 2
    assert r["memorisation"]["memorised"] in (True, False)


# ---------------------------------------------------------------------------------- bad input
def _cli_error(args, capsys) -> str:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("medgan fid: error:")
    return err


def test_bad_inputs_are_one_clear_error_each(tmp_path, capsys):
    real = make_set(tmp_path, "real")
    rgb = make_set(tmp_path, "rgb", channels=3)
    big = make_set(tmp_path, "big", size=32)
    three = make_set(tmp_path, "three", labels={"0": "bg", "1": "a", "2": "b"})
    no_test = make_set(tmp_path, "notest", test_patients=0)
    base = ["--features", "test-pixels", "--bootstrap", "0"]
    assert "image channel" in _cli_error(["fid", str(real), str(rgb), *base], capsys)
    assert "32² images" in _cli_error(["fid", str(real), str(big), *base], capsys)
    assert "labels" in _cli_error(["fid", str(real), str(three), *base], capsys)
    assert "holds no images" in _cli_error(["fid", str(no_test), str(real), "--real-split", "test", *base], capsys)
    assert "holds no images" in _cli_error(["fid", str(real), str(real), "--memorisation", str(no_test), *base], capsys)
    assert "does not exist" in _cli_error(["fid", str(real), str(tmp_path / "nope"), *base], capsys)
    # an empty set: arrays with zero rows
    empty = make_set(tmp_path, "empty")
    for name, arr in (("images", np.zeros((0, 1, 16, 16), np.float16)), ("masks", np.zeros((0, 16, 16), np.uint8)),
                      ("patients", np.zeros(0, "<U4")), ("slices", np.zeros(0, np.int32))):
        np.save(empty / f"{name}.npy", arr)
    assert "no slices" in _cli_error(["fid", str(real), str(empty), *base], capsys)
    assert "unknown feature extractor" in _cli_error(["fid", str(real), str(real), "--features", "vgg", "--bootstrap", "0"], capsys)


def test_check_compatible_is_one_line_naming_both_sets(tmp_path):
    real = load_prepared(make_set(tmp_path, "real"))
    others = {
        "rgb": (dict(channels=3), "has 3 image channel(s) but {real} has 1"),
        "big": (dict(size=32), "holds 32² images but {real} holds 16²"),
        "three": (dict(labels={"0": "bg", "1": "a", "2": "b"}), "is a phantom set whose labels"),
    }
    for name, (kw, expected) in others.items():
        other = load_prepared(make_set(tmp_path, name, **kw))
        with pytest.raises(IncompatibleSetsError) as e:
            check_compatible(real, other)
        msg = str(e.value)
        assert "\n" not in msg and str(other.root) in msg and str(real.root) in msg
        assert expected.format(real=real.root) in msg
    check_compatible(real, load_prepared(make_set(tmp_path, "twin", seed=9)))  # same layout: no error


def test_missing_inception_weights_is_one_error_naming_the_file_and_never_downloads(tmp_path, monkeypatch, capsys):
    def no_network(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.delenv("MEDGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InceptionWeightsNotFoundError) as e:
        get_extractor("inception", "cpu")
    assert isinstance(e.value, WeightsNotFoundError) and isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE) in str(e.value)
    monkeypatch.setenv("MEDGAN_INCEPTION_WEIGHTS", str(tmp_path / "w.pth"))
    with pytest.raises(InceptionWeightsNotFoundError, match="w.pth"):
        get_extractor("inception", "cpu")
    real = make_set(tmp_path, "real")
    err = _cli_error(["fid", str(real), str(real)], capsys)  # default features: inception
    assert "w.pth" in err and INCEPTION_FILE in err and "inception-random" in err


# ---------------------------------------------------------------------------------- Inception
def _binary_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 images of 0/255 blocks: exactly representable both as PNG and as float16 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, (n, channels, size // 4, size // 4)) * 255
    return np.repeat(np.repeat(blocks, 4, axis=2), 4, axis=3).astype(np.uint8)


def _pngs(images: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for i, v in enumerate(images):
        img = Image.fromarray(v[0], "L") if v.shape[0] == 1 else Image.fromarray(v.transpose(1, 2, 0), "RGB")
        files.append(folder / f"{i:03d}.png")
        img.save(files[-1])
    return files


def test_inception_features_equal_pytorch_fid_get_activations(tmp_path):
    extractor = get_extractor("inception-random", "cpu")
    assert extractor.random_weights and extractor.dim == 2048
    # grayscale, through a prepared set (float16 on disk): 0/255 levels survive float16 exactly
    gray = _binary_images(3, 1, 32, seed=0)
    ps_dir = make_set(tmp_path, "gray", images=gray / 127.5 - 1, n_patients=2, test_patients=0, size=32)
    ours = dataset_features(ps_dir, extractor, split="all", batch=2, progress=False)  # a full and a partial batch
    theirs = get_activations(_pngs(gray, tmp_path / "gray_png"), extractor.model, batch_size=3, device="cpu", num_workers=0)
    assert np.abs(theirs).max() > 0.1  # features of a useful scale, not vanishing random activations
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    # RGB with arbitrary 8-bit levels, as float32 arrays (x = v / 127.5 - 1)
    rgb = np.random.default_rng(1).integers(0, 256, (2, 3, 24, 24)).astype(np.uint8)
    ours = extract_features(rgb.astype(np.float32) / 127.5 - 1, extractor, progress=False)
    theirs = get_activations(_pngs(rgb, tmp_path / "rgb_png"), extractor.model, batch_size=2, device="cpu", num_workers=0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.slow  # pytorch-fid's scipy sqrtm of a 2048 x 2048 product: ~15 s on 2 cores
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # pytorch-fid's own note on n <= d statistics
def test_images_to_fid_end_to_end_equals_pytorch_fid_on_independently_pooled_features(tmp_path):
    """``evaluate`` from prepared sets == pytorch-fid's ``calculate_frechet_distance`` on statistics pooled here.

    The independent path maps the source images to [0, 1] RGB itself, runs the extractor's InceptionV3
    module on them, and takes ``np.mean`` / ``np.cov``: only the network is shared with medgan's path.
    """
    rng = np.random.default_rng(3)
    levels = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])  # exact in float16: the prepared set stores them unchanged

    def blocks(n, mean_level):
        idx = np.clip(rng.normal(mean_level, 1.2, (n, 1, 4, 4)).round(), 0, 4).astype(int)
        return np.repeat(np.repeat(levels[idx], 4, axis=2), 4, axis=3)

    real_src, gen_src = blocks(5, 1.5), blocks(4, 2.5)
    real = make_set(tmp_path, "real", images=real_src, n_patients=5, per_patient=1, test_patients=0)
    gen = make_set(tmp_path, "gen", images=gen_src, n_patients=4, per_patient=1, test_patients=0, source="generated")
    with pytest.warns(UserWarning, match="rank-deficient"):
        ours = evaluate(real, gen, features="inception-random", bootstrap=0, floor=False, cache=False, progress=False)
    assert ours["n_real"] == 5 and ours["n_gen"] == 4 and ours["features"] == "inception-random"

    model = get_extractor("inception-random", "cpu").model

    def statistics(src):
        x01 = torch.from_numpy((src + 1) / 2).float().repeat(1, 3, 1, 1)  # grayscale -> RGB in [0, 1]
        with torch.no_grad():
            f = model(x01)[0].squeeze(3).squeeze(2).double().numpy()
        return np.mean(f, axis=0), np.cov(f, rowvar=False)

    theirs = calculate_frechet_distance(*statistics(real_src), *statistics(gen_src))
    assert theirs > 0.1  # two different sets, features of a useful scale
    # pytorch-fid's sqrtm of a singular product carries ~1e-6 relative error itself
    assert ours["fid"] == pytest.approx(theirs, rel=1e-4)


def test_inception_weights_file_is_loaded_from_the_lookup_path(tmp_path, monkeypatch):
    weights = tmp_path / INCEPTION_FILE
    torch.save(_fid_inception_skeleton_state(), weights)
    monkeypatch.setenv("MEDGAN_INCEPTION_WEIGHTS", str(weights))
    real_net = get_extractor("inception", "cpu")
    assert real_net.name == "inception" and not real_net.random_weights
    x = _binary_images(1, 1, 16, seed=2).astype(np.float32) / 127.5 - 1
    a = extract_features(x, real_net, progress=False)
    b = extract_features(x, get_extractor("inception-random", "cpu"), progress=False)
    np.testing.assert_array_equal(a, b)  # the file holds the random weights: identical features
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("MEDGAN_INCEPTION_WEIGHTS", str(bad))
    with pytest.raises(UserError, match="bad.pth"):
        get_extractor("inception", "cpu")


def test_inception_refuses_two_channel_images():
    with pytest.raises(FeatureInputError, match="1 \\(grayscale\\) or 3"):
        extract_features(np.zeros((1, 2, 8, 8), np.float32), "inception-random", device="cpu", progress=False)


def test_progress_rule_none_is_auto_true_is_on_false_is_off(capsys):
    images = np.zeros((2, 1, 8, 8), np.float32)
    for progress, shown in ((None, False), (True, True), (False, False)):  # stderr is captured: not a terminal
        extract_features(images, "test-pixels", progress=progress, desc="rule")
        assert ("rule [test-pixels]" in capsys.readouterr().err) is shown, progress


# ---------------------------------------------------------------------------------- trainer hooks
def test_builtin_hooks_are_registered_by_path_to_medgan_metrics_hooks():
    # had medgan.metrics.hooks registered "fid" itself, importing it here would raise "registered twice"
    assert METRIC_HOOKS["fid"] is metric_hooks.fid_hook and METRIC_HOOKS["kid"] is metric_hooks.kid_hook


def _ctx(tmp_path, real: Path, images: np.ndarray) -> MetricContext:
    def sample(n):
        return images[:n], np.zeros((n, *images.shape[2:]), np.int64)

    return MetricContext(run_dir=tmp_path / "run", real_dir=real, kimg=1.0, device=torch.device("cpu"), sample=sample,
                         cfg=TrainConfig(data=str(real)))


def test_metric_hooks_fid_and_kid_with_inception_random(tmp_path, monkeypatch):
    real = make_set(tmp_path, "real", n_patients=4, per_patient=1, test_patients=1, size=16)
    gen = np.clip(np.random.default_rng(7).normal(0.4, 0.5, (3, 1, 16, 16)), -1, 1).astype(np.float32)
    monkeypatch.setenv("MEDGAN_METRIC_FEATURES", "inception-random")
    monkeypatch.setenv("MEDGAN_METRIC_N", "3")
    ctx = _ctx(tmp_path, real, gen)
    fid = METRIC_HOOKS["fid"](ctx)
    assert fid["features"] == "inception-random" and fid["n_real"] == 3 and fid["n_gen"] == 3
    assert fid["value"] > 0 and fid["rank_deficient"] is True
    kid = METRIC_HOOKS["kid"](ctx)  # reuses this tick's features
    assert np.isfinite(kid["value"]) and kid["kid_subset_size"] == 3
    # the default extractor is the real Inception: absent weights are an error, not a silent fallback
    monkeypatch.delenv("MEDGAN_METRIC_FEATURES")
    monkeypatch.setenv("MEDGAN_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(InceptionWeightsNotFoundError):
        METRIC_HOOKS["fid"](_ctx(tmp_path, real, gen))


# ---------------------------------------------------------------------------------- domain FID
def test_domain_fid_with_the_encoder_of_a_unet(tmp_path):
    real = make_set(tmp_path, "real", n_patients=6, per_patient=2, test_patients=0, size=16)
    gen = make_set(tmp_path, "gen", n_patients=6, per_patient=2, test_patients=0, seed=3, shift=0.5, source="generated")
    cfg = UNetConfig(depth=2, width=4, dropout=0.0, batch=8, max_epochs=1, patience=0, device="cpu")
    val_real = make_set(tmp_path, "realval", n_patients=6, per_patient=2, test_patients=0, val_patients=2, size=16)
    run = train_unet([val_real], val_real, cfg, tmp_path / "unet", progress=False)
    r = evaluate(real, gen, features=f"unet:{run}", bootstrap=0, floor=False, progress=False)
    assert r["features"] == f"unet:{run}" and r["feature_dim"] > 0 and r["fid"] > 0
    same = evaluate(real, real, features=f"unet:{run}", real_split="all", bootstrap=0, floor=False, progress=False)
    assert abs(same["fid"]) < 1e-9


# ---------------------------------------------------------------------------------- a prepared phantom set
def test_evaluate_on_the_prepared_acdc_phantom(acdc_prepared):
    ps = load_prepared(acdc_prepared)
    r = evaluate(acdc_prepared, acdc_prepared, features="test-pixels", real_split="train", gen_split="test", kid=True,
                 kid_subsets=5, bootstrap=5, progress=False)
    assert r["n_real"] == ps.meta["counts"]["train"] and r["n_gen"] == ps.meta["counts"]["test"]
    assert r["fid"] > 0 and r["floor"]["patients_a"] + r["floor"]["patients_b"] == len(ps.meta["splits"]["train"])
    json.dumps(r, allow_nan=False)
