"""DiffAugment on joint image + mask tensors (Zhao et al. 2020), and its adaptive (ADA) wrapper.

``DiffAugment("color,translation,cutout", channels=C)(x [N, C + K, H, W]) -> [N, C + K, H, W]`` applies
the same random, differentiable transforms to real and fake batches before D (the loss does that):

- ``color``: brightness (+U[-0.5, 0.5]), saturation (×U[0, 2] around the pixel mean, only when C = 3)
  and contrast (×U[0.5, 1.5] around the image mean), on the C image channels **only** — the K mask
  channels are labels, not intensities, and are returned untouched.
- ``translation``: shift by up to 1/8 of the size, ``cutout``: zero a random square of half the size.
  Both move or cut every channel identically, so the mask stays registered to the image.

Fill of the areas translation brings in and cutout removes: the *empty* joint value — image −1
(black, the background of MR/CT/fundus images in [-1, 1]) and the background one-hot in the mask
(+1 in channel 0, −1 in the others). That pair occurs in real data, the mask remains a valid one-hot
whose argmax is label 0, and the fill is identical for real and fake, so D cannot use it to tell them
apart. (The reference implementation fills with 0: for a {-1, +1} one-hot that is "no label at all".)
Both are a gather/``torch.where`` over x, so they stay differentiable in x and leave kept pixels bit-exact.

Randomness comes from ``generator`` when given (``pipe(x, generator=g)``), else the global RNG (which
the trainer seeds and checkpoints).

``AdaptiveAugment(pipe, p)`` applies ``pipe`` to a fraction ``p`` of the samples (ADA); the loss that
supports it (``medgan.losses.stylegan2``) moves ``p``. Classical augmentation of the real set (before
training, not on what D sees) is ``medgan.data.transforms``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from medgan.config import AugConfig
from medgan.errors import ConfigError
from medgan.registry import Registry

# name -> op(x [N, C+K, H, W], channels C, fill [1, C+K, 1, 1], generator) -> x
DIFF_OPS: Registry = Registry("diffaugment op")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _rand(x: torch.Tensor, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(*shape, device=x.device, dtype=x.dtype, generator=generator)


def _randint(x: torch.Tensor, low: int, high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, (n,), device=x.device, generator=generator)


@DIFF_OPS.register("color")
def rand_color(x: torch.Tensor, channels: int, fill: torch.Tensor, generator=None) -> torch.Tensor:
    n = x.shape[0]
    image, mask = x[:, :channels], x[:, channels:]
    image = image + (_rand(x, n, 1, 1, 1, generator=generator) - 0.5)  # brightness
    if channels == 3:  # saturation is the identity for one channel
        mean = image.mean(dim=1, keepdim=True)
        image = (image - mean) * (_rand(x, n, 1, 1, 1, generator=generator) * 2) + mean
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * (_rand(x, n, 1, 1, 1, generator=generator) + 0.5) + mean  # contrast
    return torch.cat([image, mask], dim=1)


@DIFF_OPS.register("translation")
def rand_translation(
    x: torch.Tensor, channels: int, fill: torch.Tensor, generator=None, ratio: float = TRANSLATION_RATIO
) -> torch.Tensor:
    """out[i, j] = x[i + ty, j + tx] where inside the image, else ``fill``; ty, tx ∈ [-s, s], s = ratio·size."""
    n, ck, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(x, -sy, sy + 1, n, generator)
    tx = _randint(x, -sx, sx + 1, n, generator)
    # pad by one row/column of fill, and point every out-of-range read at it
    interior = F.pad(torch.ones(1, 1, h, w, dtype=torch.bool, device=x.device), [1, 1, 1, 1])
    x_pad = torch.where(interior, F.pad(x, [1, 1, 1, 1]), fill)
    rows = (torch.arange(h, device=x.device)[None] + ty[:, None] + 1).clamp(0, h + 1)  # [N, H]
    cols = (torch.arange(w, device=x.device)[None] + tx[:, None] + 1).clamp(0, w + 1)  # [N, W]
    out = x_pad.gather(2, rows[:, None, :, None].expand(n, ck, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, ck, h, w))


@DIFF_OPS.register("cutout")
def rand_cutout(
    x: torch.Tensor, channels: int, fill: torch.Tensor, generator=None, ratio: float = CUTOUT_RATIO
) -> torch.Tensor:
    """Set a ``ratio``-sized square (clipped at the border) at a random centre to ``fill`` in every channel."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(x, 0, h + (1 - ch % 2), n, generator) - ch // 2  # top-left, as in the reference code
    cx = _randint(x, 0, w + (1 - cw % 2), n, generator) - cw // 2
    iy = torch.arange(h, device=x.device)[None]
    ix = torch.arange(w, device=x.device)[None]
    in_y = (iy >= cy[:, None]) & (iy < cy[:, None] + ch)  # [N, H]
    in_x = (ix >= cx[:, None]) & (ix < cx[:, None] + cw)  # [N, W]
    cut = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # [N, 1, H, W]
    return torch.where(cut, fill, x)


def parse_policy(policy: str) -> list[str]:
    """``"color, translation"`` -> ``["color", "translation"]``; unknown ops are a ``ConfigError``."""
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in ops if p not in DIFF_OPS]
    if unknown:
        raise ConfigError(f"aug.diffaugment: unknown op(s) {unknown}; known: {DIFF_OPS.names()}")
    return ops


def empty_fill(channels: int, num_labels: int, device=None, dtype=None) -> torch.Tensor:
    """``[1, C + K, 1, 1]``: image −1, mask = background one-hot (+1 in channel C, −1 elsewhere)."""
    fill = torch.full((1, channels + num_labels, 1, 1), -1.0, device=device, dtype=dtype)
    if num_labels > 0:
        fill[:, channels] = 1.0
    return fill


class DiffAugment:
    """Callable ``pipe(x [N, C + K, H, W], generator=None)`` applying ``policy`` (comma-separated ops)."""

    def __init__(self, policy: str, channels: int):
        if channels < 1:
            raise ConfigError(f"DiffAugment needs >= 1 image channel, got {channels}")
        self.policy = policy
        self.channels = channels
        self.ops = parse_policy(policy)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[1] < self.channels:
            raise ValueError(f"DiffAugment expected >= {self.channels} channels, got {tuple(x.shape)}")
        fill = empty_fill(self.channels, x.shape[1] - self.channels, device=x.device, dtype=x.dtype)
        for op in self.ops:
            x = DIFF_OPS[op](x, self.channels, fill, generator=generator)
        return x

    def __repr__(self) -> str:
        return f"DiffAugment({self.policy!r}, channels={self.channels})"


def build_augment_pipe(aug_cfg: AugConfig, channels: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The DiffAugment pipe ``aug_cfg.diffaugment`` names, or None when it is empty (off)."""
    if not aug_cfg.diffaugment.strip():
        return None
    return DiffAugment(aug_cfg.diffaugment, channels)


class AdaptiveAugment:
    """``pipe`` applied to each sample with probability ``p`` (a 0-d tensor, read at every call).

    The ADA idea (Karras et al. 2020, "Training GANs with limited data") on top of a DiffAugment-style
    pipe: instead of always augmenting, augment a fraction ``p`` of what D sees, and let the loss move
    ``p`` so that D does not overfit. The pipe runs on the whole batch and ``torch.where`` picks per
    sample, so there is no branch on the value of ``p``.
    """

    def __init__(self, pipe: Callable[..., torch.Tensor], p: torch.Tensor):
        self.pipe, self.p = pipe, p

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        augmented = self.pipe(x, generator=generator) if generator is not None else self.pipe(x)
        u = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator)
        return torch.where(u < self.p.to(x.device), augmented, x)

    def __repr__(self) -> str:
        return f"AdaptiveAugment({self.pipe!r}, p={float(self.p):.3f})"
