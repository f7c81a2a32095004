"""Generators and discriminators, chosen by name: ``MODELS["dcgan"](cfg, channels=, num_labels=, resolution=)``.

Networks only: their losses live in ``medgan.losses`` (which may import this package, never the reverse).
Importing this package registers every model and GAN spec (``MODELS``, ``GANS``).
"""

from __future__ import annotations

from medgan.models import dcgan, ebgan, pix2pix, spade, stylegan2
from medgan.models.registry import GANS, MODELS, GANPair, GANSpec

__all__ = ["GANS", "MODELS", "GANPair", "GANSpec", "dcgan", "spade", "stylegan2", "pix2pix", "ebgan"]
