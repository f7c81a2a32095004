"""StyleGAN2's loss: non-saturating logistic + lazy R1 + optional path length + optional ADA probability."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgan.augment import AdaptiveAugment
from medgan.errors import ConfigError
from medgan.losses.base import LOSSES, GANLoss
from medgan.losses.terms import path_length_penalty, r1_penalty
from medgan.models.ops import uncompiled, unwrap_module


@LOSSES.register("stylegan2")
class StyleGAN2Loss(GANLoss):
    """StyleGAN2's objective, as in StyleGAN2-ADA ``training/loss.py``:

    - D: ``softplus(D(fake)) + softplus(-D(real))``; G: ``softplus(-D(fake))`` (non-saturating logistic);
    - lazy R1 (``d_regularize``): every ``r1_interval`` D steps, ``r1_interval * gamma/2 * E||grad_x D(x)||^2``
      on (augmented) reals -- the interval factor keeps the penalty's average strength independent of
      how often it runs;
    - lazy path length (``g_regularize``, ``pl_weight > 0``): every ``pl_interval`` G steps, in its own G
      phase after G's main step (the trainer's separate backward + Adam step, StyleGAN2-ADA's ``Greg``),
      ``pl_interval * pl_weight * E[(||J_w^T y|| - a)^2]`` on the first ``N / pl_batch_shrink`` latents,
      ``a`` an EMA of the lengths (``G.pl_mean``, decay ``pl_decay``);
    - ADA (``ada_target > 0``, needs ``aug.diffaugment``): the augment pipe is wrapped in
      ``AdaptiveAugment`` whose probability ``p`` (``D.ada_p``) moves after every D step by
      ``sign(r_t - ada_target) * batch / (ada_kimg * 1000)``, ``r_t = E[sign(D(real))]``: D too sure
      about the reals (overfitting) -> more augmentation. ``ada_kimg = 100`` (the official 500 is tuned
      for runs of tens of thousands of kimg; ours are short): p can go 0 -> 1 in 100 kimg. ADA's r_t is
      measured on every batch instead of every 4th, which changes nothing on average.

    The state that must survive a resume (``pl_mean``, ``ada_p``) is a buffer of G/D, so the trainer's
    checkpoints carry it without knowing about it. Label smoothing does not apply (``ConfigError``).
    """

    name = "stylegan2"
    allows_label_smoothing = False
    supports_ada = True
    lazy_r1 = True
    pl_interval = 4
    pl_batch_shrink = 2
    pl_decay = 0.01
    ada_kimg = 100.0

    def __init__(self, cfg, G, D, *, ada_target: float = 0.0, **kw):
        super().__init__(cfg, G, D, **kw)
        self.ada_target = float(ada_target)
        if self.ada_target > 0:
            if self.augment_pipe is None:
                raise ConfigError("aug.ada_target > 0 needs augmentations to adapt: set aug.diffaugment too")
            self.ada_p = unwrap_module(D).ada_p
            self.augment_pipe = AdaptiveAugment(self.augment_pipe, self.ada_p)

    def d_adv(self, real_logits, fake_logits):
        return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()

    def g_adv(self, fake_logits):
        return F.softplus(-fake_logits.float()).mean()

    def d_loss(self, real, z, mask_onehot=None, step=0):
        with torch.no_grad():
            fake = self.run_G(z, mask_onehot, real)
        real_logits = self.run_D(real)
        fake_logits = self.run_D(fake)
        adv = self.d_adv(real_logits, fake_logits)
        terms = {
            "D_real": real_logits.detach().float().mean(),
            "D_fake": fake_logits.detach().float().mean(),
            "D_adv": adv.detach(),
            "D_total": adv.detach(),
        }
        if self.ada_target > 0:
            terms.update(self._ada_update(real_logits))
        return adv, terms

    @torch.no_grad()
    def _ada_update(self, real_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        r_t = real_logits.detach().float().sign().mean()
        batch = real_logits.shape[0]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank sees its own shard of the global batch: average r_t so all ranks keep the same p
            world = torch.distributed.get_world_size()
            torch.distributed.all_reduce(r_t)
            r_t, batch = r_t / world, batch * world
        step = torch.sign(r_t - self.ada_target) * (batch / (self.ada_kimg * 1000.0))
        self.ada_p.copy_((self.ada_p + step).clamp(0.0, 1.0))
        return {"ada_rt": r_t, "ada_p": self.ada_p.detach().clone()}

    def g_regularize(self, latents, step):
        """StyleGAN2-ADA's ``Greg`` phase: ``(total | None, {"G_pl", "G_reg"})``, every ``pl_interval`` G steps."""
        if self.cfg.pl_weight <= 0 or step % self.pl_interval != 0:
            return None, {}
        pl = self.path_length_penalty(latents())
        total = pl * (self.cfg.pl_weight * self.pl_interval)
        return total, {"G_pl": pl.detach(), "G_reg": total.detach()}

    def path_length_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """``E[(||J_w^T y||_2 - a)^2]``, y ~ N(0, I/(H W)); updates ``a = G.pl_mean`` (EMA, decay 0.01).

        On the eager G: double backward does not run through torch.compile'd graphs."""
        return path_length_penalty(uncompiled(unwrap_module(self.G)), z, batch_shrink=self.pl_batch_shrink,
                                   decay=self.pl_decay)

    def d_regularize(self, real, step):
        if self.cfg.r1_gamma <= 0 or step % self.cfg.r1_interval != 0:
            return None, {}
        D = uncompiled(self.D)  # no double backward through torch.compile'd graphs

        def run_D(x):
            return D(self.augment_pipe(x) if self.augment_pipe is not None else x)

        r1 = r1_penalty(run_D, real)
        total = r1 * (self.cfg.r1_gamma / 2 * self.cfg.r1_interval)
        return total, {"D_r1": r1.detach(), "D_reg": total.detach()}
