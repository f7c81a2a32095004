"""EBGAN's auto-encoder discriminator (Zhao, Mathieu & LeCun 2017) on the DCGAN backbone.

G is the DCGAN generator. D is an auto-encoder of the joint ``[N, C + K, R, R]`` tensor (image then the
{-1, +1} one-hot mask, as every D here sees it): the **encoder** is the DCGAN discriminator's stack of
stride-2 convolutions down to 4×4 (its widths, norm, activation, spectral norm, init: the ``model.d_*``
Table-1 knobs and ``model.init``/``init_gain``), the **decoder** mirrors it with stride-2 transposed
convolutions back to ``R × R`` (same ``d_*`` knobs: the whole auto-encoder is D) and a ``tanh``, so a
reconstruction lives in the data's range [-1, 1].

**What D returns.** ``D(x) -> energy [N]``: the per-sample reconstruction MSE, mean over the C + K channels
and the pixels, ``mean((Dec(Enc(x)) - x)²)`` in [0, 4]. Low energy = "looks like data". It takes the
place of the logits of the other Ds, so the trainer's ``D_real``/``D_fake`` are the mean energies of the
real and fake batches (``D_real < D_fake`` when D does its job: the opposite sign of a logit gap).
``D(x, return_features=True) -> (energy, features)``: ``features`` are the encoder blocks' outputs; the
last, flattened, is the embedding the pulling-away term uses (``medgan.losses.ebgan``).
"""

from __future__ import annotations

import torch
from torch import nn

from medgan.config import ModelConfig
from medgan.errors import ConfigError
from medgan.models.dcgan import NO_EMA, START, DCGANGenerator, _block, check_resolution, width
from medgan.models.layers import activation, apply_spectral_norm, init_weights
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec


class EBGANDiscriminator(nn.Module):
    """``D(joint [N, C + K, R, R]) -> energy [N]`` (reconstruction MSE); ``return_features=True`` adds the
    encoder blocks' outputs."""

    def __init__(self, cfg: ModelConfig, *, channels: int, num_labels: int, resolution: int):
        super().__init__()
        steps = check_resolution(resolution)
        self.channels, self.num_labels, self.resolution = channels, num_labels, resolution
        bias = cfg.d_norm == "none"
        r = resolution // 2
        c = width(cfg.d_filters, resolution, r)
        # encoder = the DCGAN D's blocks (no norm on the input layer, as there)
        encoder = [nn.Sequential(nn.Conv2d(channels + num_labels, c, 4, 2, 1),
                                 activation(cfg.d_activation, "model.d_activation"))]
        for _ in range(steps - 1):
            r //= 2
            c_out = width(cfg.d_filters, resolution, r)
            encoder.append(_block(nn.Conv2d(c, c_out, 4, 2, 1, bias=bias), cfg.d_norm, cfg.d_activation, c_out, "d"))
            c = c_out
        self.encoder = nn.ModuleList(encoder)
        assert r == START
        decoder = []
        for _ in range(steps - 1):
            r *= 2
            c_out = width(cfg.d_filters, resolution, r)
            decoder.append(_block(nn.ConvTranspose2d(c, c_out, 4, 2, 1, bias=bias), cfg.d_norm, cfg.d_activation,
                                  c_out, "d"))
            c = c_out
        self.decoder = nn.Sequential(*decoder)
        self.to_joint = nn.ConvTranspose2d(c, channels + num_labels, 4, 2, 1)
        init_weights(self, cfg.init, cfg.init_gain)
        if cfg.d_spectral:
            apply_spectral_norm(self)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every encoder block's output; the last (``[N, c, 4, 4]``) is the code."""
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_joint(self.decoder(code)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``Dec(Enc(x)) [N, C + K, R, R]`` in [-1, 1]."""
        return self.decode(self.encode(x)[-1])

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.encode(x)
        recon = self.decode(features[-1])
        energy = (recon.float() - x.float()).square().flatten(1).mean(1)
        return (energy, features) if return_features else energy


@MODELS.register("ebgan")
def build_ebgan(cfg: ModelConfig, *, channels: int, num_labels: int, resolution: int) -> GANPair:
    """The DCGAN generator and the auto-encoder D of EBGAN."""
    if channels < 1 or num_labels < 1:
        raise ConfigError(f"ebgan needs channels >= 1 and num_labels >= 1, got {channels}, {num_labels}")
    if getattr(cfg, "condition", "") or getattr(cfg, "info_cat", 0) or getattr(cfg, "info_cont", 0):
        raise ConfigError("ebgan: model.condition and model.info_* are not supported (its D is an auto-encoder "
                          "with no label or Q head); leave them at their defaults")
    kw = dict(channels=channels, num_labels=num_labels, resolution=resolution)
    return GANPair(G=DCGANGenerator(cfg, **kw), D=EBGANDiscriminator(cfg, **kw))


# DCGAN sizes and optimiser as the paper's other DCGAN-family GANs; no G_ema (as they). The margin and
# the pulling-away weight are LossConfig defaults (``loss.ebgan_margin``, ``loss.pt_weight``).
GANS.register("ebgan")(GANSpec(model="ebgan", loss="ebgan", overrides=dict(NO_EMA)))
