"""The adversarial losses and training tricks (paper §3.2–3.3, Table 1), chosen by name: ``LOSSES[name]``.

``GANLoss`` (``base``) is the contract the trainer programs against: its docstring lists the methods and
the capability flags. The losses: ``classic`` (dcgan, lsgan, wgan, wgan-gp, hinge), ``stylegan2``,
``spade``; the terms they compose are in ``terms``. Importing this package registers every loss.
"""

from __future__ import annotations

from medgan.losses.base import LOSSES, GANLoss, Terms, build_loss
from medgan.losses.classic import DCGANLoss, HingeLoss, LSGANLoss, MinimaxLoss, WGANGPLoss, WGANLoss
from medgan.losses.ebgan import EBGANLoss, margin_loss, pulling_away
from medgan.losses.fgan import DIVERGENCES, FDivergence, FGANLoss, variational_objective
from medgan.losses.pix2pix import Pix2PixLoss
from medgan.losses.spade import SpadeLoss
from medgan.losses.stylegan2 import StyleGAN2Loss
from medgan.losses.terms import (
    feature_matching,
    gradient_penalty,
    paired_feature_matching,
    path_length_penalty,
    r1_penalty,
    vgg_loss,
)

__all__ = [
    "LOSSES",
    "GANLoss",
    "Terms",
    "build_loss",
    "DCGANLoss",
    "LSGANLoss",
    "WGANLoss",
    "WGANGPLoss",
    "HingeLoss",
    "MinimaxLoss",
    "FGANLoss",
    "FDivergence",
    "DIVERGENCES",
    "variational_objective",
    "EBGANLoss",
    "margin_loss",
    "pulling_away",
    "StyleGAN2Loss",
    "SpadeLoss",
    "Pix2PixLoss",
    "feature_matching",
    "gradient_penalty",
    "paired_feature_matching",
    "path_length_penalty",
    "r1_penalty",
    "vgg_loss",
]
