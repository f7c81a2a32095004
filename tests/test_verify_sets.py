"""Prepared and generated sets are verified on load: shape, dtype, labels, image range and the content hash,
re-checked only when the files change, so a damaged set fails in one line naming the file before its
features are cached or used; names in ``dataset.json`` never reach outside the set's folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.cli import main
from medgan.data import verify
from medgan.data.prepared import load_prepared, write_prepared
from medgan.errors import PreparedFormatError
from medgan.io import sha256_files
from medgan.metrics.features import FEATURES, Extractor, dataset_features


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A private sidecar cache and an empty per-process memo: every test starts as a new process would."""
    monkeypatch.setenv("MEDGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(verify, "_VERIFIED", {})


@pytest.fixture
def made(make_discs, tmp_path, fresh) -> Path:
    return make_discs(tmp_path / "set", n=16, size=16)


def rewrite(root: Path, name: str, fn) -> None:
    """Change one array and re-record its hashes: the damage the hash cannot see, left to the other checks."""
    array = np.load(root / f"{name}.npy")
    np.save(root / f"{name}.npy", fn(array.copy()))
    meta = json.loads((root / "dataset.json").read_text())
    meta["content_sha256"], meta["files_sha256"] = verify.hash_content(root)
    (root / "dataset.json").write_text(json.dumps(meta))


def doctor(root: Path, **changes) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def flip_last_byte(path: Path) -> None:
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def expect(root: Path, file: str, pattern: str) -> str:
    with pytest.raises(PreparedFormatError, match=pattern) as info:
        load_prepared(root)
    assert str(root / file) in str(info.value) and "\n" not in str(info.value)
    return str(info.value)


def test_a_fresh_set_verifies_and_keeps_the_old_content_key(made):
    ps = load_prepared(made)
    # the combined hash is still the feature-cache key it always was; the per-file ones name a damaged file
    assert ps.content_sha256 == sha256_files([made / "images.npy", made / "masks.npy"])
    assert set(ps.meta["files_sha256"]) == {"images.npy", "masks.npy"}


@pytest.mark.parametrize("name", ["images", "masks"])
def test_a_changed_byte_is_found_and_named(made, name):
    load_prepared(made)  # verified once, recorded in the sidecar and the memo
    flip_last_byte(made / f"{name}.npy")
    expect(made, f"{name}.npy", "content sha256 .* differs")


def test_mask_labels_outside_the_label_set(made):
    rewrite(made, "masks", lambda m: np.where(m == 2, 3, m).astype(np.uint8))  # discs: labels 0..2
    expect(made, "masks.npy", r"mask labels \[3\] .* outside the dataset's labels 0..2")


@pytest.mark.parametrize("value", [np.nan, np.inf, 1.5, -3.0])
def test_images_must_be_finite_and_in_range(made, value):
    def poison(a):
        a[3, 0, 5, 5] = value
        return a

    rewrite(made, "images", poison)
    expect(made, "images.npy", r"non-finite values or values outside \[-1, 1\] in slices 0..")


@pytest.mark.parametrize("name,fn,pattern", [
    ("images", lambda a: a.astype(np.float64), "expected float16/32"),
    ("images", lambda a: a[:, :, :, :8], "has shape"),
    ("masks", lambda a: a.astype(np.int32), "expected uint8"),
    ("patients", lambda a: np.arange(len(a)), "expected a 1-D str array"),
    ("slices", lambda a: a.astype(np.float32), "expected a 1-D integer array"),
])
def test_wrong_dtype_or_shape(made, name, fn, pattern):
    rewrite(made, name, fn)
    expect(made, f"{name}.npy", pattern)


def test_verified_once_per_change_not_per_load(made, monkeypatch):
    load_prepared(made)
    monkeypatch.setattr(verify, "_VERIFIED", {})  # a new process: only the sidecar remembers

    def rehash(root):
        raise AssertionError("re-hashed an unchanged set")

    monkeypatch.setattr(verify, "hash_content", rehash)
    load_prepared(made)  # cheap: stamp unchanged since the recorded check
    stat = (made / "images.npy").stat()
    os.utime(made / "images.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: must re-check
    monkeypatch.setattr(verify, "_VERIFIED", {})
    with pytest.raises(AssertionError, match="re-hashed"):
        load_prepared(made)


@pytest.mark.parametrize("name", ["../outside", "/tmp/outside", "sub/images", "..", "a\\..\\b"])
def test_array_names_cannot_leave_the_folder(made, name):
    outside = made.parent / "outside.npy"
    np.save(outside, np.zeros(16, np.int32))  # a readable array is there: only the name check stops it
    doctor(made, arrays=["images", "masks", "patients", "slices", name])
    expect(made, "dataset.json", "is not a plain file name inside")


@pytest.mark.parametrize("changes,pattern", [
    ({"labels": {"0": "bg", "2": "x"}}, "not the keys '0'..'K-1'"),
    ({"channels": "1"}, "channels = '1' is not a positive integer"),
    ({"splits": {"train": ["p000"]}}, r"are in no split"),
    ({"splits": {"train": "p000"}}, "splits must map"),
    ({"source": "internet"}, "source 'internet' is not one of"),
    ({"arrays": ["images", "masks"]}, r"arrays lacks \['patients', 'slices'\]"),
])
def test_doctored_dataset_json(made, changes, pattern):
    doctor(made, **changes)
    expect(made, "dataset.json", pattern)


def test_cli_reports_a_damaged_set_in_one_line(made, capsys):
    flip_last_byte(made / "masks.npy")
    assert main(["data", "info", str(made)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(made / "masks.npy") in err


def _pixels(arg, device):
    return Extractor("test-pixels-verify", 16, torch.nn.Identity(), lambda x: x.float(),
                     lambda model, x: torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1), "pool4", device)


def test_damage_after_caching_features_is_caught_before_the_cache_is_read(made, monkeypatch):
    monkeypatch.setattr(FEATURES, "_items", {**FEATURES._items, "test-pixels-verify": _pixels})
    first = dataset_features(made, "test-pixels-verify", device="cpu", progress=False)
    assert first.shape == (16, 16) and list((Path(os.environ["MEDGAN_CACHE"]) / "features").glob("*.npy"))
    flip_last_byte(made / "images.npy")  # same dataset.json, so the same cache key as before
    monkeypatch.setattr(verify, "_VERIFIED", {})
    with pytest.raises(PreparedFormatError, match="images.npy"):
        dataset_features(made, "test-pixels-verify", device="cpu", progress=False)


def test_a_failed_write_leaves_no_parent_folders(made, tmp_path):
    out = tmp_path / "new" / "deeper" / "set"
    with pytest.raises(PreparedFormatError):
        write_prepared(out, images=np.full((2, 1, 8, 8), 2.0, np.float32), masks=np.zeros((2, 8, 8), np.uint8),
                       patients=["a", "b"], meta={"name": "x", "modality": "x", "labels": {"0": "b", "1": "f"},
                                                  "source": "phantom", "splits": {"train": ["a", "b"]},
                                                  "normalisation": "none", "inputs_sha256": "0"})
    assert not (tmp_path / "new").exists()
