"""Classical (geometric) augmentation of image + mask pairs as batched torch ops.

Rotation, shift, scale and flips are composed into one affine matrix per sample and applied with
a single ``grid_sample`` per tensor — bilinear for the image, nearest for the mask — on the *same*
sampling grid, so image and mask stay aligned (the paper's "augmented original" baseline, and the
masks that condition SPADE). All randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ClassicalAugment:
    """Ranges of the random affine; each sample draws its own parameters uniformly.

    ``shift`` is a fraction of the image side; ``scale`` zooms in for values > 1; ``fill`` is the
    image value outside the input (-1 = black in the [-1, 1] convention); masks are filled with 0.
    """

    rotation_deg: float = 15.0
    shift: float = 0.10
    scale: tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.5
    vflip: float = 0.0
    fill: float = -1.0

    def __post_init__(self):
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < lo <= hi, got {self.scale}")
        for name in ("hflip", "vflip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")
        if self.rotation_deg < 0 or self.shift < 0:
            raise ValueError("rotation_deg and shift must be >= 0")

    def sample_theta(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``[n, 2, 3]`` matrices for ``F.affine_grid`` (output -> input coordinates, normalised)."""
        # drawn where the generator lives, the matrices built on CPU in float64, then moved
        u = torch.rand(n, 6, generator=generator, device=None if generator is None else generator.device).cpu()
        angle = (u[:, 0] * 2 - 1) * math.radians(self.rotation_deg)
        tx = (u[:, 1] * 2 - 1) * self.shift * 2  # normalised coords span 2 per image side
        ty = (u[:, 2] * 2 - 1) * self.shift * 2
        lo, hi = self.scale
        s = lo + u[:, 3] * (hi - lo)
        fx = torch.where(u[:, 4] < self.hflip, -1.0, 1.0)
        fy = torch.where(u[:, 5] < self.vflip, -1.0, 1.0)
        return affine_theta(angle, s, tx, ty, fx, fy).to(device)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
        """``image [N, C, H, W]`` float, ``mask [N, H, W]`` int -> both warped by the same random affines."""
        theta = self.sample_theta(image.shape[0], generator, image.device)
        return warp(image, mask, theta, fill=self.fill)


def affine_theta(angle, scale, tx, ty, flip_x=None, flip_y=None) -> torch.Tensor:
    """Forward map ``x' = T R S F x`` (radians, zoom, normalised shift, ±1 flips) -> its inverse as ``[N, 2, 3]``.

    ``affine_grid`` wants the map from output to input pixels, hence the inverse.
    """
    n = angle.shape[0]
    flip_x = torch.ones(n) if flip_x is None else flip_x
    flip_y = torch.ones(n) if flip_y is None else flip_y
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.zeros(n, 3, 3, dtype=torch.float64)
    forward[:, 0, 0] = cos * scale * flip_x
    forward[:, 0, 1] = -sin * scale * flip_y
    forward[:, 1, 0] = sin * scale * flip_x
    forward[:, 1, 1] = cos * scale * flip_y
    forward[:, 0, 2] = tx
    forward[:, 1, 2] = ty
    forward[:, 2, 2] = 1
    return torch.linalg.inv(forward)[:, :2].float()


def warp(image: torch.Tensor | None, mask: torch.Tensor | None, theta: torch.Tensor, *, fill: float = -1.0):
    """Apply ``theta [N, 2, 3]`` to ``image [N, C, H, W]`` (bilinear) and ``mask [N, H, W]`` (nearest).

    Either may be ``None`` (e.g. masks only). Outside the input, the image takes ``fill`` and the
    mask label 0.
    """
    ref = image if image is not None else mask.unsqueeze(1)
    n, _, h, w = ref.shape
    grid = F.affine_grid(theta.to(ref.device, torch.float32), [n, 1, h, w], align_corners=False)
    out_image = out_mask = None
    if image is not None:
        shifted = image.float() - fill  # zero padding of (image - fill) = padding with fill
        out_image = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
        out_image = out_image.to(image.dtype)
    if mask is not None:
        m = mask.unsqueeze(1).float()
        out_mask = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        out_mask = out_mask[:, 0].round().to(mask.dtype)
    return out_image, out_mask


def random_geometric_masks(
    masks: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    augment: ClassicalAugment | None = None,
) -> torch.Tensor:
    """``n`` masks ``[n, H, W]``: random training masks under a random geometric augmentation.

    The conditioning input of SPADE-style generators at sampling time — new layouts that stay
    anatomically plausible because they are warped real ones.
    """
    augment = augment or ClassicalAugment()
    idx = torch.randint(len(masks), (n,), generator=generator, device=None if generator is None else generator.device)
    picked = masks[idx.to(masks.device)]
    theta = augment.sample_theta(n, generator, masks.device)
    return warp(None, picked, theta)[1]
