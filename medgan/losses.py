"""The adversarial losses and training tricks of the paper (§3.2–3.3, Table 1).

A loss object composes G and D (as StyleGAN2-ADA's ``training/loss.py``): the trainer only calls

- ``d_loss(real, z, mask_onehot=None, step=0) -> (total, terms)`` — D's objective (fake from ``G(z)``
  without a graph into G);
- ``g_loss(real, z, mask_onehot=None, step=0) -> (total, terms)`` — G's objective;
- ``d_regularize(real, step) -> (total | None, terms)`` — lazy regularisers (StyleGAN2's R1 overrides it);
- ``after_d_step()`` — after D's optimiser step (WGAN weight clipping);
- ``n_critic`` — D steps per G step,

so the trainer never knows which GAN it trains. ``real`` is the joint ``[N, C + K, H, W]`` (image, then
the {-1, +1} one-hot mask; see ``medgan.models.dcgan``), ``z`` is ``[N, z_dim]``. ``terms`` maps names to
detached scalars: always ``D_real`` / ``D_fake`` (mean raw logits) and every loss term (``D_adv``,
``D_gp``, ``G_adv``, ``G_fm``, ``G_vgg``, ...) plus ``D_total`` / ``G_total``.

Losses (``LOSSES[name]``; r, f are D's logits on real and fake):

============  =====================================================  ==========================
``dcgan``     D: BCE(r, 1 - α) + BCE(f, 0)                           G: BCE(f, 1) (non-saturating)
``lsgan``     D: ½(r - (1 - α))² + ½ f²   (a = 0, b = 1, Mao et al.)  G: ½(f - 1)²   (c = 1)
``wgan``      D: f - r, weights clipped to ±``clip`` after each step  G: -f
``wgan-gp``   D: f - r + λ (‖∇D(x̂)‖₂ - 1)², x̂ = εx + (1-ε)G(z)        G: -f
``hinge``     D: relu(1 - r) + relu(1 + f)                           G: -f
============  =====================================================  ==========================

(all averaged over the batch). α = ``label_smoothing`` is one-sided (Salimans et al.): only the real
target moves, and only the BCE/LS losses have a target to move — WGAN/hinge reject it.

Tricks added to G's loss:

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

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medgan.config import ConfigError, LossConfig
from medgan.registry import Registry

LOSSES: Registry = Registry("loss")
Terms = dict[str, torch.Tensor]


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float()


class GANLoss:
    """Base loss: subclasses define ``d_adv(real_logits, fake_logits)`` and ``g_adv(fake_logits)``.

    Class flags say which tricks the loss admits; ``validate`` turns a misuse into one ``ConfigError``.
    """

    name = "base"
    allows_label_smoothing = True
    allows_clip = False
    allows_gp = False

    def __init__(
        self,
        cfg: LossConfig,
        G: nn.Module,
        D: nn.Module,
        *,
        channels: int,
        num_labels: int,
        augment_pipe: Callable[[torch.Tensor], torch.Tensor] | None = None,
        vgg: nn.Module | None = None,
    ):
        self.cfg = cfg
        self.G, self.D = G, D
        self.channels, self.num_labels = channels, num_labels
        self.augment_pipe = augment_pipe
        self.vgg = vgg
        self.validate()

    # ------------------------------------------------------------------ configuration
    def validate(self) -> None:
        cfg = self.cfg
        if cfg.label_smoothing > 0 and not self.allows_label_smoothing:
            raise ConfigError(
                f"loss.label_smoothing={cfg.label_smoothing} is not defined for --gan {self.name} "
                "(it has no real-label target); use 0"
            )
        if cfg.clip > 0 and not self.allows_clip:
            raise ConfigError(f"loss.clip={cfg.clip}: weight clipping only applies to --gan wgan, not {self.name}")
        if cfg.gp_weight > 0 and not self.allows_gp:
            raise ConfigError(
                f"loss.gp_weight={cfg.gp_weight}: the gradient penalty only applies to --gan wgan-gp, not {self.name}"
            )
        if cfg.vgg_weight > 0 and self.vgg is None:
            raise ConfigError("loss.vgg_weight > 0 needs a VGG feature extractor (use build_loss, which loads it)")

    @property
    def n_critic(self) -> int:
        return self.cfg.n_critic

    @property
    def vgg_name(self) -> str | None:
        """Name of the VGG features in use (``vgg16`` / ``vgg16-random``), None when the term is off."""
        return getattr(self.vgg, "name", None) if self.cfg.vgg_weight > 0 else None

    # ------------------------------------------------------------------ the adversarial terms
    def d_adv(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_adv(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def real_target(self) -> float:
        return 1.0 - self.cfg.label_smoothing

    # ------------------------------------------------------------------ running G and D
    def run_G(self, z: torch.Tensor, mask_onehot: torch.Tensor | None, real: torch.Tensor) -> torch.Tensor:
        if getattr(self.G, "conditional", False) and mask_onehot is None:
            mask_onehot = real[:, self.channels :]  # a paired G draws the real batch's masks
        return self.G(z, mask_onehot)

    def run_D(self, x: torch.Tensor, return_features: bool = False):
        if self.augment_pipe is not None:
            x = self.augment_pipe(x)
        return self.D(x, return_features=return_features)

    # ------------------------------------------------------------------ the trainer's API
    def d_loss(
        self, real: torch.Tensor, z: torch.Tensor, mask_onehot: torch.Tensor | None = None, step: int = 0
    ) -> tuple[torch.Tensor, Terms]:
        with torch.no_grad():
            fake = self.run_G(z, mask_onehot, real)
        real_logits = self.run_D(real)
        fake_logits = self.run_D(fake)
        adv = self.d_adv(real_logits, fake_logits)
        total = adv
        terms: Terms = {
            "D_real": _scalar(real_logits.mean()),
            "D_fake": _scalar(fake_logits.mean()),
            "D_adv": _scalar(adv),
        }
        if self.allows_gp and self.cfg.gp_weight > 0:
            # double backward does not go through torch.compile: penalise the eager module it wraps
            gp = gradient_penalty(getattr(self.D, "_orig_mod", self.D), real, fake)
            total = total + self.cfg.gp_weight * gp
            terms["D_gp"] = _scalar(gp)
        terms["D_total"] = _scalar(total)
        return total, terms

    def g_loss(
        self, real: torch.Tensor, z: torch.Tensor, mask_onehot: torch.Tensor | None = None, step: int = 0
    ) -> tuple[torch.Tensor, Terms]:
        fake = self.run_G(z, mask_onehot, real)
        fm_on = self.cfg.fm_weight > 0
        if fm_on:
            fake_logits, fake_feats = self.run_D(fake, return_features=True)
        else:
            fake_logits = self.run_D(fake)
        adv = self.g_adv(fake_logits)
        total = adv
        terms: Terms = {"D_fake": _scalar(fake_logits.mean()), "G_adv": _scalar(adv)}
        if fm_on:
            with torch.no_grad():
                _, real_feats = self.run_D(real, return_features=True)
            fm = feature_matching(real_feats, fake_feats)
            total = total + self.cfg.fm_weight * fm
            terms["G_fm"] = _scalar(fm)
        if self.cfg.vgg_weight > 0:
            paired = bool(getattr(self.G, "conditional", False))
            vl = vgg_loss(self.vgg, real[:, : self.channels], fake[:, : self.channels], paired=paired)
            total = total + self.cfg.vgg_weight * vl
            terms["G_vgg"] = _scalar(vl)
        terms["G_total"] = _scalar(total)
        return total, terms

    def d_regularize(self, real: torch.Tensor, step: int) -> tuple[torch.Tensor | None, Terms]:
        return None, {}

    def after_d_step(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# the five losses
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# terms
# ---------------------------------------------------------------------------------------------
def gradient_penalty(
    D: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """mean over the batch of (‖∇_x̂ D(x̂)‖₂ - 1)², x̂ = ε·real + (1 - ε)·fake, ε ~ U[0, 1] per sample."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Σ_layers mean((E_batch real_l - E_batch fake_l)²); real features should carry no gradient."""
    total = fake_feats[0].new_zeros((), dtype=torch.float32)
    for r, f in zip(real_feats, fake_feats, strict=True):
        total = total + ((r.detach().float().mean(0) - f.float().mean(0)) ** 2).mean()
    return total


def vgg_loss(vgg: nn.Module, real_image: torch.Tensor, fake_image: torch.Tensor, *, paired: bool) -> torch.Tensor:
    """VGG term on image channels ``[N, C, H, W]``: batch-mean L1 (unpaired) or per-pair L1 (paired)."""
    with torch.no_grad():
        real_feats = vgg(real_image.detach())
    fake_feats = vgg(fake_image)
    total = fake_image.new_zeros((), dtype=torch.float32)
    for r, f in zip(real_feats, fake_feats, strict=True):
        r, f = r.float(), f.float()
        if paired:
            total = total + (r - f).abs().mean()
        else:
            total = total + (r.mean(0) - f.mean(0)).abs().mean()
    return total


# ---------------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------------
def build_loss(cfg: LossConfig, G: nn.Module, D: nn.Module, **kw) -> GANLoss:
    """``LOSSES[cfg.name](cfg, G, D, **kw)``, validated; loads the VGG extractor when ``vgg_weight > 0``.

    ``kw``: ``channels``, ``num_labels`` (required), ``augment_pipe``, ``vgg`` (to share one extractor).
    The VGG module is moved to G's device.
    """
    try:
        cls = LOSSES[cfg.name]
    except KeyError as e:
        raise ConfigError(f"loss.name: {e.args[0]}") from None
    if cfg.vgg_weight > 0 and kw.get("vgg") is None:
        from medgan.models.vgg import load_vgg

        device = next(G.parameters()).device
        kw["vgg"] = load_vgg(cfg.vgg_features).to(device)
    return cls(cfg, G, D, **kw)
