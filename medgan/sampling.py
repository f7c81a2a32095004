"""Drawing image + mask pairs from any generator: one rule for the trainer's grids and hooks and for ``generate``.

A generator is ``G(z [n, z_dim], mask_onehot [n, K, H, W] | None) -> joint [n, C + K, H, W]`` with
``G.z_dim`` and, for a mask-conditioned G (SPADE), ``G.conditional = True``. This module needs nothing
but that contract, so it sits beside the models, below the trainer that uses it.

- unconditional G (DCGAN family, StyleGAN2): the mask is G's own output — the argmax of its K mask channels;
- conditional G (SPADE): G needs a mask to draw an image. The masks are the run's training masks under a
  random geometric augmentation (``medgan.data.transforms.random_geometric_masks``: rotation, shift,
  scale, flip): new layouts that stay anatomically plausible because they are warped real ones
  (``mode="warped"``, the default), or the training masks themselves, unchanged (``mode="training"``: random
  choice with replacement), so that the effect of the warp on the headline numbers can be measured.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from medgan.data.prepared import mask_to_onehot, split_joint
from medgan.data.transforms import random_geometric_masks
from medgan.runtime import autocast

MASK_SOURCE_GENERATOR = "generator"
MASK_SOURCE_WARPED = "training masks under random geometric augmentation (medgan.data.transforms.random_geometric_masks)"
MASK_SOURCE_TRAINING = "training masks, unchanged (random choice with replacement)"
MASK_MODES = ("warped", "training")


def _call_G(G: nn.Module, z: torch.Tensor, mask_onehot: torch.Tensor | None, truncation: float) -> torch.Tensor:
    """``G(z, mask)``; truncation goes to G when it takes it (StyleGAN2: toward the mean w), else scales z.

    Scaling z by ψ is the same rule applied in z space (the mean of z is 0), the usual DCGAN stand-in.
    """
    if truncation == 1.0:
        return G(z, mask_onehot)
    params = inspect.signature(G.forward).parameters
    for name in ("truncation_psi", "truncation"):
        if name in params:
            return G(z, mask_onehot, **{name: truncation})
    return G(z * truncation, mask_onehot)


@torch.no_grad()
def sample_joint(
    G: nn.Module,
    z: torch.Tensor,
    masks: torch.Tensor | None = None,
    *,
    num_labels: int,
    device: torch.device | str = "cpu",
    amp: torch.dtype | None = None,
    batch: int = 256,
    truncation: float = 1.0,
) -> torch.Tensor:
    """``z [n, z_dim]`` (+ ``masks [n, H, W]`` for a conditional G) -> joint ``[n, C + K, H, W]`` float32 on CPU."""
    device = torch.device(device)
    was_training = G.training
    G.eval()
    out = []
    try:
        for s in range(0, len(z), batch):
            zb = z[s : s + batch].to(device)
            mb = None if masks is None else mask_to_onehot(masks[s : s + batch], num_labels).to(device)
            with autocast(device, amp):
                joint = _call_G(G, zb, mb, truncation)
            out.append(joint.float().clamp_(-1, 1).cpu())
    finally:
        G.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def mask_source(conditional: bool, mode: str = "warped") -> str:
    """The ``mask_source`` a generated set records: G's own masks, or training masks drawn as ``mode`` says."""
    check_mask_mode(mode)
    if not conditional:
        return MASK_SOURCE_GENERATOR
    return MASK_SOURCE_WARPED if mode == "warped" else MASK_SOURCE_TRAINING


def check_mask_mode(mode: str) -> None:
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")


def draw_masks(train_masks: torch.Tensor, n: int, generator: torch.Generator, mode: str = "warped") -> torch.Tensor:
    """``n`` masks ``[n, H, W]`` for a conditional G: random training masks, warped (``mode="warped"``) or
    unchanged (``mode="training"``); see the module doc."""
    check_mask_mode(mode)
    if mode == "warped":
        return random_geometric_masks(train_masks, n, generator=generator)
    idx = torch.randint(len(train_masks), (n,), generator=generator, device=generator.device)
    return train_masks[idx.to(train_masks.device)]


def sample_pairs(
    G: nn.Module,
    n: int,
    *,
    generator: torch.Generator,
    channels: int,
    num_labels: int,
    device: torch.device | str = "cpu",
    amp: torch.dtype | None = None,
    train_masks: torch.Tensor | None = None,
    batch: int = 256,
    truncation: float = 1.0,
    masks: str = "warped",
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs from ``G``: (``images float32 [n, C, H, W]`` in [-1, 1], ``masks int64 [n, H, W]``).

    ``train_masks`` (int64 ``[N, H, W]``) is required for a conditional G and ignored otherwise; ``masks``
    (``warped`` | ``training``) says how they are drawn (see ``draw_masks``).
    """
    check_mask_mode(masks)
    conditional = bool(getattr(G, "conditional", False))
    if conditional and train_masks is None:
        raise ValueError("a conditional G needs train_masks to draw its input masks from")
    z = torch.randn(n, G.z_dim, generator=generator)
    drawn = draw_masks(train_masks, n, generator, masks) if conditional else None
    joint = sample_joint(G, z, drawn, num_labels=num_labels, device=device, amp=amp, batch=batch, truncation=truncation)
    image, mask = split_joint(joint, channels)
    return image.numpy(), mask.numpy()
