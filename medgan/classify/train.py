"""Training one slice classifier: ``ClassifierConfig`` and ``train_classifier``.

Protocol (the U-Net's, ``medgan.segmentation.train``): training uses the ``train`` split of every training
set (a generated set holds all its samples in ``train``); early stopping watches the real set's ``val``
split (patient-level); the best epoch's weights are kept.

*Early stopping on the validation cross-entropy, not accuracy:* the val split holds a few patients (two in
the quick phantom), so its accuracy takes a handful of values and ties for many epochs; the mean NLL moves
smoothly with the same information.

    run_dir = train_classifier([real_dir, synthetic_dir], val_dir=real_dir, cfg=ClassifierConfig(), out_dir="runs/cls")
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

from medgan.classify.evaluate import INPUTS, accuracy_report, labelled_split, model_inputs, predict_proba
from medgan.classify.model import CHECKPOINT, SliceCNN
from medgan.config import apply_overrides, check_device_amp, from_dict, to_dict
from medgan.data.prepared import check_compatible, load_prepared
from medgan.data.transforms import ClassicalAugment
from medgan.errors import ConfigError, OutputExistsError, UserError
from medgan.io import append_jsonl, atomic_torch_save, atomic_write_text, write_json
from medgan.runtime import amp_dtype, autocast, progress_bar, resolve_device, seed_everything
from medgan.segmentation.train import _training_kind, check_no_leak

ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")  # ACDC's pathology groups, in the challenge's order
CLASS_WEIGHTS = ("balanced", "none")


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training of one classifier run (``config.json`` in the run folder reproduces it)."""

    label_key: str = "group"  # the per-slice array holding the class (ACDC: group)
    classes: tuple[str, ...] = ACDC_GROUPS  # class order of the logits and confusion matrices
    # "image": what a deployed classifier sees, and what a synthetic set's usefulness is about;
    # "image+mask" adds the mask's one-hot (a geometry shortcut: the CNN could ignore the image)
    inputs: str = "image"
    pool: int = 1  # average-pool the input by this factor first (the quick profile's CPU budget: 2)
    depth: int = 4  # conv blocks, each halving the resolution (image size / pool must be divisible by 2**depth)
    width: int = 16  # channels of the first block, doubled per block
    dropout: float = 0.3
    lr: float = 1e-3  # Adam
    weight_decay: float = 1e-4
    batch: int = 32
    max_epochs: int = 40
    patience: int = 8  # epochs without a lower val cross-entropy before stopping (0 = never stop early)
    min_delta: float = 0.0
    steps_per_epoch: int = 0  # 0 = one pass over the training slices
    class_weights: str = "balanced"  # cross-entropy weights: inverse class frequency in the training slices | none
    augment: bool = False  # classical augmentation (rotation/shift/flip/scale) of every training batch
    eval_batch: int = 128
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ConfigError(f"classify inputs={self.inputs!r} is not one of {list(INPUTS)}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ConfigError(f"classify class_weights={self.class_weights!r} is not one of {list(CLASS_WEIGHTS)}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classify classes must be >= 2 distinct names, got {list(self.classes)}")
        if self.depth < 1 or self.width < 1 or self.pool < 1:
            raise ConfigError(f"classify depth, width and pool must be >= 1, got {self.depth}, {self.width}, {self.pool}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classify dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("classify lr must be > 0 and weight_decay >= 0")
        if self.batch < 1 or self.eval_batch < 1 or self.max_epochs < 1:
            raise ConfigError("classify batch, eval_batch and max_epochs must be >= 1")
        if self.patience < 0 or self.steps_per_epoch < 0:
            raise ConfigError("classify patience and steps_per_epoch must be >= 0")
        check_device_amp(self.device, self.amp, "classify ")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        return from_dict(cls, d)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> ClassifierConfig:
        return apply_overrides(self, assignments)


def class_weights(y: np.ndarray, k: int, mode: str) -> torch.Tensor:
    """Cross-entropy weights ``[k]``: ``n / (k_present * count_c)`` for classes present in ``y`` (0 for absent
    ones: they have no term to weigh), or all ones for ``none``. Balanced weights make every present class
    count equally, whatever its share of the (often unbalanced) training slices."""
    if mode == "none":
        return torch.ones(k)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    present = counts > 0
    w = np.zeros(k)
    w[present] = len(y) / (present.sum() * counts[present])
    return torch.as_tensor(w, dtype=torch.float32)


def _augmenter(seed: int):
    augment = ClassicalAugment()
    generator = torch.Generator().manual_seed(seed + 0x5EED)  # not the shuffling stream: augment on/off keeps the order
    return lambda image, mask: augment(image, mask, generator)


def train_classifier(
    train_dirs: Sequence[str | os.PathLike],
    val_dir: str | os.PathLike,
    cfg: ClassifierConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Train a classifier on the ``train`` split of every set in ``train_dirs``; early-stop on ``val_dir``'s ``val``.

    Writes ``out_dir``: ``config.json``, ``history.jsonl`` (per epoch: loss, val NLL, val accuracy, seconds),
    ``classifier.pt`` (best epoch's weights + config + classes + inputs; ``torch.load(weights_only=True)``)
    and ``status.json``. Returns ``out_dir``.
    """
    cfg = cfg or ClassifierConfig()
    if out_dir is None:
        raise UserError("train_classifier needs an out_dir (the run folder)")
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
    if val_set.image_size % (cfg.pool * 2**cfg.depth):
        raise ConfigError(f"classify pool {cfg.pool} and depth {cfg.depth} need an image size divisible by "
                          f"{cfg.pool * 2**cfg.depth}; {val_set.root} is {val_set.image_size}²")

    classes = list(cfg.classes)
    parts = [labelled_split(ps, "train", cfg.label_key, classes) for ps in train_sets]
    x_train = np.concatenate([p[0] for p in parts])
    m_train = np.concatenate([p[1] for p in parts])
    y_train = np.concatenate([p[2] for p in parts])
    x_val, m_val, y_val, p_val = labelled_split(val_set, "val", cfg.label_key, classes)
    k, num_labels = len(classes), val_set.num_labels
    in_channels = val_set.channels + (num_labels if cfg.inputs == "image+mask" else 0)

    device = resolve_device(cfg.device)
    amp = amp_dtype(cfg.amp, device)
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # the batch order, independent of anything else drawing
    augment = _augmenter(cfg.seed) if cfg.augment else None
    model = SliceCNN(in_channels, k, cfg.depth, cfg.width, cfg.dropout, cfg.pool).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = class_weights(y_train, k, cfg.class_weights).to(device)
    x_all, m_all = torch.from_numpy(x_train).to(device), torch.from_numpy(m_train).to(device)
    y_all = torch.from_numpy(y_train).to(device)
    n = len(x_all)
    steps = cfg.steps_per_epoch or max(1, math.ceil(n / cfg.batch))

    run_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "train_dirs": [str(ps.root) for ps in train_sets],
        "train_sources": [ps.source for ps in train_sets],
        "val_dir": str(val_set.root),
        "n_train": int(n),
        "n_train_per_class": {c: int(v) for c, v in zip(classes, np.bincount(y_train, minlength=k), strict=True)},
        "n_val": int(len(y_val)),
        "channels": val_set.channels,
        "image_size": val_set.image_size,
        "labels": val_set.labels,
        "classes": classes,
        "class_weights": [float(w) for w in weights.cpu()],
        "training_set": _training_kind([ps.source for ps in train_sets], cfg.augment),
    }
    env = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    write_json(run_dir / "config.json", {"classify": cfg.to_dict(), "data": data, "env": env})
    write_json(run_dir / "status.json", {"status": "running"})
    history_path = run_dir / "history.jsonl"
    atomic_write_text(history_path, "")

    best: dict[str, Any] = {"nll": math.inf, "epoch": -1, "state": None, "accuracy": math.nan}
    bad_epochs = epoch = 0
    t_start = time.perf_counter()
    bar = progress_bar(range(1, cfg.max_epochs + 1), progress=progress, desc=f"classifier seed {cfg.seed}",
                       unit="epoch", leave=False)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=gen)
            loss_sum = torch.zeros((), device=device)
            for step in range(steps):
                lo = (step * cfg.batch) % n
                idx = order[lo : lo + cfg.batch]
                if len(idx) < min(cfg.batch, n) and steps > 1:  # wrap around instead of a ragged tail
                    idx = torch.cat([idx, order[: cfg.batch - len(idx)]])
                idx = idx.to(device)
                image, mask = x_all[idx].float(), m_all[idx].long()
                if augment is not None:
                    image, mask = augment(image, mask)
                with autocast(device, amp):
                    logits = model(model_inputs(image, mask, num_labels, cfg.inputs))
                loss = F.cross_entropy(logits.float(), y_all[idx], weight=weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
            probs = predict_proba(model, x_val, m_val, inputs=cfg.inputs, num_labels=num_labels,
                                  batch=cfg.eval_batch, device=device, amp=amp)
            nll = float(-np.log(np.clip(probs[np.arange(len(y_val)), y_val], 1e-12, None)).mean())
            accuracy = float((probs.argmax(axis=1) == y_val).mean())
            improved = nll < best["nll"] - cfg.min_delta
            if improved:
                best = {"nll": nll, "epoch": epoch, "accuracy": accuracy,
                        "state": copy.deepcopy({k_: v.detach().cpu() for k_, v in model.state_dict().items()})}
                bad_epochs = 0
            else:
                bad_epochs += 1
            record = {"epoch": epoch, "loss": float(loss_sum) / steps, "val_nll": nll, "val_accuracy": accuracy,
                      "best": improved, "seconds": time.perf_counter() - t0}
            append_jsonl(history_path, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_nll=f"{nll:.3f}", val_acc=f"{accuracy:.2f}")
            if cfg.patience and bad_epochs >= cfg.patience:
                break
    except BaseException as e:
        write_json(run_dir / "status.json", {"status": "failed", "reason": f"{type(e).__name__}: {e}"})
        raise
    finally:
        bar.close()

    val_report = None
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        val_report = accuracy_report(predict_proba(model, x_val, m_val, inputs=cfg.inputs, num_labels=num_labels,
                                                   batch=cfg.eval_batch, device=device, amp=amp),
                                     y_val, p_val, classes, n_boot=2)["accuracy"]
    summary = {"best_epoch": best["epoch"], "best_val_nll": best["nll"], "best_val_accuracy": best["accuracy"],
               "best_val": val_report, "epochs": epoch, "stopped_early": epoch < cfg.max_epochs,
               "seconds": time.perf_counter() - t_start}
    ckpt = {
        "state_dict": best["state"],
        "config": cfg.to_dict(),
        "arch": {"in_channels": in_channels, "num_classes": k, "depth": cfg.depth, "width": cfg.width,
                 "dropout": cfg.dropout, "pool": cfg.pool},
        "classes": classes,
        "inputs": cfg.inputs,
        "label_key": cfg.label_key,
        "channels": val_set.channels,
        "num_labels": num_labels,
        "image_size": val_set.image_size,
        "labels": val_set.labels,
        "data": data,
        **summary,
    }
    atomic_torch_save(ckpt, run_dir / CHECKPOINT)
    write_json(run_dir / "status.json", {"status": "finished", **summary})
    return run_dir
