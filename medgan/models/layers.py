"""Shared building blocks: activation, normalisation, init and spectral-norm factories.

Each Table-1 knob is a registry entry, so a model asks ``ACTIVATIONS[cfg.g_activation]()`` instead of
branching on strings, and a new value is one decorated function. The names match
``medgan.config.ACTIVATIONS`` / ``NORMS`` / ``INITS`` (a test checks they agree).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medgan.errors import ConfigError
from medgan.registry import Registry

ACTIVATIONS: Registry = Registry("activation")  # name -> () -> nn.Module
NORMS: Registry = Registry("norm")  # name -> (channels) -> nn.Module
INITS: Registry = Registry("init")  # name -> (weight tensor, gain) -> None (in place)

ACTIVATIONS.register("relu")(lambda: nn.ReLU())
ACTIVATIONS.register("leakyrelu")(lambda: nn.LeakyReLU(0.2))  # DCGAN's slope
ACTIVATIONS.register("elu")(lambda: nn.ELU())
ACTIVATIONS.register("selu")(lambda: nn.SELU())

NORMS.register("batch")(lambda c: nn.BatchNorm2d(c))
# affine so that instance norm has the same learnable scale/shift as batch norm (a fair knob)
NORMS.register("instance")(lambda c: nn.InstanceNorm2d(c, affine=True))
NORMS.register("none")(lambda c: nn.Identity())


@INITS.register("normal")
def _init_normal(w: torch.Tensor, gain: float) -> None:
    nn.init.normal_(w, 0.0, gain)  # DCGAN: N(0, 0.02); gain is the standard deviation


@INITS.register("xavier")
def _init_xavier(w: torch.Tensor, gain: float) -> None:
    nn.init.xavier_normal_(w, gain=gain)


@INITS.register("xavier-uniform")
def _init_xavier_uniform(w: torch.Tensor, gain: float) -> None:
    nn.init.xavier_uniform_(w, gain=gain)


@INITS.register("kaiming")
def _init_kaiming(w: torch.Tensor, gain: float) -> None:
    # He et al. (fan_in, ReLU gain sqrt(2)) scaled by the searched gain, so the gain knob acts on every
    # init (SPADE's init_weights ignores it for kaiming; Table 1 crosses both knobs, so we don't).
    nn.init.kaiming_normal_(w, a=0.0, mode="fan_in", nonlinearity="relu")
    with torch.no_grad():
        w.mul_(gain)


def _lookup(reg: Registry, name: str, knob: str):
    try:
        return reg[name]
    except KeyError as e:
        raise ConfigError(f"{knob}: {e.args[0]}") from None


def activation(name: str, knob: str = "activation") -> nn.Module:
    return _lookup(ACTIVATIONS, name, knob)()


def norm(name: str, channels: int, knob: str = "norm") -> nn.Module:
    return _lookup(NORMS, name, knob)(channels)


CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
NORM_TYPES = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)


def init_weights(module: nn.Module, init: str, gain: float) -> None:
    """Initialise every conv/linear weight with ``INITS[init]`` (bias 0) and norm scales with N(1, gain).

    The norm rule is pix2pix/SPADE's ``init_weights``: the scale starts at 1 plus a little noise, shift 0.
    Call before ``apply_spectral_norm`` (the parametrisation then wraps the initialised weight).
    """
    fn: Callable[[torch.Tensor, float], None] = _lookup(INITS, init, "model.init")
    for m in module.modules():
        if isinstance(m, CONV_TYPES):
            fn(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_TYPES) and getattr(m, "weight", None) is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap the weight of every conv/linear in ``module`` with spectral normalisation (Miyato et al.)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, CONV_TYPES):
            spectral_norm(m)  # ConvTranspose2d gets dim=1 automatically
    return module
