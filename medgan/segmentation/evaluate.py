"""Prediction and Dice of a U-Net on one split of a prepared set (the real test split by default).

Test Dice is computed from TP/FP/FN (``medgan.segmentation.dice``): per patient = 3-D Dice over the
patient's slices, NaN when a class is absent from both prediction and ground truth, and reported as such.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import IncompatibleSetsError, UserError
from medgan.runtime import amp_dtype, autocast, resolve_device
from medgan.segmentation.dice import confusion_counts, dice_report
from medgan.segmentation.model import UNet, load_unet


def split_arrays(ps: PreparedSet, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images float16, masks uint8, patient ids) of one split, in memory; an empty split is a user error."""
    idx = ps.indices(split)
    if len(idx) == 0:
        raise UserError(f"{ps.root} has no slices in split {split!r} (counts: {ps.meta.get('counts')})")
    return np.asarray(ps.images[idx], np.float16), np.asarray(ps.masks[idx], np.uint8), np.asarray(ps.patients[idx])


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
            with autocast(device, amp):
                logits = model(x)
            out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,) + tuple(images.shape[2:]), np.uint8)


def evaluate_arrays(model: UNet, images, masks, patients, labels: dict[str, str], *, batch: int, device: torch.device,
                    amp: torch.dtype | None) -> dict[str, Any]:
    """``dice_report`` of the model's predictions on in-memory arrays (validation and test share it)."""
    pred = predict(model, images, batch=batch, device=device, amp=amp)
    return dice_report(confusion_counts(pred, masks, len(labels)), labels, patients)


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
        dev = resolve_device(device) if device not in (None, "auto") else next(model.parameters()).device
        model = model.to(dev)
    else:
        dev = resolve_device(device)
        model = load_unet(model_or_run, device=dev)
        meta = model.meta
    ps = load_prepared(test_dir)
    if ps.channels != model.in_channels:
        raise IncompatibleSetsError(f"{ps.root} has {ps.channels} image channel(s), the U-Net expects {model.in_channels}")
    if ps.num_labels != model.num_labels:
        raise IncompatibleSetsError(f"{ps.root} has {ps.num_labels} labels {ps.labels}, the U-Net predicts {model.num_labels}")
    if meta.get("labels") and {int(k): v for k, v in meta["labels"].items()} != {int(k): v for k, v in ps.labels.items()}:
        raise IncompatibleSetsError(f"{ps.root} has labels {ps.labels}, the U-Net was trained on {meta['labels']}")
    if ps.image_size % 2**model.depth:
        raise IncompatibleSetsError(
            f"{ps.root} has {ps.image_size}² images; a depth-{model.depth} U-Net needs a multiple of {2**model.depth}"
        )
    images, masks, patients = split_arrays(ps, split)
    labels = {str(k): v for k, v in sorted(ps.labels.items(), key=lambda kv: int(kv[0]))}
    report = evaluate_arrays(model, images, masks, patients, labels, batch=batch, device=dev, amp=amp_dtype(amp, dev))
    return {"test_dir": str(ps.root), "split": split, **report}
