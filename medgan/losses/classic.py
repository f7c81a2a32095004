"""The five DCGAN-family losses of the paper (§3.2–3.3, Table 1), on the shared DCGAN backbone.

r, f are D's logits on real and fake:

============  =====================================================  ==========================
``dcgan``     D: BCE(r, 1 - α) + BCE(f, 0)                           G: BCE(f, 1) (non-saturating)
``lsgan``     D: ½(r - (1 - α))² + ½ f²   (a = 0, b = 1, Mao et al.)  G: ½(f - 1)²   (c = 1)
``wgan``      D: f - r, weights clipped to ±``clip`` after each step  G: -f
``wgan-gp``   D: f - r + λ (‖∇D(x̂)‖₂ - 1)², x̂ = εx + (1-ε)G(z)        G: -f
``hinge``     D: relu(1 - r) + relu(1 + f)                           G: -f
============  =====================================================  ==========================

(all averaged over the batch). α = ``label_smoothing`` is one-sided (Salimans et al.): only the real
target moves, and only the BCE/LS losses have a target to move — WGAN/hinge reject it.

Tricks added to G's loss by ``GANLoss.g_loss``:

- **Feature matching** (``fm_weight``, Salimans et al.): Σ_layers mean((E_batch f_l(x) - E_batch f_l(G(z)))²)
  over D's intermediate feature maps f_l, real features without gradient.
- **VGG term** (``vgg_weight``). There is no paired target for an unconditional G, so the term is
  *feature matching in a fixed perceptual space*: Σ_layers mean |E_batch φ_l(x) - E_batch φ_l(G(z))| over
  VGG16's relu1_2, relu2_2, relu3_3, relu4_3 of the image channels (spatial maps kept: the anatomy is
  roughly aligned across a medical set). For a conditional G (SPADE: G(z, m) is paired with the real x of
  the same mask m) it is the classic per-pair L1 of features, Σ_layers mean |φ_l(x) - φ_l(G(z, m))|.
  Grayscale is replicated to 3 channels, ImageNet normalisation; see ``medgan.models.vgg`` for the
  weights rule (``loss.vgg_features``; ``loss.vgg_name`` is what the trainer records).

DiffAugment (``augment_pipe``) is applied to everything D sees, real and fake alike. The gradient penalty
is taken on un-augmented interpolates (a random augmentation would make x̂'s two ends inconsistent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgan.losses.base import LOSSES, GANLoss
from medgan.models.dcgan import NO_EMA
from medgan.models.registry import GANS, GANSpec


@LOSSES.register("dcgan")
class DCGANLoss(GANLoss):
    """Non-saturating BCE on logits (Goodfellow et al.; DCGAN)."""

    name = "dcgan"

    def d_adv(self, real_logits, fake_logits):
        real_t = torch.full_like(real_logits, self.real_target)
        return F.binary_cross_entropy_with_logits(real_logits, real_t) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )

    def g_adv(self, fake_logits):
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


@LOSSES.register("minimax")
class MinimaxLoss(DCGANLoss):
    """The original game (Goodfellow et al. 2014): D as ``dcgan``; G minimises the *saturating*
    E log(1 - D(G(z))) = -E softplus(f), whose gradient vanishes while D rejects G's samples confidently."""

    name = "minimax"

    def g_adv(self, fake_logits):
        return -F.softplus(fake_logits.float()).mean()


# Its GAN spec sits beside the loss (a models module may not import losses): the DCGAN backbone, as dcgan.
GANS.register("minimax")(GANSpec(model="dcgan", loss="minimax", overrides=dict(NO_EMA)))


@LOSSES.register("lsgan")
class LSGANLoss(GANLoss):
    """Least squares on logits with a = 0 (fake), b = 1 (real), c = 1 (G's target) (Mao et al. 2017)."""

    name = "lsgan"

    def d_adv(self, real_logits, fake_logits):
        return 0.5 * ((real_logits.float() - self.real_target) ** 2).mean() + 0.5 * (fake_logits.float() ** 2).mean()

    def g_adv(self, fake_logits):
        return 0.5 * ((fake_logits.float() - 1.0) ** 2).mean()


class _WassersteinLoss(GANLoss):
    allows_label_smoothing = False

    def d_adv(self, real_logits, fake_logits):
        return fake_logits.float().mean() - real_logits.float().mean()

    def g_adv(self, fake_logits):
        return -fake_logits.float().mean()


@LOSSES.register("wgan")
class WGANLoss(_WassersteinLoss):
    """Critic loss with weight clipping of every D parameter to ±clip (Arjovsky et al.; clip 0 = off)."""

    name = "wgan"
    allows_clip = True

    @torch.no_grad()
    def after_d_step(self) -> None:
        c = self.cfg.clip
        if c > 0:
            for p in self.D.parameters():
                p.clamp_(-c, c)


@LOSSES.register("wgan-gp")
class WGANGPLoss(_WassersteinLoss):
    """Critic loss + gp_weight · (‖∇D(x̂)‖₂ - 1)² on random interpolates (Gulrajani et al.).

    The penalty is per sample; batch norm in D couples the samples, so ``GANS["wgan-gp"]`` sets
    ``model.d_norm=instance``. ``d_norm=batch`` still runs (Table 1 crosses the knobs) but is not the
    penalty Gulrajani et al. analyse. ``gp_weight=0`` is an unclipped, unpenalised critic.
    """

    name = "wgan-gp"
    allows_gp = True


@LOSSES.register("hinge")
class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye; Miyato et al.): D relu(1 - r) + relu(1 + f), G -f."""

    name = "hinge"
    allows_label_smoothing = False

    def d_adv(self, real_logits, fake_logits):
        return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()

    def g_adv(self, fake_logits):
        return -fake_logits.float().mean()
