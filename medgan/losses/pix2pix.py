"""pix2pix's objective (Isola et al. 2017) for MR reconstruction from undersampled k-space.

The trainer hands every loss the joint real batch ``[N, C + K, H, W]``; this loss makes the pair itself:
the target ``y`` is the image channels, the input ``x = zero_filled(y, M)`` is ``y`` seen through random
Cartesian masks ``M`` (``medgan.data.kspace``: fastMRI's ``RandomMaskFunc``, ``loss.acceleration``,
``loss.center_fraction``, one mask per slice). The masks of iteration ``step`` are drawn from the global
CPU RNG (which the run's ``seed`` seeds and every checkpoint captures and restores) by the first phase that
asks, and reused by the other: the D and G phases of one iteration see the same inputs, and a resume, which
starts at an iteration boundary with the RNG restored, replays them exactly.

With patch logits ``D(x, ·)`` (``[N, 1, h, w]``, the mean over patches and batch):

- D: ``adv_weight · ½ [BCE(D(x, y), 1 - α) + BCE(D(x, G(x)), 0)]`` — pix2pix halves D's loss "to slow
  down the rate at which D learns relative to G"; α = ``loss.label_smoothing`` (0 in pix2pix);
- G: ``adv_weight · BCE(D(x, G(x)), 1) + l1_weight · mean |G(x) - y|`` (non-saturating; λ_L1 = 100;
  the L1 is over every pixel of the [-1, 1] images, as pix2pix's ``nn.L1Loss``).

``adv_weight = 0`` (``--gan recon-l1``) is the same U-Net trained with L1 alone: D is never run (its loss
is a constant 0 without parameters in the graph, so its optimiser takes no step) and the loss declares
that D cannot saturate, so the trainer's divergence rule does not stop the run.

Needs ``n_critic = 1`` (D and G alternate, as pix2pix) and refuses the tricks it has no meaning for
(DiffAugment, which would treat the pair's second image as mask channels; feature matching; VGG).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgan.data.kspace import cartesian_mask, default_center_fraction, zero_filled_signed
from medgan.errors import ConfigError
from medgan.losses.base import LOSSES, GANLoss, Terms


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float()


def patch_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of every patch logit against the constant ``target``."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))


@LOSSES.register("pix2pix")
class Pix2PixLoss(GANLoss):
    """U-Net G + PatchGAN D + L1 on (zero-filled, fully sampled) pairs made from the real batch."""

    name = "pix2pix"

    def __init__(self, cfg, G, D, **kwargs):
        super().__init__(cfg, G, D, **kwargs)
        self._masks: tuple[int, torch.Tensor] | None = None  # (step, masks [N, 1, 1, W]) of the current iteration

    def validate(self) -> None:
        super().validate()
        cfg = self.cfg
        if cfg.n_critic != 1:
            raise ConfigError(f"loss.n_critic={cfg.n_critic}: pix2pix alternates one D step and one G step; use 1")
        if self.augment_pipe is not None:
            raise ConfigError("aug.diffaugment is not defined for --gan pix2pix/recon-l1 (D sees an image pair, "
                              "not an image + mask); use aug.diffaugment=''")
        if cfg.fm_weight > 0 or cfg.vgg_weight > 0:
            raise ConfigError("loss.fm_weight and loss.vgg_weight are not defined for --gan pix2pix/recon-l1; use 0")
        if cfg.l1_weight < 0 or cfg.adv_weight < 0:
            raise ConfigError(f"loss.l1_weight ({cfg.l1_weight}) and loss.adv_weight ({cfg.adv_weight}) must be >= 0")
        if cfg.l1_weight == 0 and cfg.adv_weight == 0:
            raise ConfigError("loss.l1_weight and loss.adv_weight are both 0: G would learn nothing")
        if cfg.acceleration < 1 or not 0 <= cfg.center_fraction <= 1 / cfg.acceleration:
            raise ConfigError(f"loss.acceleration={cfg.acceleration} must be >= 1 and loss.center_fraction="
                              f"{cfg.center_fraction} in [0, 1/acceleration] (0 = fastMRI's 0.32/acceleration)")

    # ------------------------------------------------------------------ what the trainer reads
    @property
    def adversarial(self) -> bool:
        return self.cfg.adv_weight > 0

    @property
    def saturates(self) -> bool:
        return self.adversarial  # without the GAN term D is never trained: nothing to saturate

    @property
    def center_fraction(self) -> float:
        cf = self.cfg.center_fraction
        return cf if cf > 0 else default_center_fraction(self.cfg.acceleration)

    # ------------------------------------------------------------------ the pair
    def inputs(self, real: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: the zero-filled input and the fully sampled target ``[N, C, H, W]`` of this step's batch."""
        y = real[:, : self.channels].float()
        if self._masks is None or self._masks[0] != step or len(self._masks[1]) != len(y):
            masks = cartesian_mask(len(y), y.shape[-1], self.cfg.acceleration, self.center_fraction)
            self._masks = (step, masks)
        return zero_filled_signed(y, self._masks[1].to(y.device)), y

    def run_G(self, z, mask_onehot, real, step: int = 0) -> torch.Tensor:
        x, _ = self.inputs(real, step)
        return self.G(x)

    def run_D(self, x: torch.Tensor, return_features: bool = False):
        return self.D(x, return_features=return_features)

    def d_adv(self, real_logits, fake_logits):
        return 0.5 * (patch_bce(real_logits, self.real_target) + patch_bce(fake_logits, 0.0))

    def g_adv(self, fake_logits):
        return patch_bce(fake_logits, 1.0)

    # ------------------------------------------------------------------ the trainer's API
    def d_loss(self, real, z, mask_onehot=None, step=0) -> tuple[torch.Tensor, Terms]:
        if not self.adversarial:
            zero = torch.zeros((), device=real.device, requires_grad=True)
            return zero, {"D_total": _scalar(zero)}
        x, y = self.inputs(real, step)
        with torch.no_grad():
            fake = self.G(x)
        real_logits = self.run_D(torch.cat([x, y], dim=1))
        fake_logits = self.run_D(torch.cat([x, fake], dim=1))
        adv = self.cfg.adv_weight * self.d_adv(real_logits, fake_logits)
        terms: Terms = {"D_real": _scalar(real_logits.mean()), "D_fake": _scalar(fake_logits.mean()),
                        "D_adv": _scalar(adv), "D_total": _scalar(adv)}
        return adv, terms

    def g_loss(self, real, z, mask_onehot=None, step=0) -> tuple[torch.Tensor, Terms]:
        x, y = self.inputs(real, step)
        fake = self.G(x)
        l1 = (fake.float() - y).abs().mean()
        total = self.cfg.l1_weight * l1
        terms: Terms = {"G_l1": _scalar(l1)}
        if self.adversarial:
            fake_logits = self.run_D(torch.cat([x, fake], dim=1))
            adv = self.g_adv(fake_logits)
            total = total + self.cfg.adv_weight * adv
            terms.update({"D_fake": _scalar(fake_logits.mean()), "G_adv": _scalar(adv)})
        terms["G_total"] = _scalar(total)
        return total, terms
