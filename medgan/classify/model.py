"""The slice classifier: a small CNN from ``image [N, C, H, W]`` (optionally + mask one-hot) to class logits.

An optional average pooling by ``pool``, then ``depth`` blocks of (3×3 conv, group norm, ReLU) × 2 and a 2×2
max-pool, widths ``width · 2^i``; global average pooling, dropout and one linear layer. Global pooling keeps
it independent of the image size, so the same network reads 32², 64² and the paper's 128² ACDC slices.
Group norm, not batch norm: a few hundred training slices make few steps per epoch, too few for batch norm's
running statistics to settle, and eval-mode predictions then lag the trained weights; group norm computes
the same thing in training and evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medgan.errors import InputNotFoundError
from medgan.runtime import resolve_device

CHECKPOINT = "classifier.pt"


class SliceCNN(nn.Module):
    """``x [N, in_channels, H, W]`` in [-1, 1] -> ``logits [N, num_classes]``."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 4, width: int = 16, dropout: float = 0.3,
                 pool: int = 1):
        super().__init__()
        self.in_channels, self.num_classes, self.depth, self.width = in_channels, num_classes, depth, width
        # average-pool the input first (pool > 1): the groups differ in geometry, visible at a lower resolution
        blocks, c = ([nn.AvgPool2d(pool)] if pool > 1 else []), in_channels
        for i in range(depth):
            c_out = width * 2**i
            groups = min(8, c_out)
            blocks += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True),
                       nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = c_out
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def checkpoint_path(run: str | os.PathLike) -> Path:
    """``run`` is a run folder with ``classifier.pt``, the file itself, or a ``classify`` folder (-> its first seed)."""
    run = Path(run)
    if run.is_file():
        return run
    if (run / CHECKPOINT).is_file():
        return run / CHECKPOINT
    seeds = sorted(run.glob(f"seed-*/{CHECKPOINT}"), key=lambda p: int(p.parent.name.split("-")[1]))
    if seeds:
        return seeds[0]
    raise InputNotFoundError(f"no classifier checkpoint {CHECKPOINT} in {run} (train one with `medgan classify --out {run}`)")


def load_classifier(run: str | os.PathLike, device: str | torch.device | None = "cpu") -> SliceCNN:
    """The best-epoch classifier of a run folder, in eval mode; ``model.meta`` holds the checkpoint's metadata
    (``classes``, ``inputs``, ``channels``, ``labels``, ``config``, ...)."""
    path = checkpoint_path(run)
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    arch = ckpt["arch"]
    model = SliceCNN(arch["in_channels"], arch["num_classes"], arch["depth"], arch["width"], arch["dropout"],
                     arch.get("pool", 1))
    model.load_state_dict(ckpt["state_dict"])
    model.meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    model.meta["checkpoint"] = str(path)
    return model.to(resolve_device(device)).eval()
