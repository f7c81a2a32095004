"""Frozen VGG feature extractors for the perceptual (VGG) loss term.

Two networks, each with a labelled random-weights stand-in (``loss.vgg_features``):

- ``vgg16``: relu1_2, relu2_2, relu3_3, relu4_3 of torchvision's VGG16 on ImageNet-normalised input,
  equal layer weights — the DCGAN-family term (see ``medgan.losses.classic``).
- ``vgg19``: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of torchvision's VGG19 with layer weights
  1/32, 1/16, 1/8, 1/4, 1 — NVlabs/SPADE's ``VGGLoss`` (``--gan spade``). As upstream, the [-1, 1] image goes
  into VGG19 as it is (upstream feeds G's tanh output without ImageNet normalisation).

Weights are never downloaded: ``load_vgg("vgg16")`` reads torchvision's ``vgg16-397923af.pth`` from
``$MEDGAN_VGG_WEIGHTS`` (a file path) or ``$TORCH_HOME/hub/checkpoints/``; ``load_vgg("vgg19")`` reads
``vgg19-dcbb9e9d.pth`` from ``$MEDGAN_VGG19_WEIGHTS`` or the same folder. A missing file is one
``VGGWeightsNotFoundError`` naming the file and the path. ``load_vgg("vgg16-random")`` / ``"vgg19-random"``
build the same network with fixed-seed random weights (``torch.manual_seed(0)``, torchvision's
``make_layers``, PyTorch's default conv init) — labelled stand-ins for tests and the quick profile
(``vgg.name`` says which, so every output records it); never compare their numbers with pretrained ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medgan.errors import ConfigError, WeightsNotFoundError

VGG16_FILE = "vgg16-397923af.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG_FEATURES = ("vgg16", "vgg16-random", "vgg19", "vgg19-random")
# indices of relu1_2, relu2_2, relu3_3, relu4_3 in torchvision's vgg16().features
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
# indices of relu1_1 ... relu5_1 in torchvision's vgg19().features (upstream SPADE's VGG19 slices)
TAPS19 = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
VGG19_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
RANDOM_SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VGGSpec:
    arch: str  # torchvision cfgs key
    file: str
    env: str
    taps: dict[str, int]
    layer_weights: tuple[float, ...]
    imagenet_normalize: bool


SPECS = {
    "vgg16": VGGSpec("D", VGG16_FILE, "MEDGAN_VGG_WEIGHTS", TAPS, (1.0,) * len(TAPS), True),
    "vgg19": VGGSpec("E", VGG19_FILE, "MEDGAN_VGG19_WEIGHTS", TAPS19, VGG19_LAYER_WEIGHTS, False),
}


class VGGWeightsNotFoundError(WeightsNotFoundError):
    """The pretrained VGG file is not on this machine (we never download it); a ``UserError``."""


def vgg_weights_path(net: str = "vgg16") -> Path:
    """Where the pretrained weights of ``net`` (vgg16 | vgg19) are looked up: its env var or the torch hub cache."""
    spec = SPECS[net]
    env = os.environ.get(spec.env)
    if env:
        return Path(env)
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.file


def _trunk(net: str) -> nn.Sequential:
    """``vggXX().features`` up to the last tap (the classifier's 120 M parameters are never built)."""
    from torchvision.models.vgg import cfgs, make_layers

    spec = SPECS[net]
    return make_layers(cfgs[spec.arch], batch_norm=False)[: max(spec.taps.values()) + 1]


class VGGFeatures(nn.Module):
    """``vgg(image [N, C, H, W] in [-1, 1]) -> [feature map per tap]``; ``vgg.layer_weights`` weighs them.

    Grayscale (C = 1) is replicated to 3 channels; with ``imagenet_normalize`` inputs are mapped to [0, 1]
    then ImageNet-normalised (vgg16), otherwise fed as they are (vgg19, as upstream SPADE). Parameters are
    frozen and the module stays in eval mode.
    """

    def __init__(self, trunk: nn.Sequential, name: str, *, taps: dict[str, int] | None = None,
                 layer_weights: tuple[float, ...] | None = None, imagenet_normalize: bool = True):
        super().__init__()
        self.trunk = trunk
        self.name = name
        self.taps = dict(taps if taps is not None else TAPS)
        self.layer_weights = tuple(layer_weights if layer_weights is not None else (1.0,) * len(self.taps))
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # a fixed feature space: never leave eval mode

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        elif image.shape[1] != 3:
            raise ValueError(f"VGG features need 1 or 3 image channels, got {image.shape[1]}")
        x = ((image + 1) / 2 - self.mean) / self.std if self.imagenet_normalize else image
        taps = set(self.taps.values())
        out = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out


def load_vgg(features: str = "vgg16") -> VGGFeatures:
    """The frozen extractor named ``features`` (``vgg16``, ``vgg19`` or their ``-random`` stand-ins), on the CPU."""
    if features not in VGG_FEATURES:
        raise ConfigError(f"loss.vgg_features={features!r} is not one of {list(VGG_FEATURES)}")
    net = features.removesuffix("-random")
    spec = SPECS[net]
    kw = dict(taps=spec.taps, layer_weights=spec.layer_weights, imagenet_normalize=spec.imagenet_normalize)
    if features.endswith("-random"):
        # fork the RNG so building the stand-in does not shift the training run's random stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            trunk = _trunk(net)
        return VGGFeatures(trunk, features, **kw)
    path = vgg_weights_path(net)
    if not path.is_file():
        raise VGGWeightsNotFoundError(
            f"{net.upper()} weights not found at {path} (torchvision file {spec.file}); copy it there or set "
            f"{spec.env}, or pass --set loss.vgg_features={net}-random for labelled random features"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    trunk = _trunk(net)
    prefix = "features."
    wanted = {
        k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and int(k.split(".")[1]) < len(trunk)
    }
    try:
        trunk.load_state_dict(wanted, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{path} is not a torchvision {net.upper()} checkpoint: {e}") from None
    return VGGFeatures(trunk, net, **kw)
