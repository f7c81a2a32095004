"""The loss contract (``GANLoss``), the ``LOSSES`` registry and ``build_loss``.

A loss object composes G and D (as StyleGAN2-ADA's ``training/loss.py``), so the trainer never knows
which GAN it trains: it calls the methods and reads the capabilities that ``GANLoss`` declares, and a
subclass overrides what differs. ``real`` is the joint ``[N, C + K, H, W]`` (image, then the {-1, +1}
one-hot mask; see ``medgan.models.dcgan``), ``z`` is ``[N, z_dim]``.

Labels (conditional GAN) and InfoGAN codes live here once for every loss built on ``GANLoss``:
``labels [N]`` int64 class indices reach G and D (the GP's interpolates too) whenever they are given and
never otherwise, so an unconditional loss calls G and D exactly as before; when D has a Q head
(``model.info_*``), the InfoGAN term (``medgan.losses.info``) on the fake batch is added to D's and to G's
objective. A fake is drawn for the real batch's labels, so the fake label distribution is the data's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medgan.config import LossConfig
from medgan.errors import ConfigError
from medgan.losses.info import info_loss
from medgan.losses.terms import feature_matching, gradient_penalty, vgg_loss
from medgan.models.conditional import codes_from_z
from medgan.models.vgg import load_vgg
from medgan.registry import Registry

LOSSES: Registry = Registry("loss")
Terms = dict[str, torch.Tensor]


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float()


class GANLoss:
    """Base loss: subclasses define ``d_adv(real_logits, fake_logits)`` and ``g_adv(fake_logits)``.

    **Methods the trainer calls** (``terms`` maps names to detached scalars: always ``D_real`` /
    ``D_fake``, the mean raw logits, and every loss term — ``D_adv``, ``D_gp``, ``G_adv``, ``G_fm``,
    ``G_vgg``, ... — plus ``D_total`` / ``G_total``):

    - ``d_loss(real, z, mask_onehot=None, step=0, labels=None) -> (total, terms)``: D's objective (fake from
      ``G(z)`` without a graph into G);
    - ``g_loss(real, z, mask_onehot=None, step=0, labels=None) -> (total, terms)``: G's objective;
      (``labels [N]`` only for a label-conditional model: the trainer passes the keyword only then, so a
      loss that overrides these without it still serves unconditional runs)
    - ``d_regularize(real, step) -> (total | None, terms)``: lazy regularisers (default none);
    - ``after_d_step()``: after D's optimiser step (WGAN weight clipping; default nothing);
    - ``state_dict() -> dict`` / ``load_state_dict(state)``: state of the loss object itself that a
      resume needs (default ``{}`` / nothing). State that lives on G or D (StyleGAN2's ``pl_mean``,
      ``ada_p``) is a buffer there instead, so the model checkpoints carry it.

    **Capabilities** (class attributes and properties; the trainer reads them, never guesses):

    - ``allows_label_smoothing`` (True): the loss has a real-label target that ``label_smoothing`` moves;
    - ``allows_clip`` (False): ``loss.clip`` (weight clipping in ``after_d_step``) applies;
    - ``allows_gp`` (False): ``loss.gp_weight`` (the WGAN-GP gradient penalty in ``d_loss``) applies;
    - ``supports_ada`` (False): the loss implements adaptive augmentation, so ``build_loss`` passes it
      ``ada_target`` (any other loss rejects ``aug.ada_target > 0``);
    - ``lazy_r1`` (False): ``d_regularize`` is an R1 penalty run every ``cfg.r1_interval`` D steps, so the
      trainer compensates D's Adam (lr · k/(k+1), betas ** (k/(k+1)), k = the interval);
    - ``pl_interval`` (1): G's path-length penalty runs every ``pl_interval`` G steps (when
      ``pl_weight > 0``); above 1 the trainer compensates G's Adam the same way;
    - ``saturates`` (property; default ``not (allows_clip or allows_gp)``): whether D can saturate, which
      arms the trainer's saturation stop; a critic's unbounded output cannot;
    - ``n_critic`` (property): D steps per G step (``cfg.n_critic``);
    - ``vgg_name`` (property): the VGG features in use, None when the VGG term is off.

    ``validate`` (run by ``__init__``) turns a trick the loss does not admit into one ``ConfigError``.
    """

    name = "base"
    allows_label_smoothing = True
    allows_clip = False
    allows_gp = False
    supports_ada = False
    lazy_r1 = False
    pl_interval = 1

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
    def saturates(self) -> bool:
        """Whether D can saturate (its loss can go to 0 with the logits apart); critics cannot."""
        return not (self.allows_clip or self.allows_gp)

    @property
    def n_critic(self) -> int:
        return self.cfg.n_critic

    @property
    def vgg_name(self) -> str | None:
        """Name of the VGG features in use (``vgg16`` / ``vgg16-random``), None when the term is off."""
        return getattr(self.vgg, "name", None) if self.cfg.vgg_weight > 0 else None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    # ------------------------------------------------------------------ the adversarial terms
    def d_adv(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_adv(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def real_target(self) -> float:
        return 1.0 - self.cfg.label_smoothing

    # ------------------------------------------------------------------ running G and D
    def run_G(self, z: torch.Tensor, mask_onehot: torch.Tensor | None, real: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
        if getattr(self.G, "conditional", False) and mask_onehot is None:
            mask_onehot = real[:, self.channels :]  # a paired G draws the real batch's masks
        if labels is None:
            return self.G(z, mask_onehot)
        return self.G(z, mask_onehot, labels=labels)

    def run_D(self, x: torch.Tensor, return_features: bool = False, labels: torch.Tensor | None = None):
        if self.augment_pipe is not None:
            x = self.augment_pipe(x)
        if labels is None:
            return self.D(x, return_features=return_features)
        return self.D(x, labels=labels, return_features=return_features)

    @property
    def q_head(self) -> nn.Module | None:
        """InfoGAN's Q head on D's trunk (None: no codes)."""
        return getattr(getattr(self.D, "_orig_mod", self.D), "q_head", None)

    def info_term(self, z: torch.Tensor, fake_feats: list[torch.Tensor]) -> tuple[torch.Tensor, Terms]:
        """``λ·(-log Q(c | G(z, c)))`` (``medgan.losses.info``) for the codes z carries, on D's fake features."""
        G = getattr(self.G, "_orig_mod", self.G)
        info_cat, info_cont = int(getattr(G, "info_cat", 0)), int(getattr(G, "info_cont", 0))
        cat, cont = codes_from_z(z, info_cat, info_cont)
        cat_logits, cont_mean = self.q_head(fake_feats[-1])
        return info_loss(cat_logits, cont_mean, cat, cont, weight=self.cfg.info_weight,
                         cont_weight=self.cfg.info_cont_weight, info_cat=info_cat, info_cont=info_cont)

    # ------------------------------------------------------------------ the trainer's API
    def d_loss(
        self, real: torch.Tensor, z: torch.Tensor, mask_onehot: torch.Tensor | None = None, step: int = 0,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Terms]:
        with torch.no_grad():
            fake = self.run_G(z, mask_onehot, real, labels)
        real_logits = self.run_D(real, labels=labels)
        info_on = self.q_head is not None
        if info_on:
            fake_logits, fake_feats = self.run_D(fake, return_features=True, labels=labels)
        else:
            fake_logits = self.run_D(fake, labels=labels)
        adv = self.d_adv(real_logits, fake_logits)
        total = adv
        terms: Terms = {
            "D_real": _scalar(real_logits.mean()),
            "D_fake": _scalar(fake_logits.mean()),
            "D_adv": _scalar(adv),
        }
        if self.allows_gp and self.cfg.gp_weight > 0:
            # double backward does not go through torch.compile: penalise the eager module it wraps
            D = getattr(self.D, "_orig_mod", self.D)
            gp = gradient_penalty(D if labels is None else functools.partial(D, labels=labels), real, fake)
            total = total + self.cfg.gp_weight * gp
            terms["D_gp"] = _scalar(gp)
        if info_on:
            info, info_terms = self.info_term(z, fake_feats)
            total = total + info
            terms.update({"D_info": _scalar(info), **info_terms})
        terms["D_total"] = _scalar(total)
        return total, terms

    def g_loss(
        self, real: torch.Tensor, z: torch.Tensor, mask_onehot: torch.Tensor | None = None, step: int = 0,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Terms]:
        fake = self.run_G(z, mask_onehot, real, labels)
        fm_on = self.cfg.fm_weight > 0
        info_on = self.q_head is not None
        if fm_on or info_on:
            fake_logits, fake_feats = self.run_D(fake, return_features=True, labels=labels)
        else:
            fake_logits = self.run_D(fake, labels=labels)
        adv = self.g_adv(fake_logits)
        total = adv
        terms: Terms = {"D_fake": _scalar(fake_logits.mean()), "G_adv": _scalar(adv)}
        if fm_on:
            with torch.no_grad():
                _, real_feats = self.run_D(real, return_features=True, labels=labels)
            fm = feature_matching(real_feats, fake_feats)
            total = total + self.cfg.fm_weight * fm
            terms["G_fm"] = _scalar(fm)
        if self.cfg.vgg_weight > 0:
            paired = bool(getattr(self.G, "conditional", False))
            vl = vgg_loss(self.vgg, real[:, : self.channels], fake[:, : self.channels], paired=paired)
            total = total + self.cfg.vgg_weight * vl
            terms["G_vgg"] = _scalar(vl)
        if info_on:
            info, info_terms = self.info_term(z, fake_feats)
            total = total + info
            terms.update({"G_info": _scalar(info), **info_terms})
        terms["G_total"] = _scalar(total)
        return total, terms

    def d_regularize(self, real: torch.Tensor, step: int) -> tuple[torch.Tensor | None, Terms]:
        """A separate D phase after D's main step (StyleGAN2's lazy R1): its own backward and Adam step."""
        return None, {}

    def g_regularize(self, latents: Callable[[], torch.Tensor], step: int) -> tuple[torch.Tensor | None, Terms]:
        """A separate G phase after G's main step (StyleGAN2-ADA's lazy path length): its own backward and
        Adam step; ``None`` when there is nothing to do at this step. ``latents()`` draws a fresh ``z`` from
        the trainer's latent stream (as upstream's ``Greg`` phase does), only when the phase runs."""
        return None, {}

    def after_d_step(self) -> None:
        return None


def build_loss(
    cfg: LossConfig,
    G: nn.Module,
    D: nn.Module,
    *,
    channels: int,
    num_labels: int,
    augment_pipe: Callable[[torch.Tensor], torch.Tensor] | None = None,
    vgg: nn.Module | None = None,
    ada_target: float = 0.0,
) -> GANLoss:
    """``LOSSES[cfg.name](cfg, G, D, ...)``, validated; loads the VGG extractor when ``vgg_weight > 0``.

    Pass ``vgg`` to share one extractor; a loaded one is moved to G's device. ``ada_target``
    (``aug.ada_target``) reaches only a loss that declares ``supports_ada``; > 0 for another is a
    ``ConfigError``.
    """
    try:
        cls = LOSSES[cfg.name]
    except KeyError as e:
        raise ConfigError(f"loss.name: {e.args[0]}") from None
    extra: dict[str, Any] = {}
    if cls.supports_ada:
        extra["ada_target"] = ada_target
    elif ada_target > 0:
        raise ConfigError(
            f"aug.ada_target={ada_target} (adaptive augmentation) is implemented by --gan stylegan2 only, "
            f"not by loss {cfg.name!r}; use aug.ada_target=0"
        )
    if cfg.vgg_weight > 0 and vgg is None:
        vgg = load_vgg(cfg.vgg_features).to(next(G.parameters()).device)
    return cls(cfg, G, D, channels=channels, num_labels=num_labels, augment_pipe=augment_pipe, vgg=vgg, **extra)
