"""SPADE (Park et al. 2019, "Semantic image synthesis with spatially-adaptive normalization") on image + mask.

SPADE is the one *conditional* model of the study: G paints an image for a given label mask. The paper
trained NVlabs/SPADE unchanged, so these networks are NVlabs/SPADE's ``SPADEGenerator`` and
``MultiscaleDiscriminator`` layer for layer, with upstream's module names (``fc``, ``head_0``,
``G_middle_0/1``, ``up_0..up_3``, ``conv_img``; ``discriminator_<i>.model<n>``) so that upstream weights load
by renaming the spectral-norm tensors only (``weight_orig``, ``weight_u``, ``weight_v`` -> ``parametrizations.weight.original``, ``.0._u``, ``.0._v``).
``tests/test_spade.py`` loads the golden vectors that ``tools/golden/make_spade_golden.py`` computed with the
official code and matches G, D, SPADE and the loss to 1e-5; the parameter counts equal upstream's.

- **Generator** (``G.conditional = True``), upstream's ``num_upsampling_layers normal``: the {0, 1} label
  map, nearest-downsampled to ``R/32 x R/32``, -> 3x3 conv to 16 nf channels -> ``head_0`` (16 nf) -> 2x ->
  ``G_middle_0``, ``G_middle_1`` (16 nf) -> 2x, ``up_0`` (8 nf) -> 2x, ``up_1`` (4 nf) -> 2x, ``up_2`` (2 nf)
  -> 2x, ``up_3`` (nf) -> lrelu(0.2), 3x3 conv to the C image channels, tanh. ``more`` adds a 2x between the
  middle blocks and ``most`` also an ``up_4`` (nf/2) (``model.spade_upsampling``; resolution a multiple of 32,
  64 or 128). Each block is ``SPADEResnetBlock``: SPADE -> lrelu -> conv3x3, twice, plus a shortcut (SPADE
  -> 1x1 conv when the width changes); spectral norm on those convs (``cfg.g_spectral``), computed as
  upstream's legacy ``torch.nn.utils.spectral_norm`` does (``UpstreamSpectralNorm``, a parametrisation).
  ``G(z, mask_onehot)`` returns ``cat([image, mask_onehot])``: the mask channels are the input mask itself,
  so the joint contract holds and the generated pair's mask is exactly the conditioning mask.
- **z.** Upstream without its VAE encoder (the paper's setting) is deterministic given the mask: G starts
  from the mask, and ``z`` is accepted and *ignored* (``model.spade_z=false``, the default). The diversity of
  a synthetic set then comes from the masks (below). ``model.spade_z=true`` is upstream's ``use_vae``
  generator path without the encoder: ``fc = Linear(z_dim, 16 nf * R/32 * R/32)`` on ``z ~ N(0, I)``.
- **SPADE normalisation**: a parameter-free norm (``cfg.g_norm``: batch as upstream's syncbatch on one
  device, or instance, or none) whose per-pixel scale ``1 + gamma`` and shift ``beta`` come from the label
  map, nearest-resized to the feature map, through a 3x3 conv net with ``cfg.spade_hidden`` (128) channels.
- **Discriminator**: ``cfg.d_scales`` (2) pix2pixHD ``NLayerDiscriminator`` s of ``cfg.d_layers`` (4) 4x4
  convs (widths ndf, 2 ndf, ... capped at 512; the middle ones spectral-normalised and followed by
  ``cfg.d_norm`` with their bias dropped, as upstream) at full, 1/2, ... resolution (3x3 average pooling
  between scales). D reads our joint ``[image, {-1, +1} one-hot]`` and feeds upstream's ``cat([{0, 1}
  label map, image])`` to every scale. ``D(joint) -> [N]`` is each sample's mean patch logit, averaged over
  scales (the generic contract); ``D(joint, return_features=True)`` also returns every layer's output of
  every scale, flat, scale by scale; ``SpadeDiscriminator.patch_logits(feats)`` picks the per-scale patch
  maps that the hinge loss needs (a hinge on each patch, not on their mean).
- **Init**: upstream's ``init_weights`` (xavier normal, gain 0.02; biases 0), ``model.init``/``init_gain``.

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

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from medgan.errors import ConfigError
from medgan.models.layers import INITS
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec

# NVlabs/SPADE's --num_upsampling_layers: doublings from the first feature map to the output.
UPSAMPLING = {"normal": 5, "more": 6, "most": 7}


class UpstreamSpectralNorm(nn.Module):
    """Spectral norm exactly as upstream's ``torch.nn.utils.spectral_norm`` computes it, as a parametrisation.

    One power iteration per training-mode forward in the legacy order (``v = N(W^T u)`` then ``u = N(W v)``),
    then ``W / (u^T W v)``; eval mode reuses the stored vectors. PyTorch's ``parametrizations.spectral_norm``
    iterates ``u`` first (and runs 15 iterations at creation), which gives a different sigma after each
    step; with this one the golden vectors of NVlabs/SPADE match to float rounding.
    """

    def __init__(self, weight: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        with torch.no_grad():
            u = F.normalize(weight.new_empty(weight.shape[0]).normal_(0, 1), dim=0, eps=eps)
            v = F.normalize(weight.new_empty(weight[0].numel()).normal_(0, 1), dim=0, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mat = weight.flatten(1)
        if self.training:
            with torch.no_grad():
                v = F.normalize(torch.mv(mat.t(), self._u.to(mat.dtype)), dim=0, eps=self.eps)
                u = F.normalize(torch.mv(mat, v), dim=0, eps=self.eps)
                self._v.copy_(v)
                self._u.copy_(u)
        sigma = torch.dot(self._u.clone().to(mat.dtype), torch.mv(mat, self._v.clone().to(mat.dtype)))
        return weight / sigma


def _sn(module: nn.Module, on: bool) -> nn.Module:
    if on:
        parametrize.register_parametrization(module, "weight", UpstreamSpectralNorm(module.weight))
    return module


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; known: batch, instance, none")


def init_spade_weights(net: nn.Module, init: str, gain: float) -> None:
    """NVlabs/SPADE's ``BaseNetwork.init_weights``: every conv/linear weight by ``INITS[init]`` (xavier
    normal, gain 0.02 by default), biases 0, affine batch-norm scales N(1, gain). Spectral-normalised
    layers are initialised through their unnormalised weight (upstream's ``weight_orig``)."""
    fn = INITS[init]
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                if parametrize.is_parametrized(m, "weight"):
                    fn(m.parametrizations.weight.original, gain)
                else:
                    fn(m.weight, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)


class SPADE(nn.Module):
    """``param_free_norm(x) * (1 + mlp_gamma(a)) + mlp_beta(a)``, ``a = mlp_shared(seg resized to x)``.

    ``seg [N, K, H, W]`` is the {0, 1} one-hot label map at any size (nearest-resized here, as upstream).
    """

    def __init__(self, channels: int, num_labels: int, hidden: int = 128, norm: str = "batch"):
        super().__init__()
        self.param_free_norm = _param_free_norm(norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(num_labels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        if seg.shape[2:] != x.shape[2:]:
            seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg.to(x.dtype))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE -> lrelu(0.2) -> conv3x3, twice, plus a shortcut (SPADE -> 1x1 conv when fin != fout)."""

    def __init__(self, fin: int, fout: int, num_labels: int, hidden: int, norm: str, spectral: bool):
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = _sn(nn.Conv2d(fin, fmiddle, 3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)
        self.norm_0 = SPADE(fin, num_labels, hidden, norm)
        self.norm_1 = SPADE(fmiddle, num_labels, hidden, norm)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, num_labels, hidden, norm)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class SpadeGenerator(nn.Module):
    """``G(z [N, z_dim], mask_onehot [N, K, R, R]) -> joint [N, C + K, R, R]`` = ``cat([image, mask_onehot])``.

    NVlabs/SPADE's ``SPADEGenerator``; ``z`` is ignored unless ``z_input`` (see the module docstring).
    """

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
        upsampling: str = "normal",
        z_input: bool = False,
    ):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ConfigError(f"model.spade_upsampling={upsampling!r} is not one of {list(UPSAMPLING)}")
        n_up = UPSAMPLING[upsampling]
        if resolution < 2**n_up or resolution % 2**n_up:
            raise ValueError(f"SPADE with {upsampling!r} upsampling ({n_up} doublings) needs a resolution that is a "
                             f"multiple of {2**n_up}, got {resolution} (a power-of-two size >= {2**n_up})")
        self.z_dim, self.channels, self.num_labels, self.resolution = z_dim, channels, num_labels, resolution
        self.upsampling, self.z_input = upsampling, z_input
        self.sh = resolution // 2**n_up  # upstream's sh = sw (square images)

        def ch(mult: float) -> int:
            return max(1, min(int(mult * filters), channel_max))

        self.c_head = ch(16)
        if z_input:  # upstream's use_vae path (z ~ N(0, I), no encoder)
            self.fc = nn.Linear(z_dim, self.c_head * self.sh * self.sh)
        else:  # upstream default: the label map downsampled to sh x sh, then a 3x3 conv
            self.fc = nn.Conv2d(num_labels, self.c_head, 3, padding=1)

        def block(fin: int, fout: int) -> SPADEResnetBlock:
            return SPADEResnetBlock(fin, fout, num_labels, hidden, norm, spectral)

        self.head_0 = block(ch(16), ch(16))
        self.G_middle_0 = block(ch(16), ch(16))
        self.G_middle_1 = block(ch(16), ch(16))
        self.up_0 = block(ch(16), ch(8))
        self.up_1 = block(ch(8), ch(4))
        self.up_2 = block(ch(4), ch(2))
        self.up_3 = block(ch(2), ch(1))
        final = ch(1)
        if upsampling == "most":
            self.up_4 = block(ch(1), ch(0.5))
            final = ch(0.5)
        self.conv_img = nn.Conv2d(final, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, mask_onehot: torch.Tensor | None = None) -> torch.Tensor:
        if mask_onehot is None:
            raise ValueError("SPADE is conditional: G(z, mask_onehot) needs the [N, K, H, W] one-hot mask")
        seg = (mask_onehot.to(z.dtype) + 1) * 0.5  # {-1, +1} -> {0, 1}, upstream's one-hot label map
        if self.z_input:
            x = self.fc(z).view(z.shape[0], self.c_head, self.sh, self.sh)
        else:
            x = self.fc(F.interpolate(seg, size=(self.sh, self.sh), mode="nearest"))
        x = self.head_0(x, seg)
        x = self.G_middle_0(_up(x), seg)
        if self.upsampling != "normal":
            x = _up(x)
        x = self.G_middle_1(x, seg)
        for blk in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = blk(_up(x), seg)
        if self.upsampling == "most":
            x = self.up_4(_up(x), seg)
        image = torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
        return torch.cat([image, mask_onehot.to(image.dtype)], dim=1)


def _norm_layer(conv: nn.Conv2d, norm: str, spectral: bool) -> nn.Module:
    """Upstream's ``get_nonspade_norm_layer``: spectral norm, then (bias dropped) batch/instance norm."""
    conv = _sn(conv, spectral)
    if norm == "none":
        return conv
    if norm == "batch":
        return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels, affine=True))
    if norm == "instance":
        return nn.Sequential(conv, nn.InstanceNorm2d(conv.out_channels, affine=False))
    raise ValueError(f"unknown norm {norm!r}; known: batch, instance, none")


class NLayerDiscriminator(nn.Module):
    """pix2pixHD/SPADE PatchGAN: ``model0 .. model{n_layers}``; returns the output of each."""

    def __init__(self, in_channels: int, filters: int, n_layers: int, norm: str, spectral: bool, channel_max: int):
        super().__init__()
        nf = max(1, min(filters, channel_max))
        seq = [[nn.Conv2d(in_channels, nf, 4, stride=2, padding=2), nn.LeakyReLU(0.2)]]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512, channel_max)
            stride = 1 if n == n_layers - 1 else 2
            conv = nn.Conv2d(nf_prev, nf, 4, stride=stride, padding=2, bias=norm == "none")
            seq.append([_norm_layer(conv, norm, spectral), nn.LeakyReLU(0.2)])
        seq.append([nn.Conv2d(nf, 1, 4, stride=1, padding=2)])
        self.n_stages = len(seq)
        for n, layers in enumerate(seq):
            self.add_module(f"model{n}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.children():
            x = stage(x)
            feats.append(x)
        return feats


class SpadeDiscriminator(nn.Module):
    """Multi-scale PatchGAN on ``joint [N, C + K, R, R]`` -> ``[N]`` (mean patch logit over scales).

    With ``label_channels = K`` the last K channels (the {-1, +1} one-hot) become upstream's {0, 1} label
    map and go first: every scale sees ``cat([seg, image])``, as upstream's ``discriminate`` builds it.
    """

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
        label_channels: int = 0,
    ):
        super().__init__()
        if scales < 1 or n_layers < 1:
            raise ValueError(f"d_scales and d_layers must be >= 1, got {scales} and {n_layers}")
        self.label_channels = label_channels
        self.n_stages = n_layers + 1
        self.scales = scales
        for i in range(scales):
            D = NLayerDiscriminator(in_channels, filters, n_layers, norm, spectral, channel_max)
            self.add_module(f"discriminator_{i}", D)

    def patch_logits(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The per-scale patch maps ``[N, 1, h_s, w_s]`` inside a ``return_features`` list."""
        return feats[self.n_stages - 1 :: self.n_stages]

    def forward(self, joint: torch.Tensor, return_features: bool = False):
        x = joint
        if self.label_channels:
            c = joint.shape[1] - self.label_channels
            x = torch.cat([(joint[:, c:] + 1) * 0.5, joint[:, :c]], dim=1)
        feats: list[torch.Tensor] = []
        for i, D in enumerate(self.children()):
            if i > 0:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            feats.extend(D(x))
        patches = self.patch_logits(feats)
        logits = torch.stack([p.float().mean(dim=[1, 2, 3]) for p in patches]).mean(0)
        return (logits, feats) if return_features else logits


@MODELS.register("spade")
def build_spade(cfg, *, channels: int, num_labels: int, resolution: int) -> GANPair:
    """``cfg: ModelConfig``: latent_dim, g_filters, d_filters, channel_max, spade_hidden, g_norm, d_norm,
    g_spectral, d_spectral, d_scales, d_layers, spade_upsampling, spade_z, init, init_gain."""
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
        upsampling=cfg.spade_upsampling,
        z_input=cfg.spade_z,
    )
    D = SpadeDiscriminator(
        in_channels=channels + num_labels,
        filters=cfg.d_filters,
        scales=cfg.d_scales,
        n_layers=cfg.d_layers,
        norm=cfg.d_norm,
        spectral=cfg.d_spectral,
        channel_max=cfg.channel_max,
        label_channels=num_labels,
    )
    init_spade_weights(G, cfg.init, cfg.init_gain)
    init_spade_weights(D, cfg.init, cfg.init_gain)
    return GANPair(G=G, D=D)


# NVlabs/SPADE's train.py defaults (options/{base,train}_options.py, SPADEGenerator, MultiscaleDiscriminator,
# NLayerDiscriminator): ngf = ndf = 64, norm_G spectralspadesyncbatch3x3 (batch norm on one device), norm_D
# spectralinstance, num_D 2, n_layers_D 4, gan_mode hinge, lambda_feat 10, lambda_vgg 10 (VGG19), TTUR
# (lr 2e-4 -> G 1e-4, D 4e-4), Adam (0, 0.9), init xavier 0.02, z_dim 256 (used only with spade_z); no
# generator average (ema_kimg 0: G_ema is an exact copy of G, batch-norm statistics included).
GANS.register("spade")(
    GANSpec(
        model="spade",
        loss="spade",
        overrides={
            "ema_kimg": 0.0,
            "model.latent_dim": 256,
            "model.g_filters": 64,
            "model.d_filters": 64,
            "model.channel_max": 1024,
            "model.spade_hidden": 128,
            "model.g_spectral": True,
            "model.d_spectral": True,
            "model.g_norm": "batch",
            "model.d_norm": "instance",
            "model.d_scales": 2,
            "model.d_layers": 4,
            "model.spade_upsampling": "normal",
            "model.spade_z": False,
            "model.init": "xavier",
            "model.init_gain": 0.02,
            "lr": 0.0001,
            "lr_d": 0.0004,
            "beta1": 0.0,
            "beta2": 0.9,
            "loss.fm_weight": 10.0,
            "loss.vgg_weight": 10.0,
            "loss.vgg_features": "vgg19",
        },
    )
)
