"""The downstream U-Net: train on real / augmented / generated / mixed sets, test on the real test split.

This is the paper's usefulness check (§4.2, Table 2's Dice column) and, through ``load_encoder``, the
feature extractor of the domain FID (Fig 6's argument made a number).

    run_dir = train_unet([real_dir, gen_dir], val_dir=real_dir, cfg=UNetConfig(), out_dir="runs/unet")
    evaluate_unet(run_dir, real_dir, split="test")      # Dice per class / mean, per patient, NaN counted
    segment([gen_dir], real_dir, seeds=3)               # N seeds -> mean ± 95 % t-interval (Table 2)
    encoder, info = load_encoder(run_dir)               # image [N, C, H, W] in [-1, 1] -> features [N, D]

Protocol: training uses the ``train`` split of every training set (a generated set holds all its
samples in ``train``); early stopping watches the mean foreground Dice on the ``val`` split of the real
set (patient-level split); the best epoch's weights are kept. Test Dice is computed from TP/FP/FN
(``medgan.metrics.segmentation``): per patient = 3-D Dice over the patient's slices, NaN when a class
is absent from both prediction and ground truth, and reported as such.

Architecture: Ronneberger et al. 2015 with padded 3x3 convolutions (output size = input size, so the
masks need no cropping), BatchNorm after every convolution, dropout at the bottleneck (where the
original put it, at the end of the contracting path), transposed-convolution up-sampling.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgan.config import ConfigError, apply_overrides, from_dict, to_dict
from medgan.data.prepared import PreparedSet, load_prepared, write_json
from medgan.io import atomic_torch_save
from medgan.metrics.segmentation import confusion_counts, dice_report, foreground_labels, jsonable, mean_ci

CHECKPOINT = "unet.pt"
REAL_SOURCES = ("raw", "phantom")


def _user_error(msg: str) -> Exception:
    from medgan.cli import UserError  # imported late: medgan.cli imports this module for `medgan segment`

    return UserError(msg)


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetConfig:
    """Architecture and training of one U-Net run (``config.json`` in the run folder reproduces it)."""

    depth: int = 4  # number of 2x down-samplings (image size must be divisible by 2**depth)
    width: int = 32  # channels at full resolution; doubled at every level
    dropout: float = 0.1  # Dropout2d at the bottleneck
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0
    batch: int = 16
    max_epochs: int = 100
    patience: int = 10  # epochs without a better val mean Dice before stopping (0 = never stop early)
    min_delta: float = 0.0  # improvement that counts as better
    steps_per_epoch: int = 0  # 0 = one pass over the training slices
    dice_weight: float = 1.0  # loss = CE + dice_weight * (1 - soft Dice over foreground classes)
    augment: bool = False  # classical augmentation (rotation/shift/flip/scale) of every training batch
    eval_batch: int = 64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off

    def __post_init__(self) -> None:
        if self.depth < 1 or self.width < 1:
            raise ConfigError(f"unet depth and width must be >= 1, got depth={self.depth} width={self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"unet dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0 or self.dice_weight < 0:
            raise ConfigError("unet lr must be > 0, weight_decay and dice_weight >= 0")
        if self.batch < 1 or self.eval_batch < 1 or self.max_epochs < 1:
            raise ConfigError("unet batch, eval_batch and max_epochs must be >= 1")
        if self.patience < 0 or self.steps_per_epoch < 0:
            raise ConfigError("unet patience and steps_per_epoch must be >= 0")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"unet amp={self.amp!r} is not one of ['auto', 'bf16', 'off']")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unet device={self.device!r} is not auto, cpu or cuda[:N]")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        return from_dict(cls, d)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> UNetConfig:
        return apply_overrides(self, assignments)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2, padded so the spatial size is kept."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """``image [N, C, H, W]`` in [-1, 1] -> logits ``[N, K, H, W]``; H and W divisible by ``2**depth``.

    Level ``i`` of the contracting path has ``width * 2**i`` channels; the bottleneck has
    ``width * 2**depth``. ``encode`` returns the skip tensors and the bottleneck, which
    ``features`` pools into the vectors the domain FID compares.
    """

    def __init__(self, in_channels: int, num_labels: int, depth: int = 4, width: int = 32, dropout: float = 0.0):
        super().__init__()
        if in_channels < 1 or num_labels < 2:
            raise ValueError(f"UNet needs in_channels >= 1 and num_labels >= 2, got {in_channels}, {num_labels}")
        self.in_channels, self.num_labels, self.depth, self.width = in_channels, num_labels, depth, width
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(DoubleConv(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth))
        self.bottleneck = DoubleConv(chans[depth - 1], chans[depth], dropout)
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.up = nn.ModuleList(DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_labels, 1)

    @property
    def feature_dim(self) -> int:
        return self.width * 2**self.depth

    def _check(self, image: torch.Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects image [N, {self.in_channels}, H, W], got {tuple(image.shape)}")
        f = 2**self.depth
        if image.shape[2] % f or image.shape[3] % f:
            raise ValueError(f"UNet of depth {self.depth} needs H and W divisible by {f}, got {tuple(image.shape[2:])}")

    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(skips, full resolution first: ``[N, width * 2**i, H / 2**i, W / 2**i]``; bottleneck)."""
        self._check(image)
        skips = []
        x = image
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, self.bottleneck(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips, x = self.encode(image)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips), strict=True):
            x = block(torch.cat([skip, upsample(x)], dim=1))
        return self.head(x)

    def features(self, image: torch.Tensor, skips: bool = False) -> torch.Tensor:
        """Global-average-pooled bottleneck ``[N, width * 2**depth]`` (+ pooled skip levels if ``skips``)."""
        levels, bottleneck = self.encode(image)
        pooled = [bottleneck.mean(dim=(2, 3))]
        if skips:
            pooled += [s.mean(dim=(2, 3)) for s in levels]
        return torch.cat(pooled, dim=1).float()


class UNetEncoder(nn.Module):
    """The contracting path of a trained U-Net as a feature extractor (frozen, eval mode).

    ``image [N, C, H, W]`` in [-1, 1] -> ``[N, D]`` float32; D = ``width * 2**depth`` (bottleneck) or
    ``width * (2**(depth + 1) - 1)`` with ``skips`` (every level's pooled activations).
    """

    def __init__(self, unet: UNet, skips: bool = False):
        super().__init__()
        self.unet = unet
        self.skips = skips
        self.dim = unet.feature_dim + (sum(unet.width * 2**i for i in range(unet.depth)) if skips else 0)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> UNetEncoder:
        # BatchNorm must use its running statistics: features may never depend on the batch
        return super().train(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet.features(image.float(), skips=self.skips)


# ---------------------------------------------------------------------------------------------
# helpers: device, amp, seeds, data checks
# ---------------------------------------------------------------------------------------------
def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _user_error(f"device {name!r} was asked for but CUDA is not available on this machine")
    return dev


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _training_kind(sources: Sequence[str], augment: bool) -> str:
    """Table 2 row name from the sources of the training sets: real / real+aug / generated / real+generated."""
    has_real = any(s in REAL_SOURCES for s in sources)
    has_gen = any(s == "generated" for s in sources)
    kind = "+".join(k for k, present in (("real", has_real), ("generated", has_gen)) if present)
    return kind + ("+aug" if augment else "")


def check_compatible(train: Sequence[PreparedSet], reference: PreparedSet, *, others: Sequence[PreparedSet] = ()) -> None:
    """Every set must match the real ``reference`` in channels, image size and labels (one clear error each)."""
    ref = reference
    for ps in list(train) + list(others):
        where = f"{ps.root} (source {ps.source})"
        if ps.channels != ref.channels:
            raise _user_error(f"{where} has {ps.channels} image channel(s), the real set {ref.root} has {ref.channels}")
        if ps.image_size != ref.image_size:
            raise _user_error(f"{where} has {ps.image_size}² images, the real set {ref.root} has {ref.image_size}²")
        if {int(k): v for k, v in ps.labels.items()} != {int(k): v for k, v in ref.labels.items()}:
            what = "a generated set" if ps.source == "generated" else "a set"
            raise _user_error(
                f"{where} is {what} whose labels {ps.labels} are not the real set's labels {ref.labels} ({ref.root})"
            )


def check_no_leak(train: Sequence[PreparedSet], held_out: Sequence[tuple[PreparedSet, str]]) -> None:
    """Refuse a real training set whose ``train`` patients appear in a held-out (val/test) split of the same dataset.

    Generated sets are skipped: their patient ids are sample ids, not people.
    """
    for ps in train:
        if ps.source not in REAL_SOURCES:
            continue
        mine = set(ps.meta["splits"]["train"])
        for other, split in held_out:
            if other.name != ps.name:
                continue
            leaked = mine & set(other.meta["splits"][split])
            if leaked:
                raise _user_error(
                    f"patients {sorted(leaked)[:5]} are in the train split of {ps.root} and in the {split} split of "
                    f"{other.root}: the U-Net would be scored on patients it trained on"
                )


def _split_arrays(ps: PreparedSet, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = ps.indices(split)
    if len(idx) == 0:
        raise _user_error(f"{ps.root} has no slices in split {split!r} (counts: {ps.meta.get('counts')})")
    return np.asarray(ps.images[idx], np.float16), np.asarray(ps.masks[idx], np.uint8), np.asarray(ps.patients[idx])


def _augmenter(seed: int):
    """Classical augmentation (``medgan.data.transforms.ClassicalAugment`` defaults: rotation, shift,
    scale, flip) as ``f(image [N, C, H, W], mask [N, H, W]) -> (image, mask)``, with its own generator.

    Imported lazily: the U-Net without augmentation must not depend on it.
    """
    from medgan.data.transforms import ClassicalAugment

    augment = ClassicalAugment()
    # a separate stream from the shuffling one, so augment on/off does not change the batch order
    generator = torch.Generator().manual_seed(seed + 0x5EED)
    return lambda image, mask: augment(image, mask, generator)


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def soft_dice_loss(logits: torch.Tensor, mask: torch.Tensor, classes: Sequence[int], eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over ``classes`` (batch-pooled). ``logits [N, K, H, W]``, ``mask [N, H, W]`` long."""
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(mask, logits.shape[1]).permute(0, 3, 1, 2).float()
    idx = list(classes)
    p, t = probs[:, idx], onehot[:, idx]
    inter = (p * t).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


@torch.no_grad()
def predict(model: UNet, images: np.ndarray | torch.Tensor, *, batch: int = 64, device: torch.device | None = None,
            amp: torch.dtype | None = None) -> np.ndarray:
    """Label maps ``[N, H, W]`` uint8 of ``images [N, C, H, W]`` in [-1, 1] (argmax of the logits)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[s : s + batch]) if not torch.is_tensor(images) else images[s : s + batch])
            x = x.to(device, non_blocking=True).float()
            with _autocast(device, amp):
                logits = model(x)
            out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,) + tuple(images.shape[2:]), np.uint8)


def _evaluate_arrays(model: UNet, images, masks, patients, labels, *, batch: int, device, amp) -> dict[str, Any]:
    pred = predict(model, images, batch=batch, device=device, amp=amp)
    counts = confusion_counts(pred, masks, len(labels))
    return dice_report(counts, labels, patients)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def train_unet(
    train_dirs: Sequence[str | os.PathLike],
    val_dir: str | os.PathLike,
    cfg: UNetConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Train a U-Net on the ``train`` split of every set in ``train_dirs``; early-stop on ``val_dir``'s ``val`` split.

    ``val_dir`` is the real prepared set (never a generated one). Writes to ``out_dir`` (the run
    folder): ``config.json`` (config + data), ``history.jsonl`` (one line per epoch: losses, val Dice
    per class and mean, seconds), ``unet.pt`` (best epoch's state_dict + config + channels + labels;
    loadable with ``torch.load(weights_only=True)``) and ``status.json``. Returns ``out_dir``.
    ``progress``: tqdm bar over epochs (None = only on a TTY, False = off).
    """
    from tqdm.auto import tqdm

    cfg = cfg or UNetConfig()
    if out_dir is None:
        raise _user_error("train_unet needs an out_dir (the run folder)")
    run_dir = Path(out_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"run folder {run_dir} already exists and is not empty (pass overwrite=True / a new --out)")
    if not train_dirs:
        raise _user_error("no training set given (need at least one --train DIR)")

    train_sets = [load_prepared(d) for d in train_dirs]
    val_set = load_prepared(val_dir)
    if val_set.source == "generated":
        raise _user_error(f"validation set {val_set.root} is a generated set; early stopping must watch a real val split")
    check_compatible(train_sets, val_set)
    check_no_leak(train_sets, [(val_set, "val")])
    f = 2**cfg.depth
    if val_set.image_size % f:
        raise ConfigError(f"unet depth {cfg.depth} needs an image size divisible by {f}; {val_set.root} is {val_set.image_size}²")

    parts = [_split_arrays(ps, "train") for ps in train_sets]
    train_images = np.concatenate([p[0] for p in parts])
    train_masks = np.concatenate([p[1] for p in parts])
    val_images, val_masks, val_patients = _split_arrays(val_set, "val")
    labels = {str(k): v for k, v in sorted(val_set.labels.items(), key=lambda kv: int(kv[0]))}
    classes = foreground_labels(labels)

    device = _device(cfg.device)
    amp = _amp_dtype(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = _seed_everything(cfg.seed)
    augment = _augmenter(cfg.seed) if cfg.augment else None

    model = UNet(val_set.channels, len(labels), cfg.depth, cfg.width, cfg.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the whole (float16) training set on the device: no loader, no per-step host copies
    x_all = torch.from_numpy(train_images).to(device)
    y_all = torch.from_numpy(train_masks).to(device)
    val_images = torch.from_numpy(val_images).to(device)
    n = len(x_all)
    steps = cfg.steps_per_epoch or max(1, math.ceil(n / cfg.batch))

    run_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "train_dirs": [str(ps.root) for ps in train_sets],
        "train_sources": [ps.source for ps in train_sets],
        "val_dir": str(val_set.root),
        "n_train": int(n),
        "n_val": int(len(val_images)),
        "channels": val_set.channels,
        "image_size": val_set.image_size,
        "labels": labels,
        "training_set": _training_kind([ps.source for ps in train_sets], cfg.augment),
    }
    env = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    write_json(run_dir / "config.json", {"unet": cfg.to_dict(), "data": data, "env": env})
    write_json(run_dir / "status.json", {"status": "running"})
    history_path = run_dir / "history.jsonl"
    history_path.write_text("")

    best = {"dice": -math.inf, "epoch": -1, "state": None}
    bad_epochs = 0
    t_start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(range(1, cfg.max_epochs + 1), desc=f"unet seed {cfg.seed}", unit="epoch",
               disable=None if progress is None else not progress, leave=False)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=gen)
            # summed on the device: a float() per step would synchronise every step
            sums = {k: torch.zeros((), device=device) for k in ("loss", "ce", "dice_loss")}
            for step in range(steps):
                lo = (step * cfg.batch) % n
                idx = order[lo : lo + cfg.batch]
                if len(idx) < min(cfg.batch, n) and steps > 1:  # wrap around instead of a ragged tail
                    idx = torch.cat([idx, order[: cfg.batch - len(idx)]])
                idx = idx.to(device)
                image, mask = x_all[idx].float(), y_all[idx].long()
                if augment is not None:
                    image, mask = augment(image, mask)
                with _autocast(device, amp):
                    logits = model(image)
                ce = F.cross_entropy(logits.float(), mask)
                dl = soft_dice_loss(logits, mask, classes) if cfg.dice_weight else torch.zeros((), device=device)
                loss = ce + cfg.dice_weight * dl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["loss"] += loss.detach()
                sums["ce"] += ce.detach()
                sums["dice_loss"] += dl.detach()
            val = _evaluate_arrays(model, val_images, val_masks, val_patients, labels,
                                   batch=cfg.eval_batch, device=device, amp=amp)
            score = val["dice"]["mean"]
            score = -1.0 if math.isnan(score) else score  # no foreground anywhere in val: never "best"
            improved = score > best["dice"] + cfg.min_delta
            if improved:
                best = {"dice": score, "epoch": epoch, "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
                bad_epochs = 0
            else:
                bad_epochs += 1
            record = {"epoch": epoch, **{k: float(v) / steps for k, v in sums.items()}, "val_dice": val["dice"],
                      "val_nan": val["patient"]["nan"] if "patient" in val else val["image"]["nan"],
                      "best": improved, "seconds": time.perf_counter() - t0}
            with open(history_path, "a") as fh:
                fh.write(json.dumps(jsonable(record)) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_dice=f"{score:.3f}", best=f"{best['dice']:.3f}@{best['epoch']}")
            if cfg.patience and bad_epochs >= cfg.patience:
                break
    except BaseException as e:
        write_json(run_dir / "status.json", {"status": "failed", "reason": f"{type(e).__name__}: {e}"})
        raise
    finally:
        bar.close()

    summary = {"best_epoch": best["epoch"], "best_val_dice": best["dice"], "epochs": epoch,
               "stopped_early": epoch < cfg.max_epochs, "seconds": time.perf_counter() - t_start,
               "cpu_seconds": time.process_time() - cpu_start}
    ckpt = {
        "state_dict": best["state"],
        "config": cfg.to_dict(),
        "arch": {"in_channels": val_set.channels, "num_labels": len(labels), "depth": cfg.depth,
                 "width": cfg.width, "dropout": cfg.dropout},
        "channels": val_set.channels,
        "image_size": val_set.image_size,
        "labels": labels,
        "data": data,
        **summary,
    }
    atomic_torch_save(ckpt, run_dir / CHECKPOINT)
    write_json(run_dir / "status.json", jsonable({"status": "finished", **summary}))
    return run_dir


def _checkpoint_path(run: str | os.PathLike) -> Path:
    """``run`` is a run folder with ``unet.pt``, the file itself, or a ``segment`` folder (-> its first seed)."""
    run = Path(run)
    if run.is_file():
        return run
    if (run / CHECKPOINT).is_file():
        return run / CHECKPOINT
    seeds = sorted(run.glob(f"seed-*/{CHECKPOINT}"), key=lambda p: int(p.parent.name.split("-")[1]))
    if seeds:
        return seeds[0]
    raise FileNotFoundError(f"no U-Net checkpoint {CHECKPOINT} in {run} (train one with `medgan segment --out {run}`)")


def load_unet(run: str | os.PathLike, device: str | torch.device | None = "cpu") -> UNet:
    """The best-epoch U-Net of a run folder, in eval mode; ``model.meta`` holds the checkpoint's metadata."""
    path = _checkpoint_path(run)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    arch = ckpt["arch"]
    model = UNet(arch["in_channels"], arch["num_labels"], arch["depth"], arch["width"], arch["dropout"])
    model.load_state_dict(ckpt["state_dict"])
    model.meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    model.meta["checkpoint"] = str(path)
    return model.to(_device(device) if not isinstance(device, torch.device) else device).eval()


def load_encoder(run: str | os.PathLike, *, skips: bool = False, device: str | torch.device | None = "cpu") -> tuple[UNetEncoder, dict[str, Any]]:
    """Feature extractor for the domain FID: ``image [N, C, H, W]`` in [-1, 1] -> ``[N, D]`` float32.

    Features = global-average-pooled bottleneck of the U-Net in ``run`` (+ every skip level, pooled,
    with ``skips``). ``info``: ``name`` (``"unet:<run>"``, or ``"unet+skips:<run>"``), ``dim``,
    ``channels``, ``image_size``, ``labels``, ``checkpoint`` and its ``sha256`` (a cache key that
    changes when the weights do).
    """
    import hashlib

    model = load_unet(run, device=device)
    encoder = UNetEncoder(model, skips=skips)
    path = Path(model.meta["checkpoint"])
    info = {
        "name": f"unet{'+skips' if skips else ''}:{run}",
        "dim": encoder.dim,
        "channels": model.meta["channels"],
        "image_size": model.meta["image_size"],
        "labels": model.meta["labels"],
        "checkpoint": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "trained_on": model.meta.get("data", {}).get("train_dirs"),
    }
    return encoder, info


def evaluate_unet(
    model_or_run: UNet | str | os.PathLike,
    test_dir: str | os.PathLike,
    split: str = "test",
    *,
    batch: int = 64,
    device: str | torch.device | None = None,
    amp: str = "auto",
) -> dict[str, Any]:
    """Dice of a U-Net on one split of a prepared set (the real test split by default).

    Returns ``dice_report`` (headline ``dice`` = mean over patients of the per-patient 3-D Dice per
    class + ``"mean"``; ``patient``/``image``/``pooled`` summaries with NaN counts; ``per_patient``)
    plus ``test_dir``, ``split``, ``n_images``.
    """
    if isinstance(model_or_run, UNet):
        model = model_or_run
        meta = getattr(model, "meta", {})
        dev = torch.device(device) if device not in (None, "auto") else next(model.parameters()).device
        model = model.to(dev)
    else:
        dev = _device(device)
        model = load_unet(model_or_run, device=dev)
        meta = model.meta
    ps = load_prepared(test_dir)
    if ps.channels != model.in_channels:
        raise _user_error(f"{ps.root} has {ps.channels} image channel(s), the U-Net expects {model.in_channels}")
    if ps.num_labels != model.num_labels:
        raise _user_error(f"{ps.root} has {ps.num_labels} labels {ps.labels}, the U-Net predicts {model.num_labels}")
    if meta.get("labels") and {int(k): v for k, v in meta["labels"].items()} != {int(k): v for k, v in ps.labels.items()}:
        raise _user_error(f"{ps.root} has labels {ps.labels}, the U-Net was trained on {meta['labels']}")
    if ps.image_size % 2**model.depth:
        raise _user_error(f"{ps.root} has {ps.image_size}² images; a depth-{model.depth} U-Net needs a multiple of {2**model.depth}")
    images, masks, patients = _split_arrays(ps, split)
    labels = {str(k): v for k, v in sorted(ps.labels.items(), key=lambda kv: int(kv[0]))}
    report = _evaluate_arrays(model, images, masks, patients, labels, batch=batch, device=dev,
                              amp=_amp_dtype(amp, dev))
    return {"test_dir": str(ps.root), "split": split, **report}


# ---------------------------------------------------------------------------------------------
# the Table 2 protocol
# ---------------------------------------------------------------------------------------------
def segment(
    train_dirs: Sequence[str | os.PathLike],
    test_dir: str | os.PathLike,
    *,
    seeds: int = 3,
    augment: bool = False,
    cfg: UNetConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    val_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``seeds`` U-Nets on ``train_dirs`` and test each on the real ``test_dir`` (Table 2's Dice column).

    ``val_dir`` (default: ``test_dir``) gives the real ``val`` split for early stopping; seed ``s`` uses
    ``cfg.seed + s`` and the run folder ``out_dir/seed-<s>`` (a temporary folder when ``out_dir`` is
    None). Returns a JSON-ready dict (NaN as NaN; ``jsonable`` for files): ``training_set`` (real,
    real+aug, generated, real+generated), the sets and their sources, slice counts, ``labels``,
    ``classes``, ``config``, per seed the test report, and ``dice`` = per class and ``mean``:
    mean over seeds ± half-width of the 95 % t-interval (``ci95``), with the per-seed values.
    """
    from tqdm.auto import tqdm

    cfg = cfg or UNetConfig()
    if augment:
        cfg = dataclasses.replace(cfg, augment=True)
    if seeds < 1:
        raise _user_error(f"seeds must be >= 1, got {seeds}")
    if not train_dirs:
        raise _user_error("no training set given (need at least one --train DIR)")
    test_set = load_prepared(test_dir)
    val_set = load_prepared(val_dir) if val_dir is not None else test_set
    for ps, role in ((test_set, "test"), (val_set, "validation")):
        if ps.source == "generated":
            raise _user_error(f"the {role} set {ps.root} is a generated set; Dice must be measured on a real set")
    train_sets = [load_prepared(d) for d in train_dirs]
    check_compatible(train_sets, test_set, others=[val_set])
    check_no_leak(train_sets, [(test_set, "test"), (val_set, "val")])
    n_test = len(_split_arrays(test_set, "test")[0])
    n_val = len(_split_arrays(val_set, "val")[0])
    n_train = [len(_split_arrays(ps, "train")[0]) for ps in train_sets]
    classes = [test_set.labels[str(c)] for c in foreground_labels(test_set.labels)]

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="medgan-segment-")
        root = Path(tmp.name)
    else:
        root = Path(out_dir)
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(f"output folder {root} already exists and is not empty (choose a new --out)")
    per_seed = []
    try:
        for s in tqdm(range(seeds), desc="segment seeds", unit="seed", disable=None if progress is None else not progress):
            cfg_s = dataclasses.replace(cfg, seed=cfg.seed + s)
            run_dir = train_unet([ps.root for ps in train_sets], val_set.root, cfg_s, root / f"seed-{s}", progress=progress)
            status = json.loads((run_dir / "status.json").read_text())
            model = load_unet(run_dir, device=_device(cfg.device))
            test = evaluate_unet(model, test_set.root, "test", batch=cfg.eval_batch, amp=cfg.amp)
            per_seed.append({
                "seed": cfg_s.seed,
                "run_dir": str(run_dir) if tmp is None else None,
                "best_epoch": status["best_epoch"],
                "epochs": status["epochs"],
                "best_val_dice": status["best_val_dice"],
                "train_seconds": status["seconds"],
                "test": test,
            })
    finally:
        if tmp is not None:
            tmp.cleanup()

    dice = {c: {**mean_ci([r["test"]["dice"][c] for r in per_seed]), "values": [r["test"]["dice"][c] for r in per_seed]}
            for c in classes + ["mean"]}
    result = {
        "kind": "segment",
        "training_set": _training_kind([ps.source for ps in train_sets], cfg.augment),
        "train_dirs": [str(ps.root) for ps in train_sets],
        "train_sources": [ps.source for ps in train_sets],
        "train_names": [ps.name for ps in train_sets],
        "train_run_ids": [ps.meta.get("run_id") for ps in train_sets],
        "test_dir": str(test_set.root),
        "val_dir": str(val_set.root),
        "dataset": test_set.name,
        "n_train_slices": int(sum(n_train)),
        "n_train_slices_per_set": n_train,
        "n_val_slices": n_val,
        "n_test_slices": n_test,
        "n_test_patients": len(test_set.meta["splits"]["test"]),
        "channels": test_set.channels,
        "image_size": test_set.image_size,
        "labels": test_set.labels,
        "classes": classes,
        "seeds": per_seed,
        "n_seeds": seeds,
        "dice": dice,
        "dice_mean": dice["mean"]["mean"],
        "dice_definition": "per-patient 3-D Dice (TP/FP/FN summed over the patient's test slices), NaN-mean over "
                           "patients per class, 'mean' = mean over foreground classes; mean ± 95% t-interval over seeds",
        "config": cfg.to_dict(),
        "device": str(_device(cfg.device)),
        "out_dir": str(root) if tmp is None else None,
    }
    if tmp is None:
        write_json(root / "segment.json", jsonable(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    """A readable summary of ``segment``'s result."""
    def fmt(v: float | None) -> str:
        return "  nan " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    cols = result["classes"] + ["mean"]
    lines = [
        f"U-Net Dice on {result['test_dir']} (test split, {result['n_test_slices']} slices, "
        f"{result['n_test_patients']} patients)",
        f"training set: {result['training_set']}  ({result['n_train_slices']} slices from "
        + ", ".join(f"{d} [{s}]" for d, s in zip(result["train_dirs"], result["train_sources"], strict=True)) + ")",
        "",
        f"{'':>10} " + " ".join(f"{c:>15}" for c in cols),
    ]
    for r in result["seeds"]:
        nan = r["test"].get("patient", r["test"]["image"])["nan"]
        row = " ".join(f"{fmt(r['test']['dice'][c]):>15}" for c in cols)
        lines.append(f"{'seed ' + str(r['seed']):>10} {row}   (best epoch {r['best_epoch']}/{r['epochs']}, "
                     f"{r['train_seconds']:.0f} s" + (f", NaN {nan}" if any(v for k, v in nan.items() if k != 'all_classes') else "") + ")")
    ci = " ".join(f"{fmt(result['dice'][c]['mean']) + ' ± ' + fmt(result['dice'][c]['ci95']).strip():>15}" for c in cols)
    lines.append(f"{'mean±CI95':>10} {ci}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_cli(sub) -> None:
    p = sub.add_parser("segment", help="train U-Nets on real/augmented/generated sets, Dice on the real test split")
    p.add_argument("--train", action="append", required=True, metavar="DIR",
                   help="prepared set to train on (its 'train' split); repeat to mix sets")
    p.add_argument("--test", required=True, metavar="DIR", help="the real prepared set (test split scored, val split for early stopping)")
    p.add_argument("--val", metavar="DIR", help="real set whose 'val' split drives early stopping (default: --test)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--augment", action="store_true", help="classical augmentation of the training batches (real+aug)")
    p.add_argument("--epochs", type=int, help="max epochs (unet max_epochs)")
    p.add_argument("--out", metavar="RUN_DIR", help="keep the runs here (seed-<s>/unet.pt, segment.json)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="UNetConfig override, repeatable")
    p.add_argument("--device", help="auto | cpu | cuda[:N]")
    p.set_defaults(func=_cli_segment)


def _cli_segment(args) -> int:
    cfg = UNetConfig().with_overrides(args.set)
    if args.epochs is not None:
        cfg = cfg.with_overrides({"max_epochs": args.epochs})
    if args.device:
        cfg = cfg.with_overrides({"device": args.device})
    result = segment(args.train, args.test, seeds=args.seeds, augment=args.augment, cfg=cfg, out_dir=args.out,
                     val_dir=args.val)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, jsonable(result))
        print(f"wrote {args.json}")
    return 0
