"""Frozen VGG16 feature extractor for the perceptual (VGG) loss term.

Weights are never downloaded: ``load_vgg("vgg16")`` reads torchvision's ``vgg16-397923af.pth`` from
``$MEDGAN_VGG_WEIGHTS`` (a file path) or ``$TORCH_HOME/hub/checkpoints/`` and raises one
``VGGWeightsNotFoundError`` naming the path when it is absent. ``load_vgg("vgg16-random")`` builds the
same network with fixed-seed random weights — a labelled stand-in for tests and the quick profile
(``vgg.name`` says which, so every output records it); never compare its numbers with pretrained ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from medgan.errors import ConfigError, WeightsNotFoundError

VGG16_FILE = "vgg16-397923af.pth"
VGG_FEATURES = ("vgg16", "vgg16-random")
# indices of relu1_2, relu2_2, relu3_3, relu4_3 in torchvision's vgg16().features
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
RANDOM_SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsNotFoundError(WeightsNotFoundError):
    """The pretrained VGG16 file is not on this machine (we never download it); a ``UserError``."""


def vgg_weights_path() -> Path:
    """Where the pretrained weights are looked up: ``$MEDGAN_VGG_WEIGHTS`` or the torch hub cache."""
    env = os.environ.get("MEDGAN_VGG_WEIGHTS")
    if env:
        return Path(env)
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def _vgg16_trunk() -> nn.Sequential:
    """``vgg16().features`` up to relu4_3 (the classifier's 120 M parameters are never built)."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"], batch_norm=False)[: TAPS["relu4_3"] + 1]


class VGGFeatures(nn.Module):
    """``vgg(image [N, C, H, W] in [-1, 1]) -> [relu1_2, relu2_2, relu3_3, relu4_3]`` feature maps.

    Grayscale (C = 1) is replicated to 3 channels; inputs are mapped to [0, 1] then ImageNet-normalised,
    as torchvision's weights expect. Parameters are frozen and the module stays in eval mode.
    """

    def __init__(self, trunk: nn.Sequential, name: str):
        super().__init__()
        self.trunk = trunk
        self.name = name
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
        x = ((image + 1) / 2 - self.mean) / self.std
        taps = set(TAPS.values())
        out = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out


def load_vgg(features: str = "vgg16") -> VGGFeatures:
    """The frozen extractor named ``features`` (``"vgg16"`` or ``"vgg16-random"``), on the CPU."""
    if features not in VGG_FEATURES:
        raise ConfigError(f"loss.vgg_features={features!r} is not one of {list(VGG_FEATURES)}")
    if features == "vgg16-random":
        # fork the RNG so building the stand-in does not shift the training run's random stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            trunk = _vgg16_trunk()
        return VGGFeatures(trunk, "vgg16-random")
    path = vgg_weights_path()
    if not path.is_file():
        raise VGGWeightsNotFoundError(
            f"VGG16 weights not found at {path} (torchvision file {VGG16_FILE}); copy it there or set "
            f"MEDGAN_VGG_WEIGHTS, or pass --set loss.vgg_features=vgg16-random for labelled random features"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    trunk = _vgg16_trunk()
    prefix = "features."
    wanted = {
        k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and int(k.split(".")[1]) < len(trunk)
    }
    try:
        trunk.load_state_dict(wanted, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{path} is not a torchvision VGG16 checkpoint: {e}") from None
    return VGGFeatures(trunk, "vgg16")
