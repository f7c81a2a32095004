"""InfoGAN's mutual-information term (Chen et al. 2016), as a plain function of Q's outputs and the codes.

For codes c drawn with G's input and Q(c | x) Q's posterior on x = G(z, c), the variational lower bound is
``L_I = E[log Q(c | x)] + H(c) <= I(c; G(z, c))``. H(c) is a constant (log K for the uniform categorical
code, log 2 per U(-1, 1) continuous code), so both players *minimise* the negative log-likelihood part:

- categorical: the cross-entropy ``CE(q_logits, cat)`` (mean over the batch);
- continuous: the Gaussian NLL with a fixed unit variance, ``Σ_j ½ (c_j - μ_j)² + ½ log 2π`` (mean over the
  batch). Fixed σ as the official InfoGAN code's default for its continuous codes, and because a learned
  σ lets Q lower its NLL without bound on codes it already predicts well.

``loss.info_weight`` (λ for the categorical code, 1 as in the paper) and ``loss.info_cont_weight`` (λ for
the continuous codes; the paper: "a smaller λ is typically used" so that the term, which now involves a
differential entropy, stays on the GAN objective's scale; 0.1 as common reimplementations use) weight the
two parts. The same term is added to D/Q's and to G's objective (the official code adds it to both).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def info_nll(cat_logits: torch.Tensor | None, cont_mean: torch.Tensor | None, cat: torch.Tensor | None,
             cont: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CE of the categorical code, Gaussian NLL of the continuous codes)``, each 0 when that code is off."""
    ref = cat_logits if cat_logits is not None else cont_mean
    zero = ref.new_zeros((), dtype=torch.float32)
    ce = F.cross_entropy(cat_logits.float(), cat.long()) if cat_logits is not None else zero
    nll = zero
    if cont_mean is not None:
        nll = (0.5 * (cont.float() - cont_mean.float()) ** 2 + HALF_LOG_2PI).sum(dim=1).mean()
    return ce, nll


def mi_lower_bound(ce: torch.Tensor, nll: torch.Tensor, info_cat: int, info_cont: int) -> torch.Tensor:
    """``H(c) - NLL``: the variational lower bound on I(c; G(z, c)) in nats (log K + L log 2 - CE - NLL)."""
    entropy = (math.log(info_cat) if info_cat > 0 else 0.0) + info_cont * math.log(2.0)
    return entropy - ce.detach() - nll.detach()


def info_loss(cat_logits, cont_mean, cat, cont, *, weight: float, cont_weight: float, info_cat: int,
              info_cont: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``λ CE + λ_cont NLL`` and its terms (``info_ce``, ``info_nll``, ``info_mi``: the bound in nats)."""
    ce, nll = info_nll(cat_logits, cont_mean, cat, cont)
    total = weight * ce + cont_weight * nll
    terms = {"info_ce": ce.detach(), "info_nll": nll.detach(), "info_mi": mi_lower_bound(ce, nll, info_cat, info_cont)}
    return total, terms
