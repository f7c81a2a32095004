"""SPADE's loss: multi-scale hinge + per-pair discriminator feature matching + (optional) VGG."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgan.losses.base import LOSSES, GANLoss
from medgan.losses.terms import paired_feature_matching, vgg_loss
from medgan.models.ops import unwrap_module


@LOSSES.register("spade")
class SpadeLoss(GANLoss):
    """SPADE's objective (``models/pix2pix_model.py`` of NVlabs/SPADE), on the multi-scale patch logits:

    - D: ``mean_s [ E relu(1 - D_s(x, m)) + E relu(1 + D_s(G(z, m), m)) ]`` over every patch of every scale s;
    - G: ``-mean_s E D_s(G(z, m), m)``
      ``+ fm_weight * sum_s sum_l E|f_sl(G(z, m), m) - f_sl(x, m)| / scales`` (pix2pixHD feature matching:
      *per pair*, because the fake is painted on the real's own mask m; every layer but the patch logits)
      ``+ vgg_weight * sum_l w_l E|phi_l(G(z, m)) - phi_l(x)|`` (per pair; ``--gan spade``: weight 10 on
      VGG19 relu1_1 ... relu5_1 with ``w_l`` = 1/32, 1/16, 1/8, 1/4, 1, upstream's ``VGGLoss``).

    As upstream's ``Pix2PixModel.discriminate``, fake and real go through D as one batch ``cat([fake, real])``
    (one spectral-norm power iteration per step, shared batch statistics if D uses batch norm); without
    feature matching the G step runs D on the fakes only. ``tests/test_spade.py`` matches both losses to
    upstream's ``compute_generator_loss`` / ``compute_discriminator_loss`` (golden vectors).
    With DiffAugment on, the real and the fake of a pair go through the *same* random transform (one
    seeded generator per call, drawn from the global RNG) so that their features stay comparable.
    ``--gan spade`` needs the pretrained VGG19 file (``medgan.models.vgg``); ``--set
    loss.vgg_features=vgg19-random`` is the labelled stand-in, ``--set loss.vgg_weight=0`` drops the term.
    D is a ``medgan.models.spade.SpadeDiscriminator`` (``patch_logits``, ``n_stages``).
    """

    name = "spade"
    allows_label_smoothing = False

    def _patches(self, feats):
        return unwrap_module(self.D).patch_logits(feats)

    def _run_D_pair(self, fake: torch.Tensor, real: torch.Tensor, *, need_real: bool = True):
        """D on (fake, real) with identical augmentation of both: two ``(logits, feats)`` (the second None
        without ``need_real``; the augmentation RNG is consumed the same way either way)."""
        if self.augment_pipe is not None:
            seed = int(torch.randint(0, 2**62, (1,)).item())  # CPU RNG: no device sync
            fake = self.augment_pipe(fake, generator=torch.Generator(device=fake.device).manual_seed(seed))
            if need_real:
                real = self.augment_pipe(real, generator=torch.Generator(device=real.device).manual_seed(seed))
        if not need_real:
            return self.D(fake, return_features=True), None
        n = fake.shape[0]
        logits, feats = self.D(torch.cat([fake, real]), return_features=True)
        return (logits[:n], [f[:n] for f in feats]), (logits[n:], [f[n:] for f in feats])

    def d_adv(self, real_logits, fake_logits):  # on lists of per-scale patch maps
        pairs = zip(real_logits, fake_logits, strict=True)
        per_scale = [F.relu(1.0 - r.float()).mean() + F.relu(1.0 + f.float()).mean() for r, f in pairs]
        return torch.stack(per_scale).mean()

    def g_adv(self, fake_logits):
        return torch.stack([-f.float().mean() for f in fake_logits]).mean()

    def d_loss(self, real, z, mask_onehot=None, step=0):
        with torch.no_grad():
            fake = self.run_G(z, mask_onehot, real)
        (fake_logits, fake_feats), (real_logits, real_feats) = self._run_D_pair(fake, real)
        adv = self.d_adv(self._patches(real_feats), self._patches(fake_feats))
        terms = {
            "D_real": real_logits.detach().float().mean(),
            "D_fake": fake_logits.detach().float().mean(),
            "D_adv": adv.detach(),
            "D_total": adv.detach(),
        }
        return adv, terms

    def g_loss(self, real, z, mask_onehot=None, step=0):
        fake = self.run_G(z, mask_onehot, real)
        fm_on = self.cfg.fm_weight > 0
        (fake_logits, fake_feats), out_real = self._run_D_pair(fake, real.detach(), need_real=fm_on)
        adv = self.g_adv(self._patches(fake_feats))
        total = adv
        terms = {"D_fake": fake_logits.detach().float().mean(), "G_adv": adv.detach()}
        if fm_on:
            fm = paired_feature_matching(out_real[1], fake_feats, unwrap_module(self.D).n_stages)
            total = total + self.cfg.fm_weight * fm
            terms["G_fm"] = fm.detach()
        if self.cfg.vgg_weight > 0:
            vl = vgg_loss(self.vgg, real[:, : self.channels], fake[:, : self.channels], paired=True)
            total = total + self.cfg.vgg_weight * vl
            terms["G_vgg"] = vl.detach()
        terms["G_total"] = total.detach().float()
        return total, terms
