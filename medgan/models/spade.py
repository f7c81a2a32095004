"""SPADE (Park et al. 2019, "Semantic image synthesis with spatially-adaptive normalization") on image + mask.

SPADE is the one *conditional* model of the study: G paints an image for a given label mask.

- **Generator** (``G.conditional = True``): ``z [N, latent_dim]`` -> fully connected -> ``[N, ch, 4, 4]``,
  then one SPADE residual block at 4x4 and, per doubling of the resolution, nearest-neighbour 2x
  upsampling + a SPADE residual block; leaky ReLU, 3x3 conv, tanh -> the C image channels.
  ``G(z, mask_onehot)`` returns ``cat([image, mask_onehot])``: the mask channels are the input mask
  itself, so the joint contract holds and the generated pair's mask is exactly the conditioning mask.
  z gives the diversity (the official SPADE without its VAE encoder is deterministic given the mask).
- **SPADE normalisation**: a parameter-free norm (``cfg.g_norm``: batch as in the paper, or instance,
  or none) whose per-pixel scale ``1 + gamma`` and shift ``beta`` are predicted from the mask, resized
  to the feature map, by a small conv net with ``cfg.spade_hidden`` channels.
- **Discriminator**: ``cfg.d_scales`` PatchGAN discriminators (pix2pixHD ``NLayerDiscriminator``,
  4 layers, 4x4 kernels) on the joint input at full, 1/2, 1/4 ... resolution (3x3 average pooling
  between scales). ``D(joint) -> [N]`` is each sample's mean patch logit, averaged over scales (the
  generic contract); ``D(joint, return_features=True)`` also returns every layer's output of every
  scale, flat, scale by scale; ``SpadeDiscriminator.patch_logits(feats)`` picks the per-scale patch
  maps that the hinge loss needs (a hinge on each patch, not on their mean).
- Spectral norm (``cfg.g_spectral`` / ``cfg.d_spectral``, both on for ``--gan spade``) as in the paper.

**Where the 10,000 generation masks come from.** A conditional G cannot sample masks. For a synthetic
set, ``medgan.generate`` takes the masks of the training split and applies random geometric
augmentation (``medgan.data.transforms.random_geometric_masks``: rotation, shift, scale, flip, with
nearest-neighbour label resampling so masks stay valid label maps), then asks G for one image per mask.
It records ``"mask_source"`` in the generated set's ``dataset.json``, so downstream results can say that
SPADE's masks are (augmented) real masks, unlike StyleGAN2/DCGAN which sample the mask jointly.
This also means a SPADE set's masks are close to training masks by construction: memorisation metrics
on SPADE should be read on the image channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from medgan.models.registry import GANS, MODELS, GANPair, GANSpec


def _sn(module: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(module) if on else module


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; known: batch, instance, none")


class SPADE(nn.Module):
    """``norm(x) * (1 + gamma(mask)) + beta(mask)``; ``mask [N, K, h, w]`` already at ``x``'s size."""

    def __init__(self, channels: int, num_labels: int, hidden: int, norm: str):
        super().__init__()
        self.norm = _param_free_norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(num_labels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        actv = self.shared(mask)
        return self.norm(x) * (1 + self.gamma(actv)) + self.beta(actv)


class SPADEResBlock(nn.Module):
    """SPADE -> lrelu -> conv3x3, twice, plus a (learned when channels change) shortcut."""

    def __init__(self, fin: int, fout: int, num_labels: int, hidden: int, norm: str, spectral: bool):
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.norm_0 = SPADE(fin, num_labels, hidden, norm)
        self.conv_0 = _sn(nn.Conv2d(fin, fmid, 3, padding=1), spectral)
        self.norm_1 = SPADE(fmid, num_labels, hidden, norm)
        self.conv_1 = _sn(nn.Conv2d(fmid, fout, 3, padding=1), spectral)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, num_labels, hidden, norm)
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, mask)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, mask), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, mask), 0.2))
        return x_s + dx


class SpadeGenerator(nn.Module):
    """``G(z [N, z_dim], mask_onehot [N, K, R, R]) -> joint [N, C + K, R, R]`` = ``cat([image, mask_onehot])``."""

    conditional = True

    def __init__(
        self,
        *,
        z_dim: int,
        channels: int,
        num_labels: int,
        resolution: int,
        filters: int = 64,
        channel_max: int = 1024,
        hidden: int = 128,
        norm: str = "batch",
        spectral: bool = True,
    ):
        super().__init__()
        log2 = int(round(math.log2(resolution)))
        if resolution < 8 or 2**log2 != resolution:
            raise ValueError(f"SPADE needs a power-of-two resolution >= 8, got {resolution}")
        self.z_dim, self.channels, self.num_labels, self.resolution = z_dim, channels, num_labels, resolution
        # Channels halve per doubling toward the output (nf at R), capped at 16 nf as in the paper.
        self.resolutions = [2**i for i in range(2, log2 + 1)]

        def ch(r: int) -> int:
            return max(1, min(filters * (resolution // r), 16 * filters, channel_max))

        self.fc = nn.Linear(z_dim, ch(4) * 16)
        self.ch4 = ch(4)
        blocks = [SPADEResBlock(ch(4), ch(4), num_labels, hidden, norm, spectral)]
        for r in self.resolutions[1:]:
            blocks.append(SPADEResBlock(ch(r // 2), ch(r), num_labels, hidden, norm, spectral))
        self.blocks = nn.ModuleList(blocks)
        self.conv_img = nn.Conv2d(ch(resolution), channels, 3, padding=1)

    def forward(self, z: torch.Tensor, mask_onehot: torch.Tensor | None = None) -> torch.Tensor:
        if mask_onehot is None:
            raise ValueError("SPADE is conditional: G(z, mask_onehot) needs the [N, K, H, W] one-hot mask")
        seg = (mask_onehot.to(z.dtype) + 1) * 0.5  # {-1, +1} -> {0, 1}, the paper's one-hot label map
        x = self.fc(z).reshape(z.shape[0], self.ch4, 4, 4)
        for i, (r, block) in enumerate(zip(self.resolutions, self.blocks, strict=True)):
            if i > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            # Nearest resizing of a one-hot map keeps it one-hot (exact for power-of-two factors).
            seg_r = seg if r == self.resolution else F.interpolate(seg, size=(r, r), mode="nearest")
            x = block(x, seg_r.to(x.dtype))
        image = torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
        return torch.cat([image, mask_onehot.to(image.dtype)], dim=1)


class PatchDiscriminator(nn.Module):
    """pix2pixHD ``NLayerDiscriminator``: returns the output of each of its ``n_layers + 1`` stages."""

    def __init__(self, in_channels: int, filters: int, n_layers: int, norm: str, spectral: bool, channel_max: int):
        super().__init__()
        nf = max(1, min(filters, channel_max))
        stages = [nn.Sequential(nn.Conv2d(in_channels, nf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512, channel_max)
            stride = 1 if n == n_layers - 1 else 2
            layers = [_sn(nn.Conv2d(nf_prev, nf, 4, stride=stride, padding=2), spectral)]
            if norm == "instance":
                layers.append(nn.InstanceNorm2d(nf, affine=False))
            elif norm == "batch":
                layers.append(nn.BatchNorm2d(nf))
            layers.append(nn.LeakyReLU(0.2))
            stages.append(nn.Sequential(*layers))
        stages.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=2)))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class SpadeDiscriminator(nn.Module):
    """Multi-scale PatchGAN on ``joint [N, C + K, R, R]`` -> ``[N]`` (mean patch logit over scales)."""

    def __init__(
        self,
        *,
        in_channels: int,
        filters: int = 64,
        scales: int = 2,
        n_layers: int = 4,
        norm: str = "instance",
        spectral: bool = True,
        channel_max: int = 512,
    ):
        super().__init__()
        if scales < 1:
            raise ValueError(f"d_scales must be >= 1, got {scales}")
        self.n_stages = n_layers + 1
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, filters, n_layers, norm, spectral, channel_max) for _ in range(scales)
        )

    def patch_logits(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The per-scale patch maps ``[N, 1, h_s, w_s]`` inside a ``return_features`` list."""
        return feats[self.n_stages - 1 :: self.n_stages]

    def forward(self, joint: torch.Tensor, return_features: bool = False):
        x = joint
        feats: list[torch.Tensor] = []
        for i, D in enumerate(self.discriminators):
            if i > 0:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            feats.extend(D(x))
        patches = self.patch_logits(feats)
        logits = torch.stack([p.float().mean(dim=[1, 2, 3]) for p in patches]).mean(0)
        return (logits, feats) if return_features else logits


@MODELS.register("spade")
def build_spade(cfg, *, channels: int, num_labels: int, resolution: int) -> GANPair:
    """``cfg: ModelConfig``: latent_dim, g_filters, d_filters, channel_max, spade_hidden, g_norm, d_norm,
    g_spectral, d_spectral, d_scales."""
    G = SpadeGenerator(
        z_dim=cfg.latent_dim,
        channels=channels,
        num_labels=num_labels,
        resolution=resolution,
        filters=cfg.g_filters,
        channel_max=cfg.channel_max,
        hidden=cfg.spade_hidden,
        norm=cfg.g_norm,
        spectral=cfg.g_spectral,
    )
    D = SpadeDiscriminator(
        in_channels=channels + num_labels,
        filters=cfg.d_filters,
        scales=cfg.d_scales,
        norm=cfg.d_norm,
        spectral=cfg.d_spectral,
        channel_max=cfg.channel_max,
    )
    return GANPair(G=G, D=D)


# SPADE's defaults: TTUR (G lr 1e-4, D lr 4e-4, Adam betas (0, 0.9)), feature matching 10, a 256-d z,
# spectral norm in G and D, batch-norm SPADE in G, instance norm in D, 2 scales.
GANS.register("spade")(
    GANSpec(
        model="spade",
        loss="spade",
        overrides={
            "model.latent_dim": 256,
            "model.g_spectral": True,
            "model.d_spectral": True,
            "model.g_norm": "batch",
            "model.d_norm": "instance",
            "lr": 0.0001,
            "lr_d": 0.0004,
            "beta1": 0.0,
            "beta2": 0.9,
            "loss.fm_weight": 10.0,
        },
    )
)
