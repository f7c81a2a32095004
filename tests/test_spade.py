"""SPADE: conditional generator on the one-hot mask, multi-scale PatchGAN, hinge + paired FM loss, training."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_stylegan2 import assert_resume_exact, finite_stats, make_disk_set, train_run
from torch import nn

from medgan.augment import DiffAugment
from medgan.config import ConfigError, LossConfig, ModelConfig
from medgan.data.prepared import load_prepared, mask_to_onehot, onehot_to_mask
from medgan.losses import LOSSES, paired_feature_matching
from medgan.losses.spade import SpadeLoss
from medgan.models import GANS, MODELS
from medgan.models.spade import SpadeDiscriminator

torch.set_num_threads(2)

TINY = ModelConfig(name="spade", latent_dim=8, g_filters=4, d_filters=4, channel_max=16, spade_hidden=4,
                   g_spectral=True, d_spectral=True, g_norm="batch", d_norm="instance", d_scales=2)
TINY_SETS = ["model.latent_dim=8", "model.g_filters=4", "model.d_filters=4", "model.channel_max=16",
             "model.spade_hidden=4"]


def random_masks(n: int, size: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (n, 1, size // 4, size // 4), generator=g).float()
    return torch.nn.functional.interpolate(coarse, scale_factor=4, mode="nearest")[:, 0].long()


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_shapes_and_mask_round_trip(channels, resolution):
    K = 4
    torch.manual_seed(0)
    pair = MODELS["spade"](TINY, channels=channels, num_labels=K, resolution=resolution)
    G, D = pair.G, pair.D
    assert G.conditional is True and G.z_dim == 8
    mask = random_masks(2, resolution, K)
    joint = G(torch.randn(2, 8), mask_to_onehot(mask, K))
    assert joint.shape == (2, channels + K, resolution, resolution)
    assert joint[:, :channels].abs().max() <= 1
    assert torch.equal(onehot_to_mask(joint[:, channels:]), mask)  # the sample's mask IS its input mask
    logits, feats = D(joint, return_features=True)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert len(feats) == TINY.d_scales * D.n_stages


def test_image_follows_the_mask():
    """Same z, two masks: the image changes where (and because) the mask does."""
    torch.manual_seed(0)
    G = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=16).G.eval()
    m1 = torch.zeros(1, 16, 16, dtype=torch.long)
    m2 = m1.clone()
    m2[:, 4:12, 4:12] = 2
    z = torch.randn(1, 8)
    a = G(z, mask_to_onehot(m1, 3))
    b = G(z, mask_to_onehot(m2, 3))
    assert not torch.allclose(a[:, :1], b[:, :1])
    assert torch.equal(G(z, mask_to_onehot(m1, 3)), a)  # eval mode: deterministic given (z, mask)


def test_conditional_G_needs_a_mask():
    G = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=16).G
    with pytest.raises(ValueError, match="mask_onehot"):
        G(torch.randn(2, 8))


def test_bad_resolution_is_an_error():
    with pytest.raises(ValueError, match="power-of-two"):
        MODELS["spade"](TINY, channels=1, num_labels=2, resolution=24)


def test_D_logits_are_mean_patch_logits_over_scales():
    torch.manual_seed(0)
    D = SpadeDiscriminator(in_channels=4, filters=4, scales=3, norm="instance", spectral=False)
    x = torch.randn(3, 4, 32, 32)
    logits, feats = D(x, return_features=True)
    patches = D.patch_logits(feats)
    assert len(patches) == 3 and all(p.shape[:2] == (3, 1) for p in patches)
    assert patches[0].shape[-1] > patches[1].shape[-1] > patches[2].shape[-1]  # coarser scales, fewer patches
    expected = torch.stack([p.mean(dim=[1, 2, 3]) for p in patches]).mean(0)
    assert torch.allclose(logits, expected, atol=1e-6)
    assert torch.equal(D(x), logits)


def test_deepcopy_and_channels_last():
    torch.manual_seed(0)
    pair = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=16)
    G = pair.G.eval()
    G_ema = copy.deepcopy(G)
    mask = mask_to_onehot(random_masks(2, 16, 3), 3)
    z = torch.randn(2, 8)
    assert torch.equal(G(z, mask), G_ema(z, mask))
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)
    assert torch.allclose(G(z, mask), G_cl(z, mask.contiguous(memory_format=torch.channels_last)), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------
def test_hinge_on_fixed_patch_logits():
    loss = SpadeLoss.__new__(SpadeLoss)  # d_adv / g_adv only read their arguments
    real = [torch.tensor([[2.0, 0.5]]), torch.tensor([[-1.0]])]
    fake = [torch.tensor([[-2.0, 0.0]]), torch.tensor([[3.0]])]
    # scale 0: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; relu(1-2)=0, relu(1+0)=1 -> 0.5   => 0.75
    # scale 1: relu(1+1)=2; relu(1+3)=4                                                 => 6
    assert loss.d_adv(real, fake).item() == pytest.approx((0.75 + 6.0) / 2)
    assert loss.g_adv(fake).item() == pytest.approx((1.0 + -3.0) / 2)  # -mean: 1 and -3


def test_paired_feature_matching_by_hand():
    # two scales of (2 intermediate stages + the patch map); patch maps are left out
    real = [torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 9.0)] * 2
    fake = [torch.ones(1, 1, 2, 2), torch.full((1, 1, 1, 1), 3.0), torch.zeros(1, 1, 1, 1)] * 2
    # per scale: |1-0| + |3-1| = 3; summed over 2 scales, divided by 2 scales = 3
    assert paired_feature_matching(real, fake, n_stages=3).item() == pytest.approx(3.0)


class RecordingD(nn.Module):
    """Records its inputs; one stage whose output is the patch map (logit = mean of the input)."""

    n_stages = 1

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.scale = nn.Parameter(torch.ones(()))

    def patch_logits(self, feats):
        return feats

    def forward(self, x, return_features=False):
        self.seen.append(x.detach().clone())
        patch = x.mean(dim=1, keepdim=True) * self.scale
        return (patch.mean(dim=[1, 2, 3]), [patch]) if return_features else patch.mean(dim=[1, 2, 3])


class EchoG(nn.Module):
    """A conditional G whose image channels copy a fixed image: fake == real when given the real's mask."""

    conditional = True
    z_dim = 2

    def __init__(self, image):
        super().__init__()
        self.image = nn.Parameter(image.clone())
        self.masks: list[torch.Tensor] = []

    def forward(self, z, mask_onehot=None):
        self.masks.append(mask_onehot)
        return torch.cat([self.image * 1.0, mask_onehot], dim=1)


def test_real_and_fake_of_a_pair_get_the_same_augmentation():
    torch.manual_seed(0)
    mask = mask_to_onehot(random_masks(4, 16, 3), 3)
    image = torch.rand(4, 1, 16, 16) * 2 - 1
    real = torch.cat([image, mask], dim=1)
    D, G = RecordingD(), EchoG(image)
    pipe = DiffAugment("translation,cutout", channels=1)
    loss = SpadeLoss(LossConfig(name="spade", fm_weight=10.0), G, D, channels=1, num_labels=3, augment_pipe=pipe)
    total, terms = loss.g_loss(real, torch.zeros(4, 2))
    fake_seen, real_seen = D.seen[-2:]
    assert not torch.equal(real_seen, real)  # the augmentation did something ...
    assert torch.equal(fake_seen, real_seen)  # ... identically to both halves of each pair
    assert terms["G_fm"].item() == 0.0  # so the per-pair feature matching sees no difference
    assert torch.equal(G.masks[-1], mask)  # G was conditioned on the real batch's masks
    loss.d_loss(real, torch.zeros(4, 2))
    assert torch.equal(D.seen[-2], D.seen[-1])


def test_without_feature_matching_G_step_skips_D_on_reals():
    mask = mask_to_onehot(random_masks(2, 8, 3), 3)
    image = torch.zeros(2, 1, 8, 8)
    D, G = RecordingD(), EchoG(image)
    loss = SpadeLoss(LossConfig(name="spade", fm_weight=0.0), G, D, channels=1, num_labels=3)
    _, terms = loss.g_loss(torch.cat([image, mask], dim=1), torch.zeros(2, 2))
    assert len(D.seen) == 1 and "G_fm" not in terms


def test_label_smoothing_is_rejected():
    D, G = RecordingD(), EchoG(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="label_smoothing"):
        SpadeLoss(LossConfig(name="spade", label_smoothing=0.1), G, D, channels=1, num_labels=2)


def test_registries_and_gan_defaults():
    assert "spade" in MODELS and "spade" in LOSSES
    spec = GANS["spade"]
    assert (spec.model, spec.loss) == ("spade", "spade")
    assert spec.overrides["loss.fm_weight"] > 0 and spec.overrides["model.d_norm"] == "instance"


def test_vgg_term_is_paired():
    """With vgg_weight > 0 the G loss adds vgg_weight * sum_l mean|phi_l(real) - phi_l(fake)| (per pair)."""
    from medgan.models.vgg import load_vgg

    torch.manual_seed(0)
    vgg = load_vgg("vgg16-random")
    pair = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=16)
    loss = LOSSES["spade"](LossConfig(name="spade", vgg_weight=2.0, vgg_features="vgg16-random"), pair.G, pair.D,
                           channels=1, num_labels=3, vgg=vgg)
    mask = mask_to_onehot(random_masks(2, 16, 3), 3)
    real = torch.cat([torch.rand(2, 1, 16, 16) * 2 - 1, mask], dim=1)
    torch.manual_seed(1)
    total, terms = loss.g_loss(real, torch.randn(2, 8))
    torch.manual_seed(1)
    fake = pair.G(torch.randn(2, 8), mask)
    with torch.no_grad():
        expected = sum((r - f).abs().mean() for r, f in zip(vgg(real[:, :1]), vgg(fake[:, :1]), strict=True))
    assert terms["G_vgg"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert total.item() == pytest.approx(terms["G_adv"].item() + 2.0 * terms["G_vgg"].item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# through the trainer
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def disk_set(tmp_path_factory) -> Path:
    return make_disk_set(tmp_path_factory.mktemp("spade") / "disks")


def test_trains_without_nan_and_generates_from_warped_training_masks(disk_set, tmp_path):
    from medgan.generate import MASK_SOURCE_WARPED, generate

    run = train_run(disk_set, tmp_path / "run", "spade", 0.016, TINY_SETS)
    stats = finite_stats(run)
    assert {"G_fm", "G_adv", "D_adv"} <= set().union(*stats)
    assert all(math.isfinite(s["G_fm"]) for s in stats)
    out = generate(run, 6, tmp_path / "gen", batch=4, progress=False)
    ps = load_prepared(out)
    images, masks = ps.load("train")
    assert images.shape == (6, 1, 16, 16) and np.abs(images).max() <= 1
    assert set(np.unique(masks)) <= {0, 1, 2} and (masks > 0).any()
    assert ps.meta["source"] == "generated" and ps.meta["model"] == "spade"
    assert ps.meta["mask_source"] == MASK_SOURCE_WARPED


def test_resume_is_exact(disk_set, tmp_path):
    assert_resume_exact(disk_set, tmp_path, "spade", [*TINY_SETS, "aug.diffaugment=translation"])
