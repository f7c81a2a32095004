"""Dice from confusion counts: per class, per image (2-D), per patient (3-D) and pooled; mean ± t-interval.

Everything starts from integer label masks and goes through per-class counts ``(TP, FP, FN)``:

    counts = confusion_counts(pred, target, num_labels)    # int64 [N, K, 3]
    dice_from_counts(counts)                               # float64 [N, K]

``Dice = 2 TP / (2 TP + FP + FN)``. A class absent from both the prediction and the ground truth
has ``TP + FP + FN = 0``: its Dice is undefined and is returned as NaN, never silently as 1 or 0.
A class absent from the ground truth but predicted anyway has Dice 0 (the prediction is all FP).
Means over classes / images / patients are NaN-means that also report how many NaNs they skipped.

Why count first: summing counts over a patient's slices gives that patient's volumetric (3-D)
Dice exactly, and summing over everything gives the pooled Dice, with one code path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

TP, FP, FN = 0, 1, 2


def _as_int_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer) and x.dtype != bool:
        raise TypeError(f"{name} must hold integer labels, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def confusion_counts(pred: Any, target: Any, num_labels: int) -> np.ndarray:
    """Per-image, per-class ``(TP, FP, FN)`` of integer label maps.

    ``pred``, ``target``: ``[N, H, W]`` (or one ``[H, W]`` image) integer labels in ``[0, K)``,
    numpy or torch. Returns int64 ``[N, K, 3]`` (``[K, 3]`` for a single image); the last axis is
    ``(TP, FP, FN)`` (indices ``TP``, ``FP``, ``FN`` of this module).
    """
    pred = _as_int_array(pred, "pred")
    target = _as_int_array(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
    single = pred.ndim == 2
    if single:
        pred, target = pred[None], target[None]
    if pred.ndim != 3:
        raise ValueError(f"masks must be [N, H, W] or [H, W], got shape {pred.shape}")
    k = int(num_labels)
    if k < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    for name, m in (("pred", pred), ("target", target)):
        if m.size and (m.min() < 0 or m.max() >= k):
            raise ValueError(f"{name} holds labels outside [0, {k}): min {m.min()}, max {m.max()}")
    n = len(pred)
    # one bincount over (image, target, pred) gives every per-image confusion matrix at once
    flat = (np.arange(n, dtype=np.int64)[:, None] * (k * k) + target.reshape(n, -1) * k + pred.reshape(n, -1)).ravel()
    cm = np.bincount(flat, minlength=n * k * k).reshape(n, k, k)  # [N, target, pred]
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp = cm.sum(axis=1) - tp  # predicted as c, truly something else
    fn = cm.sum(axis=2) - tp  # truly c, predicted as something else
    counts = np.stack([tp, fp, fn], axis=-1).astype(np.int64)
    return counts[0] if single else counts


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """``counts [..., 3]`` (TP, FP, FN) -> Dice ``[...]`` float64; NaN where ``TP + FP + FN == 0``."""
    counts = np.asarray(counts)
    if counts.shape[-1:] != (3,):
        raise ValueError(f"counts must end with a (TP, FP, FN) axis of size 3, got shape {counts.shape}")
    tp, fp, fn = (counts[..., i].astype(np.float64) for i in (TP, FP, FN))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def group_counts(counts: np.ndarray, groups: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """Sum per-image ``counts [N, K, 3]`` over the images of each group (e.g. patient).

    Returns (group ids in order of first appearance, ``[G, K, 3]``). The Dice of a summed group is
    the volumetric (3-D) Dice of its slices.
    """
    groups = np.asarray(groups)
    if len(groups) != len(counts):
        raise ValueError(f"{len(groups)} group ids for {len(counts)} images")
    ids, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the order the groups first appear in
    summed = np.zeros((len(ids),) + counts.shape[1:], np.int64)
    np.add.at(summed, inverse.ravel(), counts)
    return [ids[i].item() if hasattr(ids[i], "item") else ids[i] for i in order], summed[order]


def _nanmean(x: np.ndarray, axis: int | None = None) -> tuple[np.ndarray | float, np.ndarray | int]:
    """(NaN-mean, number of NaNs) along ``axis`` without numpy's all-NaN RuntimeWarning."""
    x = np.asarray(x, np.float64)
    valid = ~np.isnan(x)
    n_valid = valid.sum(axis=axis)
    total = np.where(valid, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_valid > 0, total / np.maximum(n_valid, 1), np.nan)
    n_nan = (~valid).sum(axis=axis)
    if np.ndim(mean) == 0:
        return float(mean), int(n_nan)
    return mean, n_nan


def foreground_labels(labels: Mapping[str, str] | int, include_background: bool = False) -> list[int]:
    """Label indices to score: all but 0 (background) unless ``include_background``."""
    keys = range(labels) if isinstance(labels, int) else sorted(int(k) for k in labels)
    return [k for k in keys if include_background or k != 0]


def _label_names(labels: Mapping[str, str] | int) -> dict[int, str]:
    if isinstance(labels, int):
        return {k: str(k) for k in range(labels)}
    return {int(k): str(v) for k, v in labels.items()}


def _per_class(dice_row: np.ndarray, classes: list[int], names: dict[int, str]) -> dict[str, float]:
    """One row of Dice ``[K]`` -> ``{name: dice, ..., "mean": nanmean over classes}``."""
    out = {names[c]: float(dice_row[c]) for c in classes}
    out["mean"] = _nanmean(np.array([dice_row[c] for c in classes]))[0]
    return out


def _summary(dice: np.ndarray, classes: list[int], names: dict[int, str]) -> dict[str, Any]:
    """Dice ``[M, K]`` of M units (images or patients) -> mean per class + NaN counts."""
    mean_per_class, nan_per_class = _nanmean(dice[:, classes], axis=0)
    unit_mean, unit_nan = _nanmean(dice[:, classes], axis=1)  # each unit's mean over classes
    out: dict[str, Any] = {names[c]: float(m) for c, m in zip(classes, mean_per_class, strict=True)}
    # mean of the per-class means (the "mean Dice" of a table row)
    out["mean"] = _nanmean(np.asarray(mean_per_class))[0]
    out["nan"] = {names[c]: int(n) for c, n in zip(classes, nan_per_class, strict=True)}
    out["nan"]["all_classes"] = int(np.sum(unit_nan == len(classes)))
    out["n"] = int(len(dice))
    return out


def dice_report(
    counts: np.ndarray,
    labels: Mapping[str, str] | int,
    patients: Sequence[Any] | None = None,
    *,
    include_background: bool = False,
    per_patient: bool = True,
) -> dict[str, Any]:
    """Summarise per-image ``counts [N, K, 3]`` into JSON-ready Dice.

    Keys:
      ``dice``: the headline, per class + ``"mean"``: the mean over patients of each patient's 3-D
        Dice (NaN-mean; the ACDC convention), or over images when no patient ids are given;
      ``patient``: that summary with NaN counts per class (``nan``) and ``n`` patients;
      ``image``: the same over single images (2-D Dice per slice);
      ``pooled``: Dice of the counts summed over the whole set (one number per class);
      ``per_patient``: ``{patient: {class: dice, "mean": ...}}`` (if ``per_patient``);
      ``classes``: the scored class names; ``n_images``, ``n_patients``.
    NaN means "class absent in both prediction and ground truth" and is kept as NaN here; the
    ``nan`` counts say how often that happened. ``medgan.io.jsonable`` turns NaN into ``null`` for files.
    """
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[-1] != 3:
        raise ValueError(f"counts must be [N, K, 3], got shape {counts.shape}")
    names = _label_names(labels)
    if len(names) != counts.shape[1]:
        raise ValueError(f"{len(names)} labels but counts have {counts.shape[1]} classes")
    classes = foreground_labels(labels, include_background)
    image_dice = dice_from_counts(counts)
    report: dict[str, Any] = {"classes": [names[c] for c in classes], "n_images": int(len(counts))}
    report["image"] = _summary(image_dice, classes, names)
    report["pooled"] = _per_class(dice_from_counts(counts.sum(axis=0)), classes, names)
    if patients is not None:
        ids, pcounts = group_counts(counts, patients)
        pdice = dice_from_counts(pcounts)
        report["patient"] = _summary(pdice, classes, names)
        report["n_patients"] = len(ids)
        if per_patient:
            report["per_patient"] = {str(p): _per_class(row, classes, names) for p, row in zip(ids, pdice, strict=True)}
        headline = report["patient"]
    else:
        headline = report["image"]
    report["dice"] = {k: headline[k] for k in [names[c] for c in classes] + ["mean"]}
    return report


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean ± half-width of the two-sided Student-t ``confidence`` interval of ``values``.

    NaN values are dropped (and counted). With fewer than two values the half-width is NaN: one
    seed says nothing about the spread.
    """
    x = np.asarray(values, np.float64)
    n_nan = int(np.isnan(x).sum())
    x = x[~np.isnan(x)]
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n >= 2:
        from scipy import stats

        sd = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    else:
        sd = half = math.nan
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half, "std": sd, "n": n, "n_nan": n_nan,
            "confidence": confidence}

