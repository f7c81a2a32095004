"""Helpers shared by the trainer and generation tests (no tests here): tiny data and a conditional stand-in G."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medgan.data.prepared import write_prepared

TINY = ["model.g_filters=8", "model.d_filters=8", "grid=4"]
LABELS = {"0": "background", "1": "ring", "2": "disc"}


def make_discs(out: Path, n: int = 32, size: int = 16, channels: int = 1, seed: int = 0) -> Path:
    """A prepared set of bright discs in darker rings (labels 2, 1) on a black background, 4 slices a patient."""
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
    meta = dict(name="discs", modality="synthetic", labels=LABELS, source="phantom",
                splits={"train": ids[:-1], "val": ids[-1:], "test": []}, normalisation="none", inputs_sha256="0" * 64)
    return write_prepared(out, images=images, masks=masks, patients=patients, meta=meta)


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


def register_conditional() -> str:
    """Register ``MODELS["test-cond"]`` (stand-in G + DCGAN D) once per process; return its name."""
    from medgan.models import MODELS, GANPair

    name = "test-cond"
    if name not in MODELS:

        @MODELS.register(name)
        def _build(cfg, *, channels, num_labels, resolution):
            D = MODELS["dcgan"](cfg, channels=channels, num_labels=num_labels, resolution=resolution).D
            return GANPair(G=ConditionalStandIn(cfg, channels=channels, num_labels=num_labels, resolution=resolution), D=D)

    return name
