"""StyleGAN2 (config F: skip generator, residual discriminator) in pure PyTorch, on the joint image + mask.

The networks follow Karras et al. 2020 ("Analyzing and improving the image quality of StyleGAN") and the
layout of NVlabs/stylegan2-ada-pytorch ``training/networks.py``, re-written without custom CUDA ops:

- **mapping**: ``z`` (2nd-moment normalised) -> ``cfg.mapping_layers`` fully connected layers with
  leaky ReLU and a learning-rate multiplier of 0.01 -> ``w``, broadcast to ``num_ws`` style vectors.
  ``w_avg`` (a buffer) tracks the mean ``w`` while training; truncation ``psi`` pulls ``w`` toward it
  at sampling time (``cfg.truncation``, only when G is in eval mode, i.e. G_ema / generation).
- **synthesis**: a learned constant 4x4 input, two modulated/demodulated 3x3 convolutions per
  resolution (the first upsamples through the ``[1, 3, 3, 1]`` filter), per-layer noise with a learned
  strength (fresh noise while training, a fixed noise buffer in eval mode, as the official snapshots and
  ``generate.py`` use), and a ``toRGB``-style 1x1 modulated convolution per resolution whose outputs are upsampled
  and summed (skip architecture). It emits ``C + K`` channels: the C image channels then K mask-score
  channels (``onehot_to_mask`` = argmax gives labels). Outputs are linear while training (as in the
  paper) and clamped to ``[-1, 1]`` in eval mode, so samples respect the joint contract.
- **style mixing**: while training, with probability ``cfg.style_mixing`` the batch switches to a second
  ``w`` from one random layer on (one cutoff for the whole batch, drawn as StyleGAN2-ADA's ``run_G`` draws
  it; tensor ops only: no data-dependent Python branches).
- **discriminator**: ``fromRGB`` at full resolution, residual blocks (3x3 conv, 3x3 conv + blur-downsample,
  1x1 blur-downsample skip, summed with gain sqrt(1/2)), minibatch standard deviation (``cfg.mbstd_group``),
  3x3 conv, two fully connected layers -> one logit per sample.
- **widths**: ``min(cfg.channel_base // r, cfg.channel_max)`` channels at resolution ``r``.
- **equalised learning rate** everywhere: weights are stored N(0, 1) (divided by the lr multiplier) and
  scaled at run time by ``lr_mul / sqrt(fan_in)``.

Modulated convolution has two numerically equal paths (tested against a per-sample reference):
``fused=True`` builds one weight per sample and runs a single grouped convolution (used at inference);
``fused=False`` scales activations before and after one shared-weight convolution (used in training:
cheaper backward, friendlier to cuDNN and ``torch.compile``).

Everything is ``deepcopy``-able (G_ema), ``channels_last``- and bf16-safe (minibatch-std and
demodulation run in float32), and free of Python control flow on tensor values.

``G.mapping``, ``G.synthesis`` and ``G.sample_ws`` are public so the loss (``medgan.losses.stylegan2``)
can regularise path length with respect to ``w``.

**Proven against the official code**: tests/test_stylegan2.py loads the weights of NVlabs/stylegan2-ada-pytorch
networks (tests/golden/, made by tools/golden/make_stylegan2_golden.py) into these networks and matches the
mapping, synthesis (fused and unfused), discriminator, modulated conv, resampling, R1 and path length to
1e-5; the parameter counts equal the official ones. The one deliberate difference: ``G`` clamps its output
to [-1, 1] in eval mode (the joint contract; the official generate.py clamps when it writes images).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medgan.errors import ConfigError
from medgan.models.ops import conv2d_resample, setup_filter, upsample2d
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec

CHANNEL_BASE = 16384  # channels at resolution r: min(channel_base // r, channel_max) (paper256: 16384)
SQRT2 = math.sqrt(2.0)


def _lrelu(x: torch.Tensor, gain: float = SQRT2) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * gain


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def channels_for(resolution: int, channel_max: int, channel_base: int = CHANNEL_BASE) -> int:
    return max(1, min(channel_base // resolution, channel_max))


def _log2_resolution(resolution: int) -> int:
    log2 = int(round(math.log2(resolution)))
    if resolution < 8 or 2**log2 != resolution:
        raise ValueError(f"StyleGAN2 needs a power-of-two resolution >= 8, got {resolution}")
    return log2


# ---------------------------------------------------------------------------------------------
# equalised-lr layers
# ---------------------------------------------------------------------------------------------
class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate: ``y = x @ (W * lr_mul / sqrt(in)).T + b * lr_mul``."""

    def __init__(self, in_features, out_features, *, bias=True, bias_init=0.0, lr_mul=1.0, activation="linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        return _lrelu(x) if self.activation == "lrelu" else x


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional blur-downsampling (``down=2``), bias and leaky ReLU."""

    def __init__(self, in_ch, out_ch, kernel, *, bias=True, activation="lrelu", down=1, act_gain=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.down = down
        self.activation = activation
        self.act_gain = act_gain  # extra gain after the activation (sqrt(1/2) in residual blocks)
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = conv2d_resample(
            x, self.weight * self.weight_gain, self.resample_filter, down=self.down, padding=self.padding
        )
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        if self.activation == "lrelu":
            return _lrelu(x, SQRT2 * self.act_gain)
        return x * self.act_gain if self.act_gain != 1.0 else x


# ---------------------------------------------------------------------------------------------
# modulated convolution
# ---------------------------------------------------------------------------------------------
def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    fused: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x [N, I, H, W]``, ``weight [O, I, k, k]``, ``styles [N, I]`` -> ``[N, O, H*up, W*up]``.

    Per sample n: ``w_n = weight * styles[n]`` (scaling input channels), then with ``demodulate``
    ``w_n /= sqrt(sum_{I,k,k} w_n^2 + 1e-8)`` per output channel, and ``y_n = conv(x_n, w_n)``.
    """
    n, in_ch = x.shape[0], x.shape[1]
    out_ch, _, kh, kw = weight.shape
    styles = styles.float()
    weight = weight.float()
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, k, k]
        if demodulate:
            w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        x = x.reshape(1, n * in_ch, *x.shape[2:])
        x = conv2d_resample(
            x, w.reshape(n * out_ch, in_ch, kh, kw), resample_filter, up=up, padding=padding, groups=n
        )
        return x.reshape(n, out_ch, *x.shape[2:])
    x = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
    x = conv2d_resample(x, weight, resample_filter, up=up, padding=padding)
    if demodulate:
        # sum_{i,k} (W_oik s_ni)^2 = sum_i s_ni^2 * sum_k W_oik^2: a [N, I] x [I, O] product, no [N, O, I, k, k]
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        x = x * dcoefs.to(x.dtype).reshape(n, out_ch, 1, 1)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling) + noise with learned strength + bias + leaky ReLU."""

    def __init__(self, in_ch, out_ch, w_dim, *, resolution, up=1, kernel=3):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        # Eval mode (G_ema, sample grids, generation) uses this fixed noise, as StyleGAN2-ADA's snapshots and
        # generate.py do (noise_mode='const'): sampling then draws nothing from the global RNG, so a
        # generated set depends on (checkpoint, z) only and side work never shifts the training streams.
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up = up
        self.padding = kernel // 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(
            x, self.weight, styles, fused=fused, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter,
        )
        n, _, h, wd = x.shape
        if self.training:
            noise = torch.randn(n, 1, h, wd, device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype).expand(n, 1, h, wd)
        noise = noise * self.noise_strength.to(x.dtype)
        return _lrelu(x + noise + self.bias.to(x.dtype).reshape(1, -1, 1, 1))


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation -> the ``C + K`` output channels (linear)."""

    def __init__(self, in_ch, out_ch, w_dim):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_gain = 1.0 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        # A 1x1 conv without demodulation is cheapest unfused (scale x, one shared conv).
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=False)
        return x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const | upsampling conv0], conv1, toRGB; img += up(img)."""

    def __init__(self, in_ch, out_ch, w_dim, resolution, out_channels):
        super().__init__()
        self.resolution = resolution
        self.is_first = in_ch == 0
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution=resolution, up=2)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution=resolution)
        self.torgb = ToRGBLayer(out_ch, out_channels, w_dim)
        self.num_conv = 1 if self.is_first else 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x, img, ws: torch.Tensor, fused: bool):
        """``ws [N, num_conv + 1, w_dim]`` (the last one, for toRGB, is shared with the next block's conv0)."""
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], fused)
        else:
            x = self.conv0(x, ws[:, 0], fused)
            x = self.conv1(x, ws[:, 1], fused)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class MappingNetwork(nn.Module):
    """``z [N, z_dim] -> ws [N, num_ws, w_dim]``; tracks ``w_avg`` while training; truncation."""

    def __init__(self, z_dim, w_dim, num_ws, *, num_layers=8, lr_mul=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], lr_mul=lr_mul, activation="lrelu") for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0, update_w_avg: bool = True) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        for layer in self.layers:
            x = layer(x)
        if self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1.0:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class SynthesisNetwork(nn.Module):
    """``ws [N, num_ws, w_dim] -> joint [N, C + K, R, R]`` (skip architecture)."""

    def __init__(self, w_dim, resolution, out_channels, channel_max, channel_base=CHANNEL_BASE):
        super().__init__()
        log2 = _log2_resolution(resolution)
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        blocks, num_ws, in_ch = [], 0, 0
        for res in self.resolutions:
            out_ch = channels_for(res, channel_max, channel_base)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, out_channels)
            blocks.append(block)
            num_ws += block.num_conv
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = num_ws + 1  # the last toRGB's w

    def forward(self, ws: torch.Tensor, *, fused: bool = False) -> torch.Tensor:
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], fused)
            w_idx += block.num_conv
        return img


class StyleGAN2Generator(nn.Module):
    """``G(z [N, z_dim], mask_onehot=None) -> joint [N, C + K, R, R]`` (unconditional)."""

    conditional = False

    def __init__(
        self,
        *,
        z_dim: int,
        w_dim: int,
        resolution: int,
        out_channels: int,
        channel_max: int,
        channel_base: int = CHANNEL_BASE,
        mapping_layers: int = 8,
        style_mixing: float = 0.9,
        truncation: float = 1.0,
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, resolution
        self.out_channels = out_channels
        self.style_mixing = float(style_mixing)
        self.truncation = float(truncation)
        self.synthesis = SynthesisNetwork(w_dim, resolution, out_channels, channel_max, channel_base)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers)
        # the path-length regulariser's running mean; a buffer so checkpoints carry it (see medgan.losses.stylegan2)
        self.register_buffer("pl_mean", torch.zeros([]))

    def sample_ws(self, z: torch.Tensor, truncation_psi: float | None = None) -> torch.Tensor:
        """Mapping + style mixing (training) or truncation (eval). ``-> ws [N, num_ws, w_dim]``."""
        if self.training:
            ws = self.mapping(z)
            if self.style_mixing > 0:
                # StyleGAN2-ADA's run_G, draw for draw (cutoff, coin, second z): one cutoff for the batch
                cutoff = torch.empty([], dtype=torch.int64, device=z.device).random_(1, self.num_ws)
                use = torch.rand([], device=z.device) < self.style_mixing
                cutoff = torch.where(use, cutoff, torch.full_like(cutoff, self.num_ws))
                ws2 = self.mapping(torch.randn_like(z), update_w_avg=False)
                layer = torch.arange(self.num_ws, device=z.device)
                ws = torch.where((layer >= cutoff).reshape(1, -1, 1), ws2, ws)
            return ws
        psi = self.truncation if truncation_psi is None else float(truncation_psi)
        return self.mapping(z, truncation_psi=psi)

    def forward(self, z: torch.Tensor, mask_onehot: torch.Tensor | None = None, *, truncation_psi=None):
        ws = self.sample_ws(z, truncation_psi)
        joint = self.synthesis(ws, fused=not self.training)
        if not self.training:
            joint = joint.clamp(-1.0, 1.0)
        return joint


# ---------------------------------------------------------------------------------------------
# discriminator
# ---------------------------------------------------------------------------------------------
def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append ``num_channels`` maps holding the std of features across groups of samples.

    The group is the largest size <= ``group_size`` that divides N (a shape, not a value, so this stays
    trace-friendly); statistics run in float32 for bf16 safety.
    """
    n, c, h, w = x.shape
    g = next(s for s in range(min(group_size, n), 0, -1) if n % s == 0)
    f = num_channels
    y = x.float().reshape(g, -1, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [N/g, F, c/F, H, W]
    y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)  # [N/g, F, 1, 1]
    y = y.repeat(g, 1, h, w)  # [N, F, H, W]
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: ``(skip_1x1_down(x) + conv_down(conv(x))) * sqrt(1/2)``; ``fromRGB`` on the first."""

    def __init__(self, in_ch, tmp_ch, out_ch, img_channels):
        super().__init__()
        self.fromrgb = Conv2dLayer(img_channels, tmp_ch, 1) if in_ch == 0 else None
        self.conv0 = Conv2dLayer(tmp_ch, tmp_ch, 3)
        self.conv1 = Conv2dLayer(tmp_ch, out_ch, 3, down=2, act_gain=math.sqrt(0.5))
        self.skip = Conv2dLayer(tmp_ch, out_ch, 1, bias=False, activation="linear", down=2, act_gain=math.sqrt(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return x + y


class StyleGAN2Discriminator(nn.Module):
    """``D(joint [N, C + K, R, R]) -> logits [N]``; ``return_features=True`` adds each block's output."""

    def __init__(self, *, resolution: int, in_channels: int, channel_max: int, mbstd_group: int = 4,
                 channel_base: int = CHANNEL_BASE):
        super().__init__()
        log2 = _log2_resolution(resolution)
        blocks = []
        for i, res in enumerate(2**k for k in range(log2, 2, -1)):
            tmp = channels_for(res, channel_max, channel_base)
            out = channels_for(res // 2, channel_max, channel_base)
            blocks.append(DiscriminatorBlock(0 if i == 0 else tmp, tmp, out, in_channels))
        self.blocks = nn.ModuleList(blocks)
        ch4 = channels_for(4, channel_max, channel_base)
        self.mbstd_group = mbstd_group
        self.conv = Conv2dLayer(ch4 + 1, ch4, 3)
        self.fc = FullyConnected(ch4 * 16, ch4, activation="lrelu")
        self.out = FullyConnected(ch4, 1)
        # ADA's augmentation probability; a buffer so checkpoints carry it (see medgan.losses.stylegan2)
        self.register_buffer("ada_p", torch.zeros([]))

    def forward(self, joint: torch.Tensor, return_features: bool = False):
        x = joint
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        feats.append(x)
        logits = self.out(x).squeeze(1).float()
        return (logits, feats) if return_features else logits


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
@MODELS.register("stylegan2")
def build_stylegan2(cfg, *, channels: int, num_labels: int, resolution: int) -> GANPair:
    """``cfg: ModelConfig``. Uses latent_dim (z), w_dim, mapping_layers, channel_base, channel_max, mbstd_group,
    style_mixing, truncation."""
    if cfg.channel_base < 1 or cfg.channel_max < 1 or cfg.mbstd_group < 1:
        raise ConfigError(f"model.channel_base ({cfg.channel_base}), channel_max ({cfg.channel_max}) and "
                          f"mbstd_group ({cfg.mbstd_group}) must be >= 1")
    joint = channels + num_labels
    G = StyleGAN2Generator(
        z_dim=cfg.latent_dim,
        w_dim=cfg.w_dim,
        resolution=resolution,
        out_channels=joint,
        channel_max=cfg.channel_max,
        channel_base=cfg.channel_base,
        mapping_layers=cfg.mapping_layers,
        style_mixing=cfg.style_mixing,
        truncation=cfg.truncation,
    )
    D = StyleGAN2Discriminator(resolution=resolution, in_channels=joint, channel_max=cfg.channel_max,
                               mbstd_group=cfg.mbstd_group, channel_base=cfg.channel_base)
    return GANPair(G=G, D=D)


# StyleGAN2-ADA's ``--cfg paper256`` (train.py): batch 64, Adam lr 0.0025 for G and D, betas (0, 0.99),
# eps 1e-8 (torch's default); R1 gamma 1 every 16 D steps; path length weight 2 every 4 G steps (its own
# G phase; batch shrink 2 and decay 0.01 are StyleGAN2Loss's); style mixing 0.9; mapping 8 layers at lr x0.01
# (MappingNetwork); z = w = 512; fmaps 0.5 -> channel_base 16384, channel_max 512; minibatch-std group 8;
# G_ema half-life 20 kimg without ramp-up; fp32. ADA's target 0.6 is what ``aug.ada_target`` is set to when
# adaptive augmentation is on (with ``aug.diffaugment``); it stays off by default, as paper256 has no ADA.
# Parameter counts equal the official networks' (tests/test_stylegan2.py).
PAPER256 = {
    "batch": 64,
    "lr": 0.0025,
    "lr_d": None,
    "beta1": 0.0,
    "beta2": 0.99,
    "ema_kimg": 20.0,
    "ema_rampup": 0.0,
    "amp": "off",
    "model.latent_dim": 512,
    "model.w_dim": 512,
    "model.mapping_layers": 8,
    "model.channel_base": 16384,
    "model.channel_max": 512,
    "model.mbstd_group": 8,
    "model.style_mixing": 0.9,
    "loss.r1_gamma": 1.0,
    "loss.r1_interval": 16,
    "loss.pl_weight": 2.0,
}
ADA_TARGET = 0.6  # StyleGAN2-ADA's default target r_t: set ``aug.ada_target`` to it to turn ADA on
GANS.register("stylegan2")(GANSpec(model="stylegan2", loss="stylegan2", overrides=dict(PAPER256)))

__all__ = [
    "StyleGAN2Generator",
    "StyleGAN2Discriminator",
    "MappingNetwork",
    "SynthesisNetwork",
    "modulated_conv2d",
    "minibatch_stddev",
    "build_stylegan2",
    "PAPER256",
    "ADA_TARGET",
]
