"""Generators and discriminators, chosen by name: ``MODELS["dcgan"](cfg, channels=, num_labels=, resolution=)``.

Importing this package registers every model and GAN spec (``MODELS``, ``GANS``). Models still being
written by other features (StyleGAN2, SPADE) are imported when their module exists.
"""

from __future__ import annotations

import importlib

from medgan.models import dcgan  # noqa: F401  (registers "dcgan" and the DCGAN-family GANS)
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec

for _name in ("medgan.models.stylegan2", "medgan.models.spade"):
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _e:
        if _e.name != _name:  # the module exists but something it imports is missing: a real error
            raise

__all__ = ["GANS", "MODELS", "GANPair", "GANSpec", "dcgan"]
