"""pix2pix's networks (Isola et al. 2017): a U-Net generator and a PatchGAN discriminator, for reconstruction.

Ported from the reference ``junyanz/pytorch-CycleGAN-and-pix2pix`` (``models/networks.py``:
``UnetGenerator``/``UnetSkipConnectionBlock`` and ``NLayerDiscriminator``) and written our own way:

- **G** ``UNetGenerator``: ``G(x [N, C, R, R]) -> image [N, C, R, R]`` in [-1, 1] (tanh). ``log2(R)`` stride-2
  4×4 convs down to 1×1 (``unet_256`` for 256², 6 for our 64²), widths ``g_filters · (1, 2, 4, 8, 8, ...)``;
  encoder LeakyReLU(0.2) → conv → norm (none on the first and the innermost), decoder ReLU → transposed conv →
  norm (tanh on the last), each decoder output concatenated with the encoder output of the same size; dropout
  0.5 in the ``log2(R) - 5`` middle decoder blocks of width ``8 · g_filters`` (pix2pix's noise: G has no z).
- **D** ``PatchDiscriminator``: ``D(pair [N, 2C, R, R]) -> patch logits [N, 1, h, w]``, the input (the
  undersampled image) and the output (real or reconstructed) concatenated as in pix2pix's conditional D.
  ``d_layers`` = pix2pix's ``n_layers_D``: one 4×4 stride-2 conv, ``d_layers - 1`` more with norm, one 4×4
  stride-1 conv with norm, a 4×4 stride-1 conv to one channel; widths ``d_filters · min(2^i, 8)``. Receptive
  field: 70×70 at ``d_layers = 3`` (the paper's), 34×34 at 2, 16×16 at 1 (``receptive_field``).

Knobs (``ModelConfig``): ``g_filters``/``d_filters`` (pix2pix's ngf/ndf, 64), ``g_norm``/``d_norm`` (batch),
``d_layers`` (``GANS["pix2pix"]`` sets 3), ``init``/``init_gain`` (normal, 0.02 = pix2pix's ``init_weights``),
``g_spectral``/``d_spectral``. G has no latent: ``z_dim = 0``, and it refuses to be sampled from ``z``
(``medgan generate`` on a reconstruction run ends with one line pointing to the reconstruction evaluation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medgan.config import ModelConfig
from medgan.errors import ConfigError
from medgan.models.layers import apply_spectral_norm, init_weights, norm
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec

MAX_MULT = 8
DROPOUT = 0.5
NOT_A_SAMPLER = ("a pix2pix/recon-l1 generator reconstructs undersampled images and samples nothing from z; "
                 "evaluate the run with medgan.beyond.recon.evaluate (medgan recon)")


def unet_depth(resolution: int) -> int:
    """Stride-2 levels down to 1×1: ``log2(resolution)``; ConfigError unless a power of two >= 16."""
    if resolution < 16 or resolution & (resolution - 1):
        raise ConfigError(f"pix2pix needs a power-of-two resolution >= 16, got {resolution}")
    return int(math.log2(resolution))


def receptive_field(d_layers: int) -> int:
    """Receptive field (pixels) of one PatchGAN logit: 70 for ``d_layers = 3``."""
    rf = 1
    for stride in reversed([2] * d_layers + [1, 1]):
        rf = rf * stride + (4 - stride)
    return rf


class UNetGenerator(nn.Module):
    """``G(x [N, C, R, R], mask_onehot=None) -> [N, C, R, R]``: pix2pix's U-Net (see the module doc)."""

    conditional = False
    image_to_image = True  # what generate/sampling may ask before drawing z
    z_dim = 0

    def __init__(self, cfg: ModelConfig, *, channels: int, resolution: int):
        super().__init__()
        depth = unet_depth(resolution)
        self.channels, self.resolution = channels, resolution
        widths = [cfg.g_filters * min(2**i, MAX_MULT) for i in range(depth)]
        bias = cfg.g_norm == "none"
        self.down = nn.ModuleList()
        c_in = channels
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, w, 4, 2, 1, bias=bias or i in (0, depth - 1)))
            if 0 < i < depth - 1:
                layers.append(norm(cfg.g_norm, w, "model.g_norm"))
            self.down.append(nn.Sequential(*layers))
            c_in = w
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_in = widths[i] if i == depth - 1 else 2 * widths[i]
            c_out = channels if i == 0 else widths[i - 1]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias or i == 0)]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(norm(cfg.g_norm, c_out, "model.g_norm"))
                if 4 <= i <= depth - 2:  # pix2pix: the num_downs - 5 middle 8·ngf blocks
                    layers.append(nn.Dropout(DROPOUT))
            self.up.append(nn.Sequential(*layers))
        init_weights(self, cfg.init, cfg.init_gain)
        if cfg.g_spectral:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, mask_onehot: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ConfigError(NOT_A_SAMPLER)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


class PatchDiscriminator(nn.Module):
    """``D(pair [N, 2C, R, R]) -> patch logits [N, 1, h, w]``; ``return_features=True`` adds each block's output."""

    def __init__(self, cfg: ModelConfig, *, channels: int, resolution: int):
        super().__init__()
        if cfg.d_layers < 1:
            raise ConfigError(f"model.d_layers must be >= 1 for pix2pix's PatchGAN, got {cfg.d_layers}")
        unet_depth(resolution)
        bias = cfg.d_norm == "none"
        nf = cfg.d_filters
        blocks = [nn.Sequential(nn.Conv2d(2 * channels, nf, 4, 2, 1), nn.LeakyReLU(0.2))]
        c = nf
        for n in range(1, cfg.d_layers + 1):
            c_out = nf * min(2**n, MAX_MULT)
            stride = 2 if n < cfg.d_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(c, c_out, 4, stride, 1, bias=bias),
                                        norm(cfg.d_norm, c_out, "model.d_norm"), nn.LeakyReLU(0.2)))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.to_logits = nn.Conv2d(c, 1, 4, 1, 1)
        init_weights(self, cfg.init, cfg.init_gain)
        if cfg.d_spectral:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        logits = self.to_logits(x)
        return (logits, features) if return_features else logits


@MODELS.register("pix2pix")
def build_pix2pix(cfg: ModelConfig, *, channels: int, num_labels: int, resolution: int) -> GANPair:
    """pix2pix's U-Net G and PatchGAN D for ``channels``-channel images (the mask labels take no part)."""
    if channels < 1:
        raise ConfigError(f"pix2pix needs channels >= 1, got {channels}")
    return GANPair(G=UNetGenerator(cfg, channels=channels, resolution=resolution),
                   D=PatchDiscriminator(cfg, channels=channels, resolution=resolution))


# Isola et al. 2017's defaults: λ_L1 = 100, Adam(2e-4, 0.5, 0.999) (TrainConfig's defaults), 70×70 PatchGAN,
# no weight average (ema_kimg = 0), batch norm. ``grid = 0``: the trainer's sample grid draws from z, which
# a reconstruction G does not take. ``recon-l1`` is the same U-Net with the adversarial weight 0 (D is
# then never run: ``medgan.losses.pix2pix``), the baseline that isolates what the GAN term adds.
PIX2PIX = {"ema_kimg": 0.0, "grid": 0, "model.d_layers": 3, "loss.l1_weight": 100.0, "loss.adv_weight": 1.0}
GANS.register("pix2pix")(GANSpec(model="pix2pix", loss="pix2pix", overrides=dict(PIX2PIX)))
GANS.register("recon-l1")(GANSpec(model="pix2pix", loss="pix2pix", overrides={**PIX2PIX, "loss.adv_weight": 0.0}))
