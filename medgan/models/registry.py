"""Model and GAN registries.

``MODELS[name](cfg, channels=C, num_labels=K, resolution=R) -> GANPair`` builds G and D.
``GANS[name]`` is a ``GANSpec``: which model + loss a ``medgan train --gan NAME`` means, and the
config overrides that make it that GAN (e.g. WGAN's n_critic and clipping).

The model contract every trainer/loss/generate call relies on:
- ``G.z_dim: int``; ``G.conditional: bool`` (True: G needs the mask, as SPADE does).
- ``G(z [N, z_dim], mask_onehot [N, K, H, W] | None) -> joint [N, C + K, H, W]``: the C image channels
  (tanh range [-1, 1]) then K mask-score channels in [-1, 1]; ``onehot_to_mask`` (argmax) gives labels.
  A conditional G returns its input one-hot as the mask channels, so D always sees the joint pair.
- ``D(joint [N, C + K, H, W]) -> logits [N]``; ``D(joint, return_features=True) -> (logits, [features])``.

Labels and InfoGAN codes (``medgan.models.conditional``; the DCGAN backbone implements them, the others refuse
the knobs with one ``ConfigError`` via ``conditional.check_label_support``):
- ``G.num_classes: int`` (0 = unconditional; absent counts as 0). A label-conditional G is called
  ``G(z, mask_onehot, labels=labels [N] int64)``; ``labels=None`` draws the classes in the proportions of its
  ``label_prior`` buffer (so the trainer's grids and metric hooks, which pass no labels, still work).
- ``D(joint, labels=labels [N])`` for a label-conditional D (``labels=None`` there is an error); an
  unconditional model is never passed ``labels`` (every existing model keeps its two-argument call).
- InfoGAN: ``G.info_cat`` / ``G.info_cont`` (the codes are computed from the last dims of z:
  ``conditional.codes_from_z``) and ``D.q_head`` (None when off): ``D.q_head(features[-1]) -> (cat_logits
  [N, K] | None, cont_mean [N, L] | None)`` on the features ``D(x, return_features=True)`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medgan.registry import Registry


@dataclass
class GANPair:
    G: nn.Module
    D: nn.Module


@dataclass(frozen=True)
class GANSpec:
    model: str
    loss: str
    overrides: dict[str, Any] = field(default_factory=dict)  # --set style keys -> values


MODELS: Registry = Registry("model")
GANS: Registry = Registry("gan")
