"""The loss terms the GAN losses compose, as plain functions of tensors and networks.

Each is written once here so that a loss and its tests use the same numbers; none knows which GAN calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def gradient_penalty(
    D: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """mean over the batch of (‖∇_x̂ D(x̂)‖₂ - 1)², x̂ = ε·real + (1 - ε)·fake, ε ~ U[0, 1] per sample."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Σ_layers mean((E_batch real_l - E_batch fake_l)²); real features should carry no gradient."""
    total = fake_feats[0].new_zeros((), dtype=torch.float32)
    for r, f in zip(real_feats, fake_feats, strict=True):
        total = total + ((r.detach().float().mean(0) - f.float().mean(0)) ** 2).mean()
    return total


def paired_feature_matching(real_feats, fake_feats, n_stages: int) -> torch.Tensor:
    """pix2pixHD/SPADE ``GAN_Feat`` loss: ``sum_s sum_l E|fake_sl - real_sl| / scales``, l over the
    intermediate stages of each scale (the last stage of each, the patch logits, is left out)."""
    scales = len(fake_feats) // n_stages
    total = fake_feats[0].new_zeros((), dtype=torch.float32)
    for i, (r, f) in enumerate(zip(real_feats, fake_feats, strict=True)):
        if i % n_stages != n_stages - 1:
            total = total + (f.float() - r.detach().float()).abs().mean()
    return total / scales


def vgg_loss(vgg: nn.Module, real_image: torch.Tensor, fake_image: torch.Tensor, *, paired: bool) -> torch.Tensor:
    """VGG term on image channels ``[N, C, H, W]``: ``sum_l w_l * L1_l``, batch-mean L1 (unpaired) or
    per-pair L1 (paired); ``w_l`` is ``vgg.layer_weights`` (1 each for VGG16; SPADE's VGG19: 1/32 ... 1)."""
    with torch.no_grad():
        real_feats = vgg(real_image.detach())
    fake_feats = vgg(fake_image)
    weights = getattr(vgg, "layer_weights", None) or (1.0,) * len(fake_feats)
    total = fake_image.new_zeros((), dtype=torch.float32)
    for w, r, f in zip(weights, real_feats, fake_feats, strict=True):
        r, f = r.float(), f.float()
        if paired:
            total = total + w * (r - f).abs().mean()
        else:
            total = total + w * (r.mean(0) - f.mean(0)).abs().mean()
    return total


def r1_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """``E_x ||grad_x D(x)||^2`` over the batch (the R1 penalty before its ``gamma / 2``)."""
    x = real.detach().requires_grad_(True)
    logits = D(x)
    (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    return grad.float().square().sum(dim=[1, 2, 3]).mean()


def path_length_penalty(G: nn.Module, z: torch.Tensor, *, batch_shrink: int = 2, decay: float = 0.01) -> torch.Tensor:
    """``E[(||J_w^T y||_2 - a)^2]``, y ~ N(0, I/(H W)), on the first ``N // batch_shrink`` latents.

    ``G`` is the eager StyleGAN2 generator (``sample_ws``, ``synthesis``, buffer ``pl_mean``); ``a`` is
    ``G.pl_mean``, updated in place as an EMA of the lengths with weight ``decay``. The EMA lives on G so
    that checkpoints carry it. As in StyleGAN2-ADA's ``loss.py``, the ``a`` of this step's penalty keeps its
    graph into this batch's lengths (only the stored EMA is detached); it matches the official penalty and
    gradients (tests/test_stylegan2.py, golden vectors).
    """
    n = max(1, z.shape[0] // batch_shrink)
    ws = G.sample_ws(z[:n])
    img = G.synthesis(ws)
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    lengths = grad.float().square().sum(2).mean(1).sqrt()
    pl_mean = G.pl_mean.lerp(lengths.mean(), decay)
    G.pl_mean.copy_(pl_mean.detach())
    return (lengths - pl_mean).square().mean()
