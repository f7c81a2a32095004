"""f-GAN (Nowozin, Cseke & Tomioka 2016): variational divergence minimisation on the DCGAN backbone.

For a convex ``f`` with ``f(1) = 0`` the f-divergence is ``D_f(P‖Q) = ∫ q(x) f(p(x)/q(x)) dx``, and for any
function T, ``D_f(P‖Q) >= E_P[T(x)] - E_Q[f*(T(x))]`` (Fenchel conjugate ``f*``), with equality at
``T = f'(p/q)``. D outputs an unbounded logit ``v``; the *output activation* ``g_f`` maps it into the
domain of ``f*`` (``T = g_f(v)``). Table 2 of the paper, with ``σ`` the logistic sigmoid:

=============  =========================  ============================  ===========================
``kl``         f(u) = u log u             g_f(v) = v                    f*(t) = exp(t - 1)
``rkl``        f(u) = -log u              g_f(v) = -exp(-v)             f*(t) = -1 - log(-t)
``js``         f(u) = u log u             g_f(v) = log 2 - log(1+e^-v)  f*(t) = -log(2 - exp(t))
               - (u+1) log((u+1)/2)
``pearson``    f(u) = (u - 1)²            g_f(v) = v                    f*(t) = t²/4 + t
``hellinger``  f(u) = (√u - 1)²           g_f(v) = 1 - exp(-v)          f*(t) = t/(1 - t)
=============  =========================  ============================  ===========================

``f*(g_f(v))`` is computed in a closed form that cannot overflow where the literal composition would
(``js``: softplus(v) - log 2; ``rkl``: v - 1; ``hellinger``: exp(v) - 1).

*The js row.* Table 2's ``f`` for Jensen-Shannon integrates to ``∫ p log(2p/(p+q)) + q log(2q/(p+q))``,
which is **twice** the usual JS divergence (Table 1 prints a ½ that this ``f`` and its conjugate do not
carry). We keep Table 2's pair (the one the paper trains with) and say so wherever the value is reported.

**Objectives.** D maximises ``F(v) = E_P[g_f(v)] - E_Q[f*(g_f(v))]``, so ``d_adv = -F`` (P = real,
Q = G's); at D's optimum ``-d_adv`` estimates ``D_f(real‖fake)``. G minimises the paper's *alternative*
``-E_Q[g_f(v)]`` (their "practical considerations", generalising Goodfellow et al.'s non-saturating loss):
it keeps the stationary point of the saddle objective ``E_Q[-f*(g_f(v))]`` (there ``T = f'(1)`` and
``f*'(T) = 1``) but gives G strong gradients while its samples are poor, where the saddle's vanish.

**What the trainer sees.** ``D_real``/``D_fake`` are the mean raw ``v``; ``D_adv`` is ``-F``, minus a lower
bound of the divergence, so it is negative as soon as D learns anything and unbounded below for ``kl`` and
``pearson``: the saturation stop's "D's loss below 1e-3" rule would fire on a healthy run, and a logit gap
is no sign of a vanishing G gradient here, so ``saturates`` is False. Non-finite values still end a run.
The divergence is the knob ``loss.divergence``; ``GANS["fgan-<name>"]`` sets it (``--gan fgan-kl`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medgan.errors import ConfigError, UnknownNameError
from medgan.losses.base import LOSSES, GANLoss
from medgan.models.dcgan import NO_EMA
from medgan.models.registry import GANS, GANSpec
from medgan.registry import Registry

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class FDivergence:
    """One row of the f-GAN tables: ``activation`` is g_f, ``conjugate`` is f*∘g_f (both on tensors of v),
    ``f`` the generator function on density ratios u = p/q (numpy; for true values by integration)."""

    name: str
    title: str
    activation: Callable[[torch.Tensor], torch.Tensor]
    conjugate: Callable[[torch.Tensor], torch.Tensor]
    f: Callable[[np.ndarray], np.ndarray]


DIVERGENCES: Registry = Registry("f-divergence")


def _register(div: FDivergence) -> None:
    DIVERGENCES.register(div.name)(div)


_register(FDivergence("kl", "Kullback-Leibler", lambda v: v, lambda v: torch.exp(v - 1.0), lambda u: u * np.log(u)))
_register(FDivergence("rkl", "reverse KL", lambda v: -torch.exp(-v), lambda v: v - 1.0, lambda u: -np.log(u)))
_register(FDivergence("js", "Jensen-Shannon (×2)", lambda v: LOG2 - F.softplus(-v), lambda v: F.softplus(v) - LOG2,
                      lambda u: u * np.log(u) - (u + 1.0) * np.log((u + 1.0) / 2.0)))
_register(FDivergence("pearson", "Pearson χ²", lambda v: v, lambda v: 0.25 * v * v + v, lambda u: (u - 1.0) ** 2))
_register(FDivergence("hellinger", "squared Hellinger", lambda v: 1.0 - torch.exp(-v), lambda v: torch.exp(v) - 1.0,
                      lambda u: (np.sqrt(u) - 1.0) ** 2))


def get_divergence(name: str) -> FDivergence:
    """``DIVERGENCES[name]``; an unknown name is a ``ConfigError`` naming ``loss.divergence``."""
    try:
        return DIVERGENCES[name]
    except UnknownNameError as e:
        raise ConfigError(f"loss.divergence: {e.args[0]}") from None


def variational_objective(div: FDivergence, v_p: torch.Tensor, v_q: torch.Tensor) -> torch.Tensor:
    """``E_P[g_f(v)] - E_Q[f*(g_f(v))]`` over the batches ``v_p`` (from P) and ``v_q`` (from Q)."""
    return div.activation(v_p.float()).mean() - div.conjugate(v_q.float()).mean()


@LOSSES.register("fgan")
class FGANLoss(GANLoss):
    """f-GAN: D minimises ``-(E_real[g_f(v)] - E_fake[f*(g_f(v))])``, G minimises ``-E_fake[g_f(v)]``."""

    name = "fgan"
    allows_label_smoothing = False  # no real-label target to move
    saturates = False  # see the module docstring

    def validate(self) -> None:
        super().validate()
        self.divergence = get_divergence(self.cfg.divergence)

    def d_adv(self, real_logits, fake_logits):
        return -variational_objective(self.divergence, real_logits, fake_logits)

    def g_adv(self, fake_logits):
        return -self.divergence.activation(fake_logits.float()).mean()


# One GAN spec per divergence: the DCGAN backbone and sizes of the paper's other DCGAN-family GANs (Nowozin
# et al. train theirs on a DCGAN too). The spec sits beside its loss: a models module may not import losses.
for _name in DIVERGENCES.names():
    GANS.register(f"fgan-{_name}")(GANSpec(model="dcgan", loss="fgan", overrides={**NO_EMA, "loss.divergence": _name}))
