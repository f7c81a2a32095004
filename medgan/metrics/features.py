"""Feature extractors for FID / KID / PRDC / memorisation, and the on-disk feature cache.

Extractors (``FEATURES`` registry, chosen by name):

``"inception"``
    pytorch-fid's ``InceptionV3`` (2048-d pool3, ``use_fid_inception=True``, ``resize_input=True``,
    ``normalize_input=True``), built by the ``pytorch_fid`` package itself, fp32. Its weights file
    ``pt_inception-2015-12-05-6726825d.pth`` is read from ``$MEDGAN_INCEPTION_WEIGHTS`` (a file path)
    or ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``); absent -> one
    ``InceptionWeightsNotFoundError`` naming the path. Nothing is ever downloaded: pytorch-fid's
    ``load_state_dict_from_url`` is swapped for a loader of the local file while the net is built.
``"inception-random"``
    The same network with fixed-seed random weights (He-normal convolutions, identity batch norm),
    only when asked for. The name goes into every result; its numbers are a consistency check
    between our runs and must never be compared with published FIDs.
``"inception-random:<px>"``
    The same random-weight network fed ``<px>``² inputs instead of 299² (bilinear, as pytorch-fid resizes;
    75 <= px <= 299). The quick profile's extractor (``inception-random:128``, 5x fewer FLOPs): on a CPU the
    299² forward pass of a random network was most of each sweep trial and of Table 2's time, and random
    features are a pipeline check at any size. Only for random weights: pretrained Inception is always 299².
``"unet:<run_dir>"``
    The encoder of a U-Net trained on the real set (``medgan.segmentation.load_encoder``) -> domain FID.

Inputs are the *image* channels of a prepared set (``images.npy``; the mask lives in ``masks.npy``
and never reaches an extractor), ``[N, C, H, W]`` in [-1, 1]. For Inception they are mapped exactly
as pytorch-fid's own path maps an image file: ``x01 = (x + 1) / 2`` in [0, 1] (what ``ToTensor``
yields), grayscale replicated to RGB (what ``Image.convert('RGB')`` does), then pytorch-fid's module
resizes to 299² bilinearly and normalises internally.

Features are cached as ``.npy`` under ``$MEDGAN_CACHE/features`` (default ``~/.cache/medgan/features``),
keyed by (dataset content hash, extractor + weights digest, the split's slice indices); writes are atomic.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import FeatureInputError, UserError, WeightsNotFoundError
from medgan.io import atomic_save_npy
from medgan.registry import Registry
from medgan.runtime import progress_bar, resolve_device
from medgan.segmentation import load_encoder

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_DIM = 2048
RANDOM_SEED = 0
CACHE_VERSION = 1  # bump when the preprocessing changes, so stale cached features are never reused

FEATURES: Registry = Registry("feature extractor")


class InceptionWeightsNotFoundError(WeightsNotFoundError):
    """The pytorch-fid Inception weights are not on this machine (we never download them)."""


# ---------------------------------------------------------------------------------------------
# extractors
# ---------------------------------------------------------------------------------------------
@dataclass
class Extractor:
    """``extractor(image [N, C, H, W] in [-1, 1], on extractor.device) -> features [N, dim] float32``.

    ``name`` is what results report; ``digest`` identifies the weights (part of the cache key);
    ``random_weights`` marks numbers that are not comparable with published ones.
    """

    name: str
    dim: int
    model: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    digest: str
    device: torch.device
    random_weights: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward(self.model, self.prepare(image)).float()


def inception_weights_path() -> Path:
    """``$MEDGAN_INCEPTION_WEIGHTS`` or ``<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (``~/.cache/torch/hub`` by default) — the very
    place pytorch-fid's ``load_state_dict_from_url`` would have cached the file.
    """
    env = os.environ.get("MEDGAN_INCEPTION_WEIGHTS")
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _fid_inception_skeleton_state() -> dict[str, torch.Tensor]:
    """State dict with the keys and shapes of pytorch-fid's ``fid_inception_v3()``, random (seeded) values.

    The FID blocks (``FIDInceptionA`` ...) subclass torchvision's and only change ``forward``, so
    torchvision's Inception3 with 1008 classes and no aux head has exactly their parameter names.
    Convolutions get He-normal weights so activations keep their scale through the 20-odd layers
    (PyTorch's default init shrinks them towards 0); batch norms stay identity (mean 0, var 1).
    """
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


def build_inception(random_weights: bool = False) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` in eval mode on the CPU, without any network access."""
    from pytorch_fid import inception as pfi

    if random_weights:
        state = _fid_inception_skeleton_state()
    else:
        path = inception_weights_path()
        if not path.is_file():
            raise InceptionWeightsNotFoundError(
                f"Inception weights not found at {path} (pytorch-fid file {INCEPTION_FILE}); copy it there "
                f"(from {pfi.FID_WEIGHTS_URL}) or set MEDGAN_INCEPTION_WEIGHTS / TORCH_HOME, or pass "
                f"--features inception-random for labelled random-weight features"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user mistake
            raise UserError(f"{path} is not a readable pytorch-fid Inception checkpoint: {e}") from None

    def local_loader(url, *args, **kwargs):
        return state

    # fid_inception_v3() builds torchvision's net (drawing from the global RNG) then calls
    # load_state_dict_from_url: fork the RNG and hand it our state instead of letting it download.
    with torch.random.fork_rng(devices=[]), mock.patch.object(pfi, "load_state_dict_from_url", local_loader):
        try:
            model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[INCEPTION_DIM]])
        except RuntimeError as e:
            raise UserError(f"{inception_weights_path()} does not fit pytorch-fid's FID Inception: {e}") from None
    return model.eval()


def _inception_prepare(image: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` in [-1, 1] -> ``[N, 3, H, W]`` in [0, 1] float32, as pytorch-fid reads a file."""
    c = image.shape[1]
    if c not in (1, 3):
        raise FeatureInputError(f"Inception features need 1 (grayscale) or 3 (RGB) image channels, got {c}")
    x01 = ((image.float() + 1) / 2).clamp_(0, 1)
    return x01.expand(-1, 3, -1, -1) if c == 1 else x01


def _inception_forward(model: nn.Module, x01: torch.Tensor) -> torch.Tensor:
    return model(x01)[0].flatten(1)  # pool3 output [N, 2048, 1, 1] -> [N, 2048]


INCEPTION_MIN_PX = 75  # the smallest input InceptionV3's stride-2 stem and reductions accept


def _resized_prepare(px: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def prepare(image: torch.Tensor) -> torch.Tensor:
        x01 = _inception_prepare(image)
        return F.interpolate(x01, size=(px, px), mode="bilinear", align_corners=False)

    return prepare


def _input_px(arg: str | None) -> int | None:
    if arg is None:
        return None
    try:
        px = int(arg)
    except ValueError:
        px = -1
    if not INCEPTION_MIN_PX <= px <= 299:
        raise UserError(f"inception-random:<px> takes an input size from {INCEPTION_MIN_PX} to 299, got {arg!r}")
    return None if px == 299 else px


def _inception_extractor(random_weights: bool, device: torch.device, px: int | None = None) -> Extractor:
    model = build_inception(random_weights).to(device)
    name = "inception-random" if random_weights else "inception"
    prepare = _inception_prepare
    if random_weights:
        info = {"weights": f"random (seed {RANDOM_SEED}, He-normal)"}
        digest = f"random-seed{RANDOM_SEED}-he"
        if px is not None:  # our resize replaces pytorch-fid's 299² one
            model.resize_input = False
            prepare = _resized_prepare(px)
            name, digest = f"{name}:{px}", f"{digest}-{px}px"
            info["input_px"] = px
    else:
        path = inception_weights_path()
        # the file name carries the weights' hash prefix; hashing 95 MB on every build is not worth it
        info = {"weights": str(path)}
        digest = f"{path.name}:{path.stat().st_size}"
    return Extractor(name, INCEPTION_DIM, model, prepare, _inception_forward, digest,
                     device, random_weights=random_weights, info=info)


@FEATURES.register("inception")
def _inception(arg: str | None, device: torch.device) -> Extractor:
    if arg is not None:  # a pretrained FID is only comparable at pytorch-fid's 299²
        raise UserError(f"features 'inception' takes no argument (got 'inception:{arg}'); only inception-random:<px>")
    return _inception_extractor(False, device)


@FEATURES.register("inception-random")
def _inception_random(arg: str | None, device: torch.device) -> Extractor:
    return _inception_extractor(True, device, _input_px(arg))


@FEATURES.register("unet")
def _unet(arg: str | None, device: torch.device) -> Extractor:
    """Global-pooled bottleneck of the U-Net in run folder ``arg`` (``medgan.segmentation.load_encoder``)."""
    if not arg:
        raise UserError("features 'unet' needs a run folder: --features unet:<run_dir>")
    encoder, info = load_encoder(arg, device=device)
    encoder = encoder.to(device).eval()
    channels, size = int(info["channels"]), int(info["image_size"])

    def prepare(image: torch.Tensor) -> torch.Tensor:
        if image.shape[1] != channels or image.shape[-1] != size:
            raise FeatureInputError(
                f"the U-Net of {arg} was trained on {channels}-channel {size}² images, got "
                f"{image.shape[1]}-channel {image.shape[-1]}² ones: domain FID needs a U-Net of the same dataset"
            )
        return image.float()

    def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).flatten(1)

    return Extractor(f"unet:{arg}", int(info["dim"]), encoder, prepare, forward, str(info["sha256"])[:16], device,
                     info=dict(info))


@functools.lru_cache(maxsize=4)
def _get_extractor_cached(name: str, device: str, weights: str) -> Extractor:
    base, _, arg = name.partition(":")
    return FEATURES[base](arg or None, torch.device(device))


def get_extractor(name: str = "inception", device: str | torch.device | None = None) -> Extractor:
    """The extractor called ``name`` (``inception``, ``inception-random``, ``unet:<run_dir>``) on ``device``.

    Built once per process and device (Inception takes ~1 s to build and hash).
    """
    device = resolve_device(device)
    if name.startswith("unet:"):
        # cheap to build, and a run folder may be retrained in place: never reuse a stale encoder
        return FEATURES["unet"](name[5:], device)
    # the weights location is part of the key: pointing MEDGAN_INCEPTION_WEIGHTS elsewhere rebuilds
    weights = str(inception_weights_path()) if name == "inception" else ""
    return _get_extractor_cached(name, str(device), weights)


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------
def default_batch(device: torch.device) -> int:
    return 200 if device.type == "cuda" else 25


def extract_features(
    images: np.ndarray | torch.Tensor,
    extractor: Extractor | str = "inception",
    *,
    batch: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    desc: str = "features",
) -> np.ndarray:
    """``images [N, C, H, W]`` in [-1, 1] (numpy, memmap or tensor) -> ``[N, D]`` float32 features.

    Reads ``batch`` images at a time, so a memory-mapped set is never loaded whole. ``progress``: None =
    a bar only on a terminal, True = on, False = off.
    """
    if isinstance(extractor, str):
        extractor = get_extractor(extractor, device)
    n = len(images)
    if n == 0:
        raise FeatureInputError("no images to extract features from (empty set)")
    batch = int(batch or default_batch(extractor.device))
    out: np.ndarray | None = None
    bar = progress_bar(total=n, progress=progress, desc=f"{desc} [{extractor.name}]", unit="img", leave=False)
    for start in range(0, n, batch):
        chunk = images[start : start + batch]
        x = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk, copy=True))
        x = x.to(extractor.device, non_blocking=True)
        f = extractor(x).cpu().numpy()
        if out is None:
            out = np.empty((n, f.shape[1]), np.float32)
        out[start : start + len(f)] = f
        bar.update(len(f))
    bar.close()
    assert out is not None
    return out


def cache_dir() -> Path:
    """``$MEDGAN_CACHE/features`` (``$MEDGAN_CACHE`` defaults to ``~/.cache/medgan``)."""
    root = os.environ.get("MEDGAN_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "medgan") / "features"


def feature_cache_key(ps: PreparedSet, extractor: Extractor, indices: np.ndarray) -> str:
    """Hash of (content hash, extractor + weights, selected slice indices): the split is its indices."""
    payload = json.dumps(
        {"v": CACHE_VERSION, "data": ps.content_sha256, "extractor": extractor.name.split(":")[0],
         "weights": extractor.digest},
        sort_keys=True,
    ).encode()
    h = hashlib.sha256(payload)
    h.update(np.ascontiguousarray(indices, np.int64).tobytes())
    return h.hexdigest()[:24]


def split_indices(ps: PreparedSet, split: str | Sequence[str] | None) -> np.ndarray:
    """Indices of ``split`` (``"train"``, ``"all"``, ...); a clear error when it holds no slices."""
    try:
        idx = ps.indices(split)
    except ValueError as e:
        raise UserError(f"{ps.root}: {e}") from None
    if len(idx) == 0:
        raise UserError(f"split {split!r} of {ps.root} holds no images (counts: {ps.meta.get('counts')})")
    return idx


def dataset_features(
    dataset: str | os.PathLike | PreparedSet,
    extractor: Extractor | str = "inception",
    *,
    split: str = "all",
    indices: np.ndarray | None = None,
    batch: int | None = None,
    device: str | torch.device | None = None,
    cache: bool = True,
    progress: bool | None = None,
) -> np.ndarray:
    """``[n, D]`` float32 features of the images of ``split`` (or of explicit ``indices``) of a prepared set.

    Cached on disk by (content hash, extractor + weights digest, slice indices of the split): a second
    call selecting the same images reads the ``.npy`` instead of running the network.
    """
    ps = dataset if isinstance(dataset, PreparedSet) else load_prepared(dataset)
    if isinstance(extractor, str):
        extractor = get_extractor(extractor, device)
    idx = split_indices(ps, split) if indices is None else np.asarray(indices, np.int64)
    if len(idx) == 0:
        raise UserError(f"no images selected from {ps.root}")
    path = None
    if cache:
        key = feature_cache_key(ps, extractor, idx)
        slug = extractor.name.split(":")[0]
        path = cache_dir() / f"{ps.name}-{slug}-{key}.npy"
        if path.is_file():
            try:
                cached = np.load(path)
                if cached.shape[0] == len(idx):
                    return cached
            except (ValueError, OSError):
                pass  # a corrupt cache file is recomputed and replaced
    images = ps.images if len(idx) == len(ps) and np.array_equal(idx, np.arange(len(ps))) else _Take(ps.images, idx)
    feats = extract_features(images, extractor, batch=batch, progress=progress, desc=f"{ps.name}/{split}")
    if path is not None:
        atomic_save_npy(path, feats)
    return feats


class _Take:
    """Lazy ``array[idx]`` over a memmap: slicing reads only the rows of one batch."""

    def __init__(self, array: np.ndarray, idx: np.ndarray):
        self.array, self.idx = array, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, s: slice) -> np.ndarray:
        return np.asarray(self.array[self.idx[s]])
