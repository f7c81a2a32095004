"""The DCGAN backbone shared by DCGAN, LSGAN, WGAN, WGAN-GP and HingeGAN (paper §3.2, Table 1).

A fully convolutional pair (Radford et al. 2016): G up-convolves ``z`` from a 4×4 start, D strides
down to 4×4 and a final 4×4 conv gives one logit. Only the loss differs between the five GANs
(``medgan.losses``); every Table-1 architecture knob is a ``ModelConfig`` field.

**Joint image + mask encoding.** G models the joint distribution of an image and its segmentation by
channel concatenation: its output ``[N, C + K, H, W]`` holds the C image channels then K mask channels,
one per label (K = ``num_labels``, background included). All C + K channels go through ``tanh``.
The mask channels are trained (through D, which sees real joints built by ``mask_to_onehot``) against
the {-1, +1} one-hot: +1 in the channel of the pixel's label, -1 in the others — the same range as the
image. ``onehot_to_mask`` (argmax over the K channels) maps any output back to integer labels in
``[0, K)``, and maps a real one-hot back exactly, so a generated mask is always a valid label map.

**Labels and InfoGAN codes** (``model.condition``, ``model.cond_d``, ``model.info_cat``/``info_cont``;
``medgan.models.conditional``): G maps ``z`` (and the class) through ``GeneratorInput`` before its first
layer; D adds a projection term or takes one-hot label maps, and owns InfoGAN's Q head on its last features.
With every knob at its default the pair is exactly the unconditional DCGAN (same modules, same init order).

Widths: ``g_filters``/``d_filters`` is the width of the layer at the highest resolution (the last
hidden layer of G, the first layer of D); it doubles per halving of the resolution, capped at
``MAX_MULT`` × (as DCGAN's 64-128-256-512 for 64²). Resolutions: any power of two ≥ 16.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medgan.config import ModelConfig
from medgan.errors import ConfigError
from medgan.models.conditional import GeneratorInput, ProjectionHead, QHead, label_maps, num_classes
from medgan.models.layers import activation, apply_spectral_norm, init_weights, norm
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec

MAX_MULT = 8  # width cap: filters × 8 at the lowest resolutions
START = 4  # spatial size of G's first and D's last feature map


def check_resolution(resolution: int) -> int:
    """Number of ×2 steps between 4×4 and ``resolution``; ConfigError unless a power of two ≥ 16."""
    if resolution < 16 or resolution & (resolution - 1):
        raise ConfigError(f"dcgan needs a power-of-two resolution >= 16, got {resolution}")
    return int(math.log2(resolution // START))


def width(filters: int, resolution: int, r: int) -> int:
    """Width of the feature map at spatial size ``r`` for a model whose top hidden layer is at ``resolution/2``."""
    return filters * min(MAX_MULT, (resolution // 2) // r)


def _block(conv: nn.Module, norm_name: str, act_name: str, channels: int, knob: str) -> nn.Sequential:
    return nn.Sequential(
        conv, norm(norm_name, channels, f"model.{knob}_norm"), activation(act_name, f"model.{knob}_activation")
    )


class DCGANGenerator(nn.Module):
    """``G(z [N, z_dim] | [N, z_dim, 1, 1], mask_onehot=None, labels=None) -> joint [N, C + K, R, R]`` in [-1, 1].

    ``labels [N]`` int64 class indices (``model.condition``); None on a label-conditional G draws the
    training-set class proportions (``conditional.prior_labels``). ``mask_onehot`` is ignored (G makes its mask).
    """

    conditional = False

    def __init__(self, cfg: ModelConfig, *, channels: int, num_labels: int, resolution: int):
        super().__init__()
        steps = check_resolution(resolution)
        self.z_dim = cfg.latent_dim
        self.channels, self.num_labels, self.resolution = channels, num_labels, resolution
        self.num_classes = num_classes(cfg.condition)
        self.info_cat, self.info_cont = cfg.info_cat, cfg.info_cont
        # None when unconditional without codes: z goes straight in (the paper's DCGAN, unchanged)
        self.input = GeneratorInput(cfg) if self.num_classes or cfg.info_cat or cfg.info_cont else None
        in_dim = self.z_dim if self.input is None else self.input.in_dim
        bias = cfg.g_norm == "none"  # a norm right after the conv makes its bias redundant
        layers = []
        r = START
        c = width(cfg.g_filters, resolution, r)
        layers.append(
            _block(nn.ConvTranspose2d(in_dim, c, START, 1, 0, bias=bias), cfg.g_norm, cfg.g_activation, c, "g")
        )
        for _ in range(steps - 1):
            r *= 2
            c_out = width(cfg.g_filters, resolution, r)
            layers.append(
                _block(nn.ConvTranspose2d(c, c_out, 4, 2, 1, bias=bias), cfg.g_norm, cfg.g_activation, c_out, "g")
            )
            c = c_out
        self.body = nn.Sequential(*layers)
        self.to_joint = nn.ConvTranspose2d(c, channels + num_labels, 4, 2, 1)
        init_weights(self, cfg.init, cfg.init_gain)
        if cfg.g_spectral:
            apply_spectral_norm(self)

    @property
    def label_prior(self) -> torch.Tensor:
        """``[num_classes]`` training-set class counts (uniform ones before the trainer sets them)."""
        return self.input.label_prior

    @torch.no_grad()
    def set_label_prior(self, counts: torch.Tensor) -> None:
        """The training set's class counts ``[num_classes]``: what ``labels=None`` draws (kept in the checkpoint)."""
        self.input.label_prior.copy_(counts.float().clamp(min=0))

    def forward(self, z: torch.Tensor, mask_onehot: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.input is not None:
            z = self.input(z, labels)
        if z.dim() == 2:
            z = z[:, :, None, None]
        return torch.tanh(self.to_joint(self.body(z)))


class DCGANDiscriminator(nn.Module):
    """``D(joint [N, C + K, R, R], labels=None) -> logits [N]``; ``return_features=True`` adds each block's output.

    A label-conditional D needs ``labels [N]``. ``q_head`` (InfoGAN) is None unless ``model.info_*`` > 0;
    ``D.q_head(features[-1])`` gives Q's code predictions from the same trunk.
    """

    def __init__(self, cfg: ModelConfig, *, channels: int, num_labels: int, resolution: int):
        super().__init__()
        steps = check_resolution(resolution)
        self.channels, self.num_labels, self.resolution = channels, num_labels, resolution
        bias = cfg.d_norm == "none"
        self.num_classes = num_classes(cfg.condition)
        self.cond_d = cfg.cond_d if self.num_classes else ""
        in_ch = channels + num_labels + (self.num_classes if self.cond_d == "concat" else 0)
        r = resolution // 2
        c = width(cfg.d_filters, resolution, r)
        # no norm on the input layer (DCGAN): normalising raw pixels + one-hot would erase their statistics
        blocks = [
            nn.Sequential(
                nn.Conv2d(in_ch, c, 4, 2, 1), activation(cfg.d_activation, "model.d_activation")
            )
        ]
        for _ in range(steps - 1):
            r //= 2
            c_out = width(cfg.d_filters, resolution, r)
            blocks.append(_block(nn.Conv2d(c, c_out, 4, 2, 1, bias=bias), cfg.d_norm, cfg.d_activation, c_out, "d"))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.to_logit = nn.Conv2d(c, 1, START, 1, 0)
        self.projection = ProjectionHead(self.num_classes, c) if self.cond_d == "projection" else None
        self.q_head = QHead(c, cfg.info_cat, cfg.info_cont, START) if cfg.info_cat or cfg.info_cont else None
        # the heads are built after the trunk and init_weights skips embeddings, so an unconditional D draws
        # exactly the weights it always drew; the Q head gets the model's init like the trunk
        init_weights(self, cfg.init, cfg.init_gain)
        if cfg.d_spectral:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        if self.num_classes and labels is None:
            raise ValueError("this D is label-conditional (model.condition): pass labels [N]")
        if self.cond_d == "concat":
            x = torch.cat([x, label_maps(labels, self.num_classes, x)], dim=1)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        logits = self.to_logit(x).flatten()
        if self.projection is not None:
            logits = logits + self.projection(x, labels).to(logits.dtype)
        return (logits, features) if return_features else logits


@MODELS.register("dcgan")
def build_dcgan(cfg: ModelConfig, *, channels: int, num_labels: int, resolution: int) -> GANPair:
    """G and D of the DCGAN family for ``channels`` image channels, ``num_labels`` mask labels."""
    if channels < 1 or num_labels < 1:
        raise ConfigError(f"dcgan needs channels >= 1 and num_labels >= 1, got {channels}, {num_labels}")
    kw = dict(channels=channels, num_labels=num_labels, resolution=resolution)
    return GANPair(G=DCGANGenerator(cfg, **kw), D=DCGANDiscriminator(cfg, **kw))


# The GANs of §3.2 that are "the DCGAN with the loss swapped", plus their defaults. No G_ema (``ema_kimg=0``:
# G_ema is an exact copy of G): the paper's DCGAN-family code keeps none, and an average of batch-norm
# weights would be paired with G's batch statistics, not its own (book/deviations.md, "EMA").
NO_EMA = {"ema_kimg": 0.0}
GANS.register("dcgan")(GANSpec(model="dcgan", loss="dcgan", overrides=dict(NO_EMA)))
GANS.register("lsgan")(GANSpec(model="dcgan", loss="lsgan", overrides=dict(NO_EMA)))
GANS.register("hinge")(GANSpec(model="dcgan", loss="hinge", overrides=dict(NO_EMA)))
# Arjovsky et al.: 5 critic steps, clip 0.01, lr 5e-5 with RMSProp; Adam with beta1 = 0 is the momentum-
# free equivalent (momentum destabilises a clipped critic). Their critic keeps batch norm, so do we.
GANS.register("wgan")(
    GANSpec(model="dcgan", loss="wgan",
            overrides={**NO_EMA, "loss.n_critic": 5, "loss.clip": 0.01, "lr": 5e-5, "beta1": 0.0})
)
# Gulrajani et al.: GP weight 10, 5 critic steps, Adam(1e-4, 0, 0.9). The penalty is on each sample's
# gradient, which batch norm couples across the batch, so the critic uses (per-sample) instance norm.
GANS.register("wgan-gp")(
    GANSpec(
        model="dcgan",
        loss="wgan-gp",
        overrides={
            **NO_EMA,
            "loss.n_critic": 5,
            "loss.gp_weight": 10.0,
            "model.d_norm": "instance",
            "lr": 1e-4,
            "beta1": 0.0,
            "beta2": 0.9,
        },
    )
)
