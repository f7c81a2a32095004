"""SPADE: conditional generator on the one-hot mask, multi-scale PatchGAN, hinge + paired FM loss, training."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medgan.augment import DiffAugment
from medgan.config import ConfigError, LossConfig, ModelConfig, TrainConfig
from medgan.data.prepared import load_prepared, mask_to_onehot, onehot_to_mask
from medgan.losses import LOSSES, paired_feature_matching
from medgan.losses.spade import SpadeLoss
from medgan.models import GANS, MODELS
from medgan.models.spade import SPADE, SpadeDiscriminator, SpadeGenerator
from medgan.models.vgg import load_vgg

TINY = ModelConfig(name="spade", latent_dim=8, g_filters=4, d_filters=4, channel_max=16, spade_hidden=4,
                   g_spectral=True, d_spectral=True, g_norm="batch", d_norm="instance", d_scales=2)
# --gan spade's defaults are upstream's full-size networks (92 M + 5.5 M parameters) with the pretrained
# VGG19 term: the trainer tests shrink them and use the labelled random VGG19.
TINY_SETS = ["model.latent_dim=8", "model.g_filters=4", "model.d_filters=4", "model.channel_max=16",
             "model.spade_hidden=4", "loss.vgg_features=vgg19-random"]
GOLDEN = Path(__file__).parent / "golden"
# NVlabs/SPADE (commit fecacc9) instantiated by tools/golden/make_spade_golden.py with train.py's defaults,
# label_nc 4, no instance map, output_nc 1 (D input 4 + 1 = our joint image + mask): the same at 128 and 256
# (the non-VAE G starts from a conv on the mask; upstream's conv_img always has 3 output channels).
OFFICIAL_G_PARAMS = 92_089_539
OFFICIAL_D_PARAMS = 5_531_778


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
    G = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=32).G.eval()
    m1 = torch.zeros(1, 32, 32, dtype=torch.long)
    m2 = m1.clone()
    m2[:, 8:24, 8:24] = 2
    z = torch.randn(1, 8)
    a = G(z, mask_to_onehot(m1, 3))
    b = G(z, mask_to_onehot(m2, 3))
    assert not torch.allclose(a[:, :1], b[:, :1])
    assert torch.equal(G(z, mask_to_onehot(m1, 3)), a)  # eval mode: deterministic given (z, mask)


def test_conditional_G_needs_a_mask():
    G = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=32).G
    with pytest.raises(ValueError, match="mask_onehot"):
        G(torch.randn(2, 8))


def test_bad_resolution_is_an_error():
    for size in (16, 24, 48):  # 'normal' upsampling: 5 doublings from R/32
        with pytest.raises(ValueError, match="multiple of 32"):
            MODELS["spade"](TINY, channels=1, num_labels=2, resolution=size)
    with pytest.raises(ValueError, match="multiple of 64"):
        MODELS["spade"](replace(TINY, spade_upsampling="more"), channels=1, num_labels=2, resolution=32)
    with pytest.raises(ConfigError, match="spade_upsampling"):
        MODELS["spade"](replace(TINY, spade_upsampling="many"), channels=1, num_labels=2, resolution=32)


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
    pair = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=32)
    G = pair.G.eval()
    G_ema = copy.deepcopy(G)
    mask = mask_to_onehot(random_masks(2, 32, 3), 3)
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
    fake_seen, real_seen = D.seen[-1][:4], D.seen[-1][4:]  # one D batch: cat([fake, real]), as upstream
    assert not torch.equal(real_seen, real)  # the augmentation did something ...
    assert torch.equal(fake_seen, real_seen)  # ... identically to both halves of each pair
    assert terms["G_fm"].item() == 0.0  # so the per-pair feature matching sees no difference
    assert torch.equal(G.masks[-1], mask)  # G was conditioned on the real batch's masks
    loss.d_loss(real, torch.zeros(4, 2))
    assert D.seen[-1].shape[0] == 8 and torch.equal(D.seen[-1][:4], D.seen[-1][4:])


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


def test_gan_spade_defaults_are_nvlabs_spade_train_defaults():
    """``--gan spade`` with no --set: upstream's options (base_options.py, train_options.py, networks)."""
    cfg = TrainConfig().with_overrides(dict(GANS["spade"].overrides))
    m, loss = cfg.model, cfg.loss
    assert (m.g_filters, m.d_filters, m.spade_hidden) == (64, 64, 128)  # ngf, ndf, SPADE nhidden
    assert m.channel_max >= 16 * 64  # 16 ngf at the head, uncapped
    assert (m.g_spectral, m.g_norm) == (True, "batch")  # spectralspadesyncbatch3x3 on one device
    assert (m.d_spectral, m.d_norm) == (True, "instance")  # spectralinstance
    assert (m.d_scales, m.d_layers) == (2, 4)  # num_D, n_layers_D
    assert (m.spade_upsampling, m.spade_z) == ("normal", False)  # no VAE: G starts from the mask
    assert (m.init, m.init_gain) == ("xavier", 0.02)
    assert (loss.fm_weight, loss.vgg_weight, loss.vgg_features) == (10.0, 10.0, "vgg19")
    assert (cfg.lr, cfg.lr_d, cfg.beta1, cfg.beta2) == (1e-4, 4e-4, 0.0, 0.9)  # TTUR from lr 2e-4


@pytest.mark.parametrize("resolution", [128, 256])
def test_parameter_counts_equal_upstream(resolution):
    """ACDC-like (1 channel, 4 labels): D exactly upstream's; G upstream's but conv_img's 2 missing output
    channels (upstream always paints RGB); with 3 channels G is exactly upstream's too."""
    cfg = replace(TrainConfig().with_overrides(dict(GANS["spade"].overrides)).model, name="spade")
    with torch.random.fork_rng(devices=[]):
        pair = MODELS["spade"](cfg, channels=1, num_labels=4, resolution=resolution)
        g = sum(p.numel() for p in pair.G.parameters())
        d = sum(p.numel() for p in pair.D.parameters())
        assert d == OFFICIAL_D_PARAMS
        assert g == OFFICIAL_G_PARAMS - 2 * (64 * 9 + 1)
        assert abs(g - OFFICIAL_G_PARAMS) / OFFICIAL_G_PARAMS < 0.01
        del pair
        G3 = SpadeGenerator(z_dim=256, channels=3, num_labels=4, resolution=resolution)
        assert sum(p.numel() for p in G3.parameters()) == OFFICIAL_G_PARAMS
    names = [n for n, _ in G3.named_children()]
    assert names == ["fc", "head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3", "conv_img"]
    assert isinstance(G3.fc, nn.Conv2d) and G3.fc.in_channels == 4 and G3.fc.out_channels == 1024


def test_init_is_upstream_xavier_and_reaches_spectral_norm_weights():
    torch.manual_seed(0)
    cfg = replace(TINY, g_filters=8, d_filters=8, channel_max=1024, spade_hidden=16, init="xavier", init_gain=0.02)
    pair = MODELS["spade"](cfg, channels=1, num_labels=3, resolution=32)
    for net in (pair.G, pair.D):
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(p) == 0, name
            elif p.dim() == 4 and p.numel() > 2000:
                fan_in, fan_out = p.shape[1] * p[0, 0].numel(), p.shape[0] * p[0, 0].numel()
                expected = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
                assert p.std().item() == pytest.approx(expected, rel=0.1), name
    assert any("parametrizations.weight.original" in n for n, _ in pair.G.named_parameters())


def test_z_is_ignored_by_default_and_drives_the_z_variant():
    torch.manual_seed(0)
    mask = mask_to_onehot(random_masks(2, 32, 3), 3)
    G = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=32).G.eval()
    assert torch.equal(G(torch.randn(2, 8), mask), G(torch.randn(2, 8), mask))  # upstream: deterministic
    Gz = MODELS["spade"](replace(TINY, spade_z=True), channels=1, num_labels=3, resolution=32).G.eval()
    assert isinstance(Gz.fc, nn.Linear) and Gz.fc.in_features == 8
    assert not torch.allclose(Gz(torch.randn(2, 8), mask), Gz(torch.randn(2, 8), mask))


@pytest.mark.parametrize(("upsampling", "resolution"), [("more", 64), ("most", 128)])
def test_more_and_most_upsampling(upsampling, resolution):
    torch.manual_seed(0)
    G = MODELS["spade"](replace(TINY, spade_upsampling=upsampling), channels=1, num_labels=3,
                        resolution=resolution).G
    assert G.sh == 1 and hasattr(G, "up_4") == (upsampling == "most")
    out = G(torch.randn(2, 8), mask_to_onehot(random_masks(2, resolution, 3), 3))
    assert out.shape == (2, 4, resolution, resolution)


def test_vgg_term_is_paired_and_layer_weighted():
    """vgg_weight * sum_l w_l mean|phi_l(real) - phi_l(fake)| per pair, w = 1/32 ... 1 (VGG19)."""
    torch.manual_seed(0)
    vgg = load_vgg("vgg19-random")
    pair = MODELS["spade"](TINY, channels=1, num_labels=3, resolution=32)
    loss = LOSSES["spade"](LossConfig(name="spade", vgg_weight=2.0, vgg_features="vgg19-random"), pair.G, pair.D,
                           channels=1, num_labels=3, vgg=vgg)
    assert loss.vgg_name == "vgg19-random"
    mask = mask_to_onehot(random_masks(2, 32, 3), 3)
    real = torch.cat([torch.rand(2, 1, 32, 32) * 2 - 1, mask], dim=1)
    pair.G.eval()  # fixed spectral-norm vectors and BN statistics: G gives the same fake twice
    total, terms = loss.g_loss(real, torch.randn(2, 8))
    fake = pair.G(torch.randn(2, 8), mask)
    with torch.no_grad():
        pairs = zip(vgg.layer_weights, vgg(real[:, :1]), vgg(fake[:, :1]), strict=True)
        expected = sum(w * (r - f).abs().mean() for w, r, f in pairs)
    assert terms["G_vgg"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(terms["G_adv"].item() + 2.0 * terms["G_vgg"].item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# golden vectors from NVlabs/SPADE (tools/golden/make_spade_golden.py)
# ---------------------------------------------------------------------------------------------
def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"spade_{name}.npz") as z:
        return {k: z[k] for k in z.files}


def upstream_state(g: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Upstream's state dict ("w." entries) under our names: the old ``spectral_norm``'s
    ``weight_orig/_u/_v`` become the parametrisation's ``original``, ``0._u``, ``0._v``; float16 storage -> float32."""
    out = {}
    for k, a in g.items():
        if not k.startswith("w."):
            continue
        k = k[2:]
        for old, new in (("weight_orig", "parametrizations.weight.original"),
                         ("weight_u", "parametrizations.weight.0._u"), ("weight_v", "parametrizations.weight.0._v")):
            if k.endswith("." + old):
                k = k[: -len(old)] + new
        t = torch.from_numpy(a)
        out[k] = t.float() if t.dtype == torch.float16 else t
    return out


def golden_G(g) -> SpadeGenerator:
    G = SpadeGenerator(z_dim=8, channels=3, num_labels=3, resolution=32, filters=int(g["ngf"]))
    G.load_state_dict(upstream_state(g), strict=True)
    return G


def golden_D(g) -> SpadeDiscriminator:
    D = SpadeDiscriminator(in_channels=6, filters=int(g["ndf"]), scales=int(g["num_D"]),
                           n_layers=int(g["n_layers"]), label_channels=3)
    D.load_state_dict(upstream_state(g), strict=True)
    return D


def assert_close(ours: torch.Tensor, theirs: np.ndarray, tol: float = 1e-5) -> float:
    ours = ours.detach().float().numpy()
    assert ours.shape == theirs.shape
    assert np.abs(theirs).max() > 0.05  # a real signal, not a vanishing one
    diff = float(np.abs(ours - theirs).max())
    assert diff <= tol, diff
    return diff


def test_golden_files_name_the_upstream_commit():
    for name in ("norm", "generator", "discriminator", "loss"):
        g = golden(name)
        assert str(g["upstream"]) == "NVlabs/SPADE" and len(str(g["commit"])) == 40
        assert (GOLDEN / f"spade_{name}.npz").stat().st_size < 2_000_000


def test_golden_spade_normalisation():
    g = golden("norm")
    norm = SPADE(8, 3, 128, "batch")
    norm.load_state_dict(upstream_state(g), strict=True)
    x, seg = torch.from_numpy(g["x"]), torch.from_numpy(g["seg"])
    assert_close(norm(x, seg), g["out_train"])  # batch statistics; the 32x32 map nearest-resized to 8x8
    norm.eval()
    assert_close(norm(x, seg), g["out_eval"])  # running statistics after that step


def test_golden_generator():
    g = golden("generator")
    G = golden_G(g)
    mask = torch.from_numpy(g["seg"]) * 2 - 1  # our {-1, +1} one-hot of upstream's label map
    z = torch.randn(2, 8)  # ignored, as upstream without the VAE
    out = G(z, mask)
    assert torch.equal(out[:, 3:], mask)
    assert_close(out[:, :3], g["out_train"])  # train mode: a power iteration, batch statistics
    G.eval()
    assert_close(G(z, mask)[:, :3], g["out_eval"])


def test_golden_multiscale_discriminator():
    g = golden("discriminator")
    D = golden_D(g)
    joint = torch.cat([torch.from_numpy(g["image"]), torch.from_numpy(g["seg"]) * 2 - 1], dim=1)
    for mode in ("train", "eval"):
        D.train(mode == "train")
        logits, feats = D(joint, return_features=True)
        assert len(feats) == len([k for k in g if k.startswith(mode + "_")]) == 2 * 5
        for i, f in enumerate(feats):
            assert_close(f, g[f"{mode}_{i}"])
        expected = np.mean([g[f"{mode}_{i}"].mean(axis=(1, 2, 3)) for i in (4, 9)], axis=0)
        assert np.abs(logits.detach().numpy() - expected).max() <= 1e-5


def test_golden_loss_hinge_feature_matching_vgg19():
    """One upstream ``compute_generator_loss`` then ``compute_discriminator_loss`` (same starting weights,
    same order of train-mode forwards), against SpadeLoss.g_loss then d_loss."""
    gl = golden("loss")
    G, D = golden_G(golden("generator")), golden_D(golden("discriminator"))
    seg = torch.from_numpy(gl["seg"])
    real = torch.cat([torch.from_numpy(gl["image"]), seg * 2 - 1], dim=1)
    cfg = LossConfig(name="spade", fm_weight=float(gl["lambda_feat"]), vgg_weight=float(gl["lambda_vgg"]),
                     vgg_features="vgg19-random")
    loss = LOSSES["spade"](cfg, G, D, channels=3, num_labels=3, vgg=load_vgg("vgg19-random"))
    total, terms = loss.g_loss(real, torch.zeros(2, 8))
    assert_close(terms["G_adv"], gl["G_GAN"])
    assert_close(cfg.fm_weight * terms["G_fm"], gl["G_GAN_Feat"])
    assert_close(cfg.vgg_weight * terms["G_vgg"], gl["G_VGG"])
    assert_close(total, gl["G_GAN"] + gl["G_GAN_Feat"] + gl["G_VGG"])
    d_total, d_terms = loss.d_loss(real, torch.zeros(2, 8))
    assert_close(d_total, gl["D_D_Fake"] + gl["D_D_real"])


# ---------------------------------------------------------------------------------------------
# through the trainer
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def disk_set32(make_disk_set, tmp_path_factory) -> Path:
    """``disk_set`` at 32x32: upstream's 'normal' G starts at R/32."""
    return make_disk_set(tmp_path_factory.mktemp("data") / "disks32", size=32)


def test_trains_without_nan_and_generates_from_warped_training_masks(train_disk_run, finite_stats, disk_set32,
                                                                      tmp_path):
    from medgan.generate import MASK_SOURCE_WARPED, generate

    run = train_disk_run(disk_set32, tmp_path / "run", "spade", 0.016, TINY_SETS)
    stats = finite_stats(run)
    assert {"G_fm", "G_adv", "D_adv", "G_vgg"} <= set().union(*stats)
    assert all(math.isfinite(s["G_fm"]) for s in stats)
    out = generate(run, 6, tmp_path / "gen", batch=4, progress=False)
    ps = load_prepared(out)
    images, masks = ps.load("train")
    assert images.shape == (6, 1, 32, 32) and np.abs(images).max() <= 1
    assert set(np.unique(masks)) <= {0, 1, 2} and (masks > 0).any()
    assert ps.meta["source"] == "generated" and ps.meta["model"] == "spade"
    assert ps.meta["mask_source"] == MASK_SOURCE_WARPED


def test_resume_is_exact(assert_resume_exact, disk_set32, tmp_path):
    assert_resume_exact(disk_set32, tmp_path, "spade", [*TINY_SETS, "aug.diffaugment=translation"])
