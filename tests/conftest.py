"""The one home of the shared test builders and fixtures (test modules never import each other or this file).

Data:
  ``acdc_raw`` / ``sliver_raw`` / ``idrid_raw`` are phantom folders written by
  ``medgan.data.phantoms.write_phantom``; ``*_prepared`` are those converted with ``prepare`` at a
  small size. Treat them as read-only: tests that corrupt inputs copy them first (``copy_raw``).
  ``make_discs`` / ``discs`` / ``small_discs``: synthetic disc-in-ring prepared sets (trainer tests);
  ``make_disk_set`` / ``disk_set``: synthetic disk-with-core prepared sets (StyleGAN2 / SPADE tests).
Trainer helpers (fixtures returning callables):
  ``tiny_overrides`` (the 8-filter DCGAN overrides), ``disc_labels``, ``train_disk_run``, ``finite_stats``,
  ``assert_resume_exact``, ``assert_same_state`` (checkpoint equality), ``folder_digest`` (sha256 of every file).
Notebook reruns: ``notebook_roots`` (a data and a runs folder per test module, so a module's reruns reuse each
  other's phantoms and runs); the helpers they share are in ``tests/notebook_reruns.py``.
Registry doubles (registered for the requesting scope only, then restored):
  ``conditional_model``: ``MODELS["test-cond"]`` = a SPADE-shaped stand-in G + DCGAN D.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# the one thread count for the whole suite: `make test` runs two xdist workers on two cores, and the
# bit-identical comparisons only need it constant
torch.set_num_threads(1)

# Small but with every split populated: (patients, prepared size, phantom size options)
RAW_SIZES = {
    "acdc": (6, 64, {}),
    "sliver07": (4, 64, {"matrix": 96}),
    "idrid": (6, 64, {"width": 268, "height": 178}),
}


def _write_raw(dataset: str, out: Path) -> Path:
    from medgan.data.phantoms import write_phantom

    patients, _, kw = RAW_SIZES[dataset]
    return write_phantom(dataset, out, patients=patients, seed=0, progress=False, **kw)


def _prepare(dataset: str, raw: Path, out: Path) -> Path:
    from medgan.data.prepare import prepare

    return prepare(dataset, raw, out, size=RAW_SIZES[dataset][1], seed=0, progress=False)


@pytest.fixture(scope="session")
def acdc_raw(tmp_path_factory) -> Path:
    return _write_raw("acdc", tmp_path_factory.mktemp("raw") / "acdc")


@pytest.fixture(scope="session")
def sliver_raw(tmp_path_factory) -> Path:
    return _write_raw("sliver07", tmp_path_factory.mktemp("raw") / "sliver07")


@pytest.fixture(scope="session")
def idrid_raw(tmp_path_factory) -> Path:
    return _write_raw("idrid", tmp_path_factory.mktemp("raw") / "idrid")


@pytest.fixture(scope="session")
def acdc_prepared(acdc_raw, tmp_path_factory) -> Path:
    return _prepare("acdc", acdc_raw, tmp_path_factory.mktemp("prepared") / "acdc")


@pytest.fixture(scope="session")
def sliver_prepared(sliver_raw, tmp_path_factory) -> Path:
    return _prepare("sliver07", sliver_raw, tmp_path_factory.mktemp("prepared") / "sliver07")


@pytest.fixture(scope="session")
def idrid_prepared(idrid_raw, tmp_path_factory) -> Path:
    return _prepare("idrid", idrid_raw, tmp_path_factory.mktemp("prepared") / "idrid")


@pytest.fixture
def copy_raw(tmp_path):
    """``copy_raw(src) -> Path``: a private copy of a raw folder that a test may corrupt."""

    def copy(src: Path) -> Path:
        dst = tmp_path / ("raw-" + src.name)
        # the 4-D cines are never read and make up most of the bytes
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*_4d.nii*"))
        return dst

    return copy


# ---------------------------------------------------------------------------------------------
# tiny synthetic prepared sets
# ---------------------------------------------------------------------------------------------
TINY = ("model.g_filters=8", "model.d_filters=8", "grid=4")
LABELS = {"0": "background", "1": "ring", "2": "disc"}


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """Overrides for an 8-filter DCGAN with a 4-image sample grid: keeps every trainer test CPU-fast."""
    return list(TINY)


@pytest.fixture(scope="session")
def disc_labels() -> dict[str, str]:
    """The label names of ``make_discs`` sets."""
    return dict(LABELS)


def _make_discs(out: Path, n: int = 32, size: int = 16, channels: int = 1, seed: int = 0, test_patients: int = 0) -> Path:
    from medgan.data.prepared import write_prepared

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.full((n, channels, size, size), -1.0, np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
        r = rng.uniform(size * 0.15, size * 0.3)
        d = np.hypot(yy - cy, xx - cx)
        masks[i][d < r] = 2
        masks[i][(d >= r) & (d < 1.5 * r)] = 1
        images[i][:, masks[i] == 2] = 0.8
        images[i][:, masks[i] == 1] = 0.0
    images = np.clip(images + rng.normal(0, 0.05, images.shape), -1, 1).astype(np.float32)
    patients = [f"p{i // 4:03d}" for i in range(n)]
    ids = sorted(set(patients))
    k = len(ids) - 1 - test_patients  # the last patients: one in val, then ``test_patients`` in test
    meta = dict(name="discs", modality="synthetic", labels=LABELS, source="phantom",
                splits={"train": ids[:k], "val": ids[k:k + 1], "test": ids[k + 1:]}, normalisation="none",
                inputs_sha256="0" * 64)
    return write_prepared(out, images=images, masks=masks, patients=patients, meta=meta)


@pytest.fixture(scope="session")
def make_discs():
    """``make_discs(out, n=32, size=16, channels=1, seed=0, test_patients=0) -> Path``: a prepared set of bright
    discs in darker rings (labels 2, 1) on a black background, 4 slices a patient; after the training
    patients, one in val, then ``test_patients`` in test."""
    return _make_discs


@pytest.fixture(scope="session")
def discs(tmp_path_factory) -> Path:
    """A read-only 32-slice ``make_discs`` set."""
    return _make_discs(tmp_path_factory.mktemp("data") / "discs")


@pytest.fixture(scope="session")
def small_discs(tmp_path_factory) -> Path:
    """A read-only 16-slice ``make_discs`` set."""
    return _make_discs(tmp_path_factory.mktemp("data") / "small-discs", n=16)


def _make_disk_set(out: Path, *, n: int = 16, size: int = 16, channels: int = 1, seed: int = 0) -> Path:
    from medgan.data.prepared import write_prepared

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, channels, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.35 * size, 0.65 * size, 2)
        r = rng.uniform(0.2 * size, 0.3 * size)
        d = np.hypot(yy - cy, xx - cx)
        masks[i][d < r] = 1
        masks[i][d < 0.5 * r] = 2
        images[i] = np.where(d < r, 0.5, -0.7) + rng.normal(0, 0.05, (channels, size, size))
    patients = [f"p{i // 4}" for i in range(n)]
    meta = {
        "name": "disks", "modality": "synthetic", "labels": {"0": "background", "1": "disk", "2": "core"},
        "source": "phantom", "splits": {"train": sorted(set(patients))}, "normalisation": "none",
        "inputs_sha256": "synthetic",
    }
    return write_prepared(out, images=images.clip(-1, 1), masks=masks, patients=patients, meta=meta)


@pytest.fixture(scope="session")
def make_disk_set():
    """``make_disk_set(out, *, n=16, size=16, channels=1, seed=0) -> Path``: a bright disk (label 1) with a
    core (label 2) on a dark background, all patients in train."""
    return _make_disk_set


@pytest.fixture(scope="session")
def disk_set(tmp_path_factory) -> Path:
    """A read-only 16-slice ``make_disk_set`` set."""
    return _make_disk_set(tmp_path_factory.mktemp("data") / "disks")


# ---------------------------------------------------------------------------------------------
# runs and checkpoints
# ---------------------------------------------------------------------------------------------
def _train_disk_run(data: Path, out: Path, gan: str, kimg: float, sets: list[str], *, resume: bool = False) -> Path:
    from medgan.train import make_config, run_training

    cfg = make_config(out=out, data=data, gan=gan, kimg=kimg, batch=4, resume=resume,
                      overrides=["tick_kimg=0.008", "snapshot_kimg=1", "grid=4", "deterministic=true", *sets])
    return run_training(cfg, resume=resume, progress=False)


@pytest.fixture(scope="session")
def train_disk_run():
    """``train_disk_run(data, out, gan, kimg, sets, *, resume=False) -> run folder``: batch 4, deterministic."""
    return _train_disk_run


def _checkpoint_tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _checkpoint_tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _checkpoint_tensors(v, f"{prefix}/{i}")


@pytest.fixture(scope="session")
def checkpoint_tensors():
    """``checkpoint_tensors(state) -> {"/G/…": tensor}``: every tensor of a nested checkpoint (networks, optimisers,
    RNG states, data order), keyed by its path, for bit-identity checks."""
    return lambda state: dict(_checkpoint_tensors(state))


def _assert_same_state(a: dict, b: dict, parts=("G", "D", "G_ema")) -> None:
    for part in parts:
        assert a[part].keys() == b[part].keys(), part
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


@pytest.fixture(scope="session")
def assert_same_state():
    """``assert_same_state(a, b, parts=("G", "D", "G_ema"))``: two checkpoints hold bit-identical tensors."""
    return _assert_same_state


@pytest.fixture(scope="session")
def assert_resume_exact():
    """``assert_resume_exact(data, tmp, gan, sets, kimg=0.008) -> checkpoint``: 2N steps in one run == N steps,
    a new process-level RNG state, and N more from checkpoint-last.pt, bit-identical."""
    from medgan.train import load_checkpoint, run_status

    def check(data: Path, tmp: Path, gan: str, sets: list[str], kimg: float = 0.008) -> dict:
        full = _train_disk_run(data, tmp / "full", gan, 2 * kimg, sets)
        half = _train_disk_run(data, tmp / "half", gan, kimg, sets)
        torch.manual_seed(12345)  # a different process-level RNG state: resume must restore its own
        _train_disk_run(data, half, gan, 2 * kimg, sets, resume=True)
        a = load_checkpoint(full / "checkpoint-last.pt")
        b = load_checkpoint(half / "checkpoint-last.pt")
        assert run_status(full)["status"] == run_status(half)["status"] == "finished"
        assert a["step"] == b["step"] > 0
        _assert_same_state(a, b)
        return a

    return check


@pytest.fixture(scope="session")
def finite_stats():
    """``finite_stats(run) -> stats``: the run finished and every float it logged is finite."""
    from medgan.train import read_stats, run_status

    def check(run_dir: Path) -> list[dict]:
        assert run_status(run_dir)["status"] == "finished", run_status(run_dir)
        stats = read_stats(run_dir)
        assert stats
        for line in stats:
            for k, v in line.items():
                if isinstance(v, float):
                    assert math.isfinite(v), (k, v)
                assert v is not None or k in ("D_gap_min",), (k, line)
        return stats

    return check


@pytest.fixture(scope="session")
def folder_digest():
    """``folder_digest(path, *, mtimes=False) -> {relative path: sha256 (, mtime_ns)}`` for every file below."""

    def digest(path: Path, *, mtimes: bool = False) -> dict:
        out = {}
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p.relative_to(path))] = (h, p.stat().st_mtime_ns) if mtimes else h
        return out

    return digest


# ---------------------------------------------------------------------------------------------
# registry doubles
# ---------------------------------------------------------------------------------------------
class ConditionalStandIn(nn.Module):
    """A SPADE-shaped stand-in: ``G(z, mask_onehot) -> [image from (mask, z), mask_onehot]``.

    It checks its input on every call, so a trainer or sampler that forgets the mask, or passes something
    that is not a {-1, +1} one-hot, fails the test that uses it.
    """

    conditional = True

    def __init__(self, cfg, *, channels: int, num_labels: int, resolution: int):
        super().__init__()
        self.z_dim = cfg.latent_dim
        self.num_labels, self.resolution = num_labels, resolution
        self.conv = nn.Conv2d(num_labels, channels, 3, padding=1)
        self.fc = nn.Linear(self.z_dim, channels)
        self.calls = 0

    def forward(self, z, mask_onehot=None):
        assert mask_onehot is not None, "conditional G called without a mask"
        n, k, h, w = mask_onehot.shape
        assert (k, h, w) == (self.num_labels, self.resolution, self.resolution) and n == z.shape[0]
        assert bool(((mask_onehot == 1) | (mask_onehot == -1)).all()) and bool(((mask_onehot == 1).sum(1) == 1).all())
        self.calls += 1
        image = torch.tanh(self.conv(mask_onehot.to(self.conv.weight.dtype)) + self.fc(z)[:, :, None, None])
        return torch.cat([image, mask_onehot.to(image.dtype)], dim=1)


@pytest.fixture(scope="module")
def conditional_model():
    """Registers ``MODELS["test-cond"]`` (stand-in G + DCGAN D) for the requesting module; yields its name.
    Module-scoped so module-scoped runs can use it; the registry is restored afterwards."""
    from medgan.models import MODELS, GANPair

    name = "test-cond"

    def build(cfg, *, channels, num_labels, resolution):
        D = MODELS["dcgan"](cfg, channels=channels, num_labels=num_labels, resolution=resolution).D
        return GANPair(G=ConditionalStandIn(cfg, channels=channels, num_labels=num_labels, resolution=resolution), D=D)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MODELS, "_items", {**MODELS._items, name: build})
        yield name


# ---------------------------------------------------------------------------------------------
# toy G / D doubles for loss tests (fixtures return the classes)
# ---------------------------------------------------------------------------------------------
class ConstG(nn.Module):
    """Returns a fixed fake batch whatever z (a parameter, so G's gradient can be checked); records the masks."""

    conditional = False

    def __init__(self, fake: torch.Tensor, *, conditional: bool = False, z_dim: int = 3):
        super().__init__()
        self.fake = nn.Parameter(fake.clone())
        self.conditional, self.z_dim = conditional, z_dim
        self.seen_masks: list = []

    def forward(self, z, mask_onehot=None):
        self.seen_masks.append(mask_onehot)
        return self.fake * 1.0


class PixelD(nn.Module):
    """logit = x[:, 0, 0, 0] · scale; the only intermediate feature is x itself. ``ada=True`` adds the ``ada_p``
    buffer an ADA loss moves (StyleGAN2's D carries one)."""

    def __init__(self, *, ada: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        if ada:
            self.register_buffer("ada_p", torch.zeros([]))

    def forward(self, x, return_features=False):
        logits = x[:, 0, 0, 0] * self.scale
        return (logits, [x]) if return_features else logits


class LinearD(nn.Module):
    """D(x) = <w, x> per sample: ∇_x D = w everywhere, so the gradient penalty is (‖w‖ - 1)² and R1 = γ/2 ‖w‖²
    exactly. ``ada=True`` adds the ``ada_p`` buffer."""

    def __init__(self, w: torch.Tensor, *, ada: bool = False):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        if ada:
            self.register_buffer("ada_p", torch.zeros([]))

    def forward(self, x, return_features=False):
        logits = (x * self.w).flatten(1).sum(1)
        return (logits, [x]) if return_features else logits


@pytest.fixture(scope="session")
def const_g() -> type[ConstG]:
    """``const_g(fake, *, conditional=False, z_dim=3)``: a G that always returns ``fake``; records ``seen_masks``."""
    return ConstG


@pytest.fixture(scope="session")
def pixel_d() -> type[PixelD]:
    """``pixel_d(*, ada=False)``: a D whose logit is pixel (0, 0, 0) of channel 0."""
    return PixelD


@pytest.fixture(scope="session")
def linear_d() -> type[LinearD]:
    """``linear_d(w, *, ada=False)``: D(x) = <w, x>."""
    return LinearD


@pytest.fixture(scope="module")
def notebook_roots(tmp_path_factory) -> dict[str, str]:
    """``data_root`` and ``runs_root`` for papermill reruns, one pair per test module (one module, one worker)."""
    base = tmp_path_factory.mktemp("notebook-reruns")
    return {"data_root": str(base / "data"), "runs_root": str(base / "runs")}
