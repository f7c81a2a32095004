"""Training one U-Net: ``UNetConfig``, the loss, the data checks and ``train_unet``.

Protocol: training uses the ``train`` split of every training set (a generated set holds all its
samples in ``train``); early stopping watches the mean foreground Dice on the ``val`` split of the real
set (patient-level split); the best epoch's weights are kept.

    run_dir = train_unet([real_dir, gen_dir], val_dir=real_dir, cfg=UNetConfig(), out_dir="runs/unet")
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgan.config import apply_overrides, check_device_amp, from_dict, to_dict
from medgan.data.prepared import PreparedSet, check_compatible, load_prepared
from medgan.data.transforms import ClassicalAugment
from medgan.errors import ConfigError, OutputExistsError, UserError
from medgan.io import append_jsonl, atomic_torch_save, atomic_write_text, write_json
from medgan.runtime import amp_dtype, autocast, progress_bar, resolve_device, seed_everything
from medgan.segmentation.dice import foreground_labels
from medgan.segmentation.evaluate import evaluate_arrays, split_arrays
from medgan.segmentation.model import CHECKPOINT, UNet

REAL_SOURCES = ("raw", "phantom")


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
        check_device_amp(self.device, self.amp, "unet ")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        return from_dict(cls, d)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> UNetConfig:
        return apply_overrides(self, assignments)


# ---------------------------------------------------------------------------------------------
# data checks
# ---------------------------------------------------------------------------------------------
def _training_kind(sources: Sequence[str], augment: bool) -> str:
    """Table 2 row name from the sources of the training sets: real / real+aug / generated / real+generated."""
    has_real = any(s in REAL_SOURCES for s in sources)
    has_gen = any(s == "generated" for s in sources)
    kind = "+".join(k for k, present in (("real", has_real), ("generated", has_gen)) if present)
    return kind + ("+aug" if augment else "")


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
                raise UserError(
                    f"patients {sorted(leaked)[:5]} are in the train split of {ps.root} and in the {split} split of "
                    f"{other.root}: the U-Net would be scored on patients it trained on"
                )


def require_real(ps: PreparedSet, role: str) -> None:
    """Dice is measured (and early stopping watches) real patients only."""
    if ps.source == "generated":
        raise UserError(f"the {role} set {ps.root} is a generated set; Dice must be measured on a real set")


# ---------------------------------------------------------------------------------------------
# loss and augmentation
# ---------------------------------------------------------------------------------------------
def soft_dice_loss(logits: torch.Tensor, mask: torch.Tensor, classes: Sequence[int], eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over ``classes`` (batch-pooled). ``logits [N, K, H, W]``, ``mask [N, H, W]`` long."""
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(mask, logits.shape[1]).permute(0, 3, 1, 2).float()
    idx = list(classes)
    p, t = probs[:, idx], onehot[:, idx]
    inter = (p * t).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def _augmenter(seed: int):
    """Classical augmentation (``ClassicalAugment`` defaults: rotation, shift, scale, flip) as
    ``f(image [N, C, H, W], mask [N, H, W]) -> (image, mask)``, with its own generator."""
    augment = ClassicalAugment()
    # a separate stream from the shuffling one, so augment on/off does not change the batch order
    generator = torch.Generator().manual_seed(seed + 0x5EED)
    return lambda image, mask: augment(image, mask, generator)


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
    ``progress``: bar over epochs (None = only on a terminal, True = on, False = off).
    """
    cfg = cfg or UNetConfig()
    if out_dir is None:
        raise UserError("train_unet needs an out_dir (the run folder)")
    run_dir = Path(out_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"run folder {run_dir} already exists and is not empty (pass overwrite=True / a new --out)")
    if not train_dirs:
        raise UserError("no training set given (need at least one --train DIR)")

    train_sets = [load_prepared(d) for d in train_dirs]
    val_set = load_prepared(val_dir)
    if val_set.source == "generated":
        raise UserError(f"validation set {val_set.root} is a generated set; early stopping must watch a real val split")
    for ps in train_sets:
        check_compatible(val_set, ps)
    check_no_leak(train_sets, [(val_set, "val")])
    f = 2**cfg.depth
    if val_set.image_size % f:
        raise ConfigError(f"unet depth {cfg.depth} needs an image size divisible by {f}; {val_set.root} is {val_set.image_size}²")

    parts = [split_arrays(ps, "train") for ps in train_sets]
    train_images = np.concatenate([p[0] for p in parts])
    train_masks = np.concatenate([p[1] for p in parts])
    val_images, val_masks, val_patients = split_arrays(val_set, "val")
    labels = {str(k): v for k, v in sorted(val_set.labels.items(), key=lambda kv: int(kv[0]))}
    classes = foreground_labels(labels)

    device = resolve_device(cfg.device)
    amp = amp_dtype(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # the batch order, independent of anything else drawing
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
    atomic_write_text(history_path, "")

    best: dict[str, Any] = {"dice": -math.inf, "epoch": -1, "state": None}
    bad_epochs = 0
    epoch = 0
    t_start, cpu_start = time.perf_counter(), time.process_time()
    bar = progress_bar(range(1, cfg.max_epochs + 1), progress=progress, desc=f"unet seed {cfg.seed}", unit="epoch",
                       leave=False)
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
                with autocast(device, amp):
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
            val = evaluate_arrays(model, val_images, val_masks, val_patients, labels,
                                  batch=cfg.eval_batch, device=device, amp=amp)
            score = val["dice"]["mean"]
            score = -1.0 if math.isnan(score) else score  # no foreground anywhere in val: never "best"
            improved = score > best["dice"] + cfg.min_delta
            if improved:
                best = {"dice": score, "epoch": epoch,
                        "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
                bad_epochs = 0
            else:
                bad_epochs += 1
            record = {"epoch": epoch, **{k: float(v) / steps for k, v in sums.items()}, "val_dice": val["dice"],
                      "val_nan": val["patient"]["nan"] if "patient" in val else val["image"]["nan"],
                      "best": improved, "seconds": time.perf_counter() - t0}
            append_jsonl(history_path, record)
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
    write_json(run_dir / "status.json", {"status": "finished", **summary})
    return run_dir
