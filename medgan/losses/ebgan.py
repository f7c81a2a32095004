"""EBGAN (Zhao, Mathieu & LeCun 2017): D is an energy (an auto-encoder's reconstruction error), not a classifier.

With ``D(x)`` the energy (``medgan.models.ebgan``: per-sample reconstruction MSE of the joint image+mask)
and ``m = loss.ebgan_margin``:

- D: ``E[D(x)] + E[max(0, m - D(G(z)))]`` — pull real energies down, push fake ones up to the margin;
- G: ``E[D(G(z))] + pt_weight · PT(S)``, with the **pulling-away term** on the encoder's embeddings ``S``
  (``[N, d]``, flattened) of the fake batch: ``PT = 1/(N(N-1)) Σ_{i≠j} cos²(S_i, S_j)``, which penalises a
  batch whose codes point the same way (mode collapse) and does not depend on their norms.

Defaults. ``pt_weight = 0.1``, the weight of all the paper's EBGAN-PT experiments. The margin depends on
the energy's scale: the paper's values (m = 20 on 64² CelebA, 80 on LSUN) are on its own reconstruction
error, not on a per-pixel MSE of [-1, 1] data, which is at most 4 here and about 1 for an untrained
auto-encoder (its outputs ≈ 0 against ±1 one-hot channels and a −1 background). ``m = 1`` asks D to
reconstruct G's samples no better than an untrained auto-encoder does; above 4 the hinge never closes and
D just maximises the fake energy. A deviation, chosen by this scale argument, not by a sweep.

What the trainer sees: ``D_real``/``D_fake`` are mean energies (lower is more "real"); ``D_adv`` is D's
loss above, ≥ 0. D's loss reaching 0 means real batches reconstructed exactly and fakes beyond the
margin, but G's gradient ``∇ E[D(G(z))]`` does not pass through the hinge and does not vanish then, so the
saturation stop does not apply (``saturates`` is False). No real-label target: no label smoothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgan.losses.base import LOSSES, GANLoss, Terms


def pulling_away(embedding: torch.Tensor) -> torch.Tensor:
    """``PT = 1/(N(N-1)) Σ_{i≠j} (S_iᵀS_j / (‖S_i‖ ‖S_j‖))²`` over the rows of ``embedding [N, ...]``
    (flattened per sample); 0 for N < 2."""
    s = embedding.flatten(1).float()
    n = s.shape[0]
    if n < 2:
        return s.sum() * 0.0
    s = F.normalize(s, dim=1)
    cos2 = (s @ s.T).square()
    return (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))


def margin_loss(real_energy: torch.Tensor, fake_energy: torch.Tensor, margin: float) -> torch.Tensor:
    """D's loss ``mean(D(x)) + mean(max(0, m - D(G(z))))``."""
    return real_energy.float().mean() + F.relu(margin - fake_energy.float()).mean()


@LOSSES.register("ebgan")
class EBGANLoss(GANLoss):
    """Margin loss for D, energy + pulling-away term for G (D must return energies: ``MODELS["ebgan"]``)."""

    name = "ebgan"
    allows_label_smoothing = False
    saturates = False  # see the module docstring

    _embedding: torch.Tensor | None = None

    def run_D(self, x, return_features=False, **kw):
        # Every D call keeps the encoder's code of its batch, so g_adv can take the pulling-away term of the
        # fake batch it scores while the base class's g_loss (feature matching, VGG, ...) stays in charge.
        energy, features = super().run_D(x, return_features=True, **kw)
        self._embedding = features[-1]
        return (energy, features) if return_features else energy

    def d_adv(self, real_logits, fake_logits):
        return margin_loss(real_logits, fake_logits, self.cfg.ebgan_margin)

    def g_adv(self, fake_logits):
        energy = fake_logits.float().mean()
        self._pt = pulling_away(self._embedding)  # the code of the batch just scored: G's fake batch
        self._g_energy = energy
        return energy + self.cfg.pt_weight * self._pt

    def d_loss(self, *args, **kw) -> tuple[torch.Tensor, Terms]:
        out = super().d_loss(*args, **kw)
        self._embedding = None
        return out

    def g_loss(self, *args, **kw) -> tuple[torch.Tensor, Terms]:
        total, terms = super().g_loss(*args, **kw)
        terms["G_energy"], terms["G_pt"] = self._g_energy.detach(), self._pt.detach()
        self._embedding = self._pt = self._g_energy = None
        return total, terms
