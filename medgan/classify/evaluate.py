"""Class labels from a prepared set, prediction, and the accuracy report (per slice and per patient).

A prepared set is "labelled" when it holds a per-slice array named by ``label_key`` (ACDC: ``group`` =
NOR, MINF, DCM, HCM, RV, written by ``medgan.data.prepare``; a label-conditional GAN writes the same array).

Per-patient accuracy uses two votes over the patient's slices: ``majority`` (most frequent slice argmax; a
tie goes to the tied class with the highest mean probability) and ``mean_prob`` (argmax of the mean softmax).
Confusion matrices are ``[true, predicted]`` counts in ``classes`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.data.prepared import PreparedSet, mask_to_onehot
from medgan.errors import UserError
from medgan.metrics.bootstrap import bootstrap
from medgan.runtime import autocast

INPUTS = ("image", "image+mask")
VOTES = ("majority", "mean_prob")


def class_indices(ps: PreparedSet, idx: np.ndarray, label_key: str, classes: Sequence[str]) -> np.ndarray:
    """``[n]`` int64 class index of the slices ``idx`` of ``ps`` (``classes.index(label)``).

    A set without the ``label_key`` array, or a label outside ``classes``, is a user error naming the set.
    """
    if label_key not in ps.extra:
        raise UserError(f"{ps.root} has no per-slice {label_key!r} array (it has: {sorted(ps.extra) or 'none'}): "
                        f"a classifier needs a labelled set")
    labels = np.asarray(ps.extra[label_key])[idx].astype(str)
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.tolist()) - set(lookup))
    if unknown:
        raise UserError(f"{ps.root}: {label_key} values {unknown} are not among the classes {list(classes)} "
                        f"(set classify.classes)")
    return np.asarray([lookup[v] for v in labels], np.int64)


def labelled_split(ps: PreparedSet, split: str, label_key: str, classes: Sequence[str]):
    """(images float16 ``[n, C, H, W]``, masks uint8 ``[n, H, W]``, class indices ``[n]``, patients ``[n]``)."""
    idx = ps.indices(split)
    if len(idx) == 0:
        raise UserError(f"{ps.root} has no slices in split {split!r} (counts: {ps.meta.get('counts')})")
    return (np.asarray(ps.images[idx], np.float16), np.asarray(ps.masks[idx], np.uint8),
            class_indices(ps, idx, label_key, classes), np.asarray(ps.patients[idx]).astype(str))


def model_inputs(image: torch.Tensor, mask: torch.Tensor, num_labels: int, inputs: str) -> torch.Tensor:
    """What the CNN reads: the image ``[N, C, H, W]``, or the image and the mask's {-1, +1} one-hot ``[N, C + K, H, W]``."""
    if inputs == "image":
        return image
    return torch.cat([image, mask_to_onehot(mask, num_labels).to(image.device)], dim=1)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, masks: np.ndarray, *, inputs: str, num_labels: int,
                  batch: int = 128, device: torch.device | None = None, amp: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities ``[N, num_classes]`` float64 (eval mode; the model's mode is restored after)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(images), batch):
            image = torch.as_tensor(np.asarray(images[s : s + batch])).to(device).float()
            mask = torch.as_tensor(np.asarray(masks[s : s + batch])).to(device).long()
            with autocast(device, amp):
                logits = model(model_inputs(image, mask, num_labels, inputs))
            out.append(logits.float().softmax(dim=1).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def confusion(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``[k, k]`` int64 counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(true) * k + np.asarray(pred), minlength=k * k).reshape(k, k).astype(np.int64)


def patient_votes(probs: np.ndarray, true: np.ndarray, patients: np.ndarray) -> dict[str, np.ndarray]:
    """Per patient (sorted ids): its true class, the majority vote and the mean-probability vote."""
    ids = np.unique(patients)
    k = probs.shape[1]
    out = {"patients": ids, "true": np.empty(len(ids), np.int64), "majority": np.empty(len(ids), np.int64),
           "mean_prob": np.empty(len(ids), np.int64), "mean_probs": np.empty((len(ids), k)), "n_slices": np.empty(len(ids), np.int64)}
    for i, p in enumerate(ids):
        rows = patients == p
        labels = np.unique(true[rows])
        if len(labels) != 1:
            raise UserError(f"patient {p} has slices of several classes {labels.tolist()}: a patient-level vote needs one")
        mean = probs[rows].mean(axis=0)
        votes = np.bincount(probs[rows].argmax(axis=1), minlength=k)
        tied = np.flatnonzero(votes == votes.max())
        out["true"][i] = labels[0]
        out["majority"][i] = tied[np.argmax(mean[tied])]
        out["mean_prob"][i] = int(mean.argmax())
        out["mean_probs"][i] = mean
        out["n_slices"][i] = int(rows.sum())
    return out


def _summary(true: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    k = len(classes)
    cm = confusion(true, pred, k)
    support = cm.sum(axis=1)
    recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return {
        "accuracy": float((true == pred).mean()) if len(true) else float("nan"),
        "balanced_accuracy": float(np.nanmean(recall)) if (support > 0).any() else float("nan"),
        "recall": {c: float(r) for c, r in zip(classes, recall, strict=True)},
        "confusion": cm.tolist(),
        "n": int(len(true)),
    }


def accuracy_report(probs: np.ndarray, true: np.ndarray, patients: np.ndarray, classes: Sequence[str], *,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy per slice and per patient (both votes), with confusion matrices and per-class recall.

    ``accuracy`` (headline) = ``{"slice", "majority", "mean_prob"}``. ``patient_ci95`` is the percentile
    bootstrap interval over test patients of the mean-probability vote's accuracy (how much one seed's
    number moves with which patients were tested); ``per_patient`` lists every test patient's votes.
    """
    probs, true, patients = np.asarray(probs, np.float64), np.asarray(true, np.int64), np.asarray(patients).astype(str)
    slice_pred = probs.argmax(axis=1)
    votes = patient_votes(probs, true, patients)
    report: dict[str, Any] = {"classes": list(classes), "slice": _summary(true, slice_pred, classes)}
    for vote in VOTES:
        report[vote] = _summary(votes["true"], votes[vote], classes)
    correct = (votes["mean_prob"] == votes["true"]).astype(np.float64)
    report["patient_ci95"] = (bootstrap(np.mean, correct, n=n_boot, seed=seed, progress=False)["ci"]
                              if len(correct) >= 2 else [float("nan"), float("nan")])
    report["accuracy"] = {"slice": report["slice"]["accuracy"],
                          **{vote: report[vote]["accuracy"] for vote in VOTES}}
    report["n_slices"], report["n_patients"] = int(len(true)), int(len(votes["patients"]))
    report["per_patient"] = {
        str(p): {"true": classes[t], "majority": classes[m], "mean_prob": classes[mp], "n_slices": int(n),
                 "mean_probs": [round(float(x), 6) for x in pr]}
        for p, t, m, mp, n, pr in zip(votes["patients"], votes["true"], votes["majority"], votes["mean_prob"],
                                       votes["n_slices"], votes["mean_probs"], strict=True)
    }
    return report
