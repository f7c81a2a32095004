"""The downstream U-Net, its encoder as a feature extractor, and loading both from a run folder.

Architecture: Ronneberger et al. 2015 with padded 3x3 convolutions (output size = input size, so the
masks need no cropping), BatchNorm after every convolution, dropout at the bottleneck (where the
original put it, at the end of the contracting path), transposed-convolution up-sampling.

    model = load_unet(run_dir)                 # best-epoch weights, eval mode, ``model.meta``
    encoder, info = load_encoder(run_dir)      # image [N, C, H, W] in [-1, 1] -> features [N, D]
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgan.errors import InputNotFoundError
from medgan.runtime import resolve_device

CHECKPOINT = "unet.pt"


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


def checkpoint_path(run: str | os.PathLike) -> Path:
    """``run`` is a run folder with ``unet.pt``, the file itself, or a ``segment`` folder (-> its first seed)."""
    run = Path(run)
    if run.is_file():
        return run
    if (run / CHECKPOINT).is_file():
        return run / CHECKPOINT
    seeds = sorted(run.glob(f"seed-*/{CHECKPOINT}"), key=lambda p: int(p.parent.name.split("-")[1]))
    if seeds:
        return seeds[0]
    raise InputNotFoundError(f"no U-Net checkpoint {CHECKPOINT} in {run} (train one with `medgan segment --out {run}`)")


def load_unet(run: str | os.PathLike, device: str | torch.device | None = "cpu") -> UNet:
    """The best-epoch U-Net of a run folder, in eval mode; ``model.meta`` holds the checkpoint's metadata."""
    path = checkpoint_path(run)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    arch = ckpt["arch"]
    model = UNet(arch["in_channels"], arch["num_labels"], arch["depth"], arch["width"], arch["dropout"])
    model.load_state_dict(ckpt["state_dict"])
    model.meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    model.meta["checkpoint"] = str(path)
    return model.to(resolve_device(device)).eval()


def load_encoder(run: str | os.PathLike, *, skips: bool = False,
                 device: str | torch.device | None = "cpu") -> tuple[UNetEncoder, dict[str, Any]]:
    """Feature extractor for the domain FID: ``image [N, C, H, W]`` in [-1, 1] -> ``[N, D]`` float32.

    Features = global-average-pooled bottleneck of the U-Net in ``run`` (+ every skip level, pooled,
    with ``skips``). ``info``: ``name`` (``"unet:<run>"``, or ``"unet+skips:<run>"``), ``dim``,
    ``channels``, ``image_size``, ``labels``, ``checkpoint`` and its ``sha256`` (a cache key that
    changes when the weights do).
    """
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
