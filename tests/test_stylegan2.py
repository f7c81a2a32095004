"""StyleGAN2 in pure PyTorch: resampling ops, modulated conv, networks, loss (R1, path length, ADA), training.

The trainer helpers it shares with the SPADE tests (``disk_set``, ``train_disk_run``, ``assert_resume_exact``,
``finite_stats``) live in conftest.py.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgan.augment import AdaptiveAugment, DiffAugment
from medgan.config import ConfigError, LossConfig, ModelConfig
from medgan.data.prepared import load_prepared
from medgan.losses import LOSSES, r1_penalty
from medgan.losses.stylegan2 import StyleGAN2Loss
from medgan.models import GANS, MODELS
from medgan.models.ops import (
    blur2d,
    conv2d_resample,
    downsample2d,
    setup_filter,
    unwrap_module,
    upfirdn2d,
    upsample2d,
)
from medgan.models.stylegan2 import (
    ADA_TARGET,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    minibatch_stddev,
    modulated_conv2d,
)

TINY = ModelConfig(name="stylegan2", latent_dim=16, w_dim=16, mapping_layers=2, channel_max=8)
TINY_SETS = ["model.channel_max=16", "model.w_dim=16", "model.latent_dim=16", "model.mapping_layers=2"]


# ---------------------------------------------------------------------------------------------
# resampling ops
# ---------------------------------------------------------------------------------------------
F64 = setup_filter().double()


def test_filter_is_normalised_binomial():
    f = setup_filter()
    assert f.shape == (4, 4)
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)


@pytest.mark.parametrize("op,scale", [(upsample2d, 2.0), (downsample2d, 0.5), (blur2d, 1.0)])
def test_constant_image_stays_constant(op, scale):
    x = torch.full((2, 3, 16, 16), 0.7, dtype=torch.float64)
    y = op(x, F64)
    assert y.shape == (2, 3, int(16 * scale), int(16 * scale))
    m = 3  # the zero padding reaches at most the filter's support into the image
    assert torch.allclose(y[..., m:-m, m:-m], torch.full_like(y[..., m:-m, m:-m], 0.7), atol=1e-12)
    assert not torch.allclose(y, torch.full_like(y, 0.7))  # the border does see the zero padding


def test_upsample_is_zero_insertion_then_filter():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    z = torch.zeros(1, 2, 10, 10, dtype=torch.float64)
    z[..., ::2, ::2] = x
    ref = F.conv2d(F.pad(z, [2, 1, 2, 1]), (F64 * 4)[None, None].repeat(2, 1, 1, 1), groups=2)
    assert torch.allclose(upsample2d(x, F64), ref, atol=1e-12)


def test_negative_padding_crops():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    delta = torch.ones(1, 1)
    assert torch.equal(upfirdn2d(x, delta, pad=(-1, -2, -2, 0)), x[..., 2:, 1:4])


def test_conv2d_resample_matches_resample_then_conv():
    """Up: transposed conv + blur == blur-upsample then conv (flipped kernel); down: blur + strided conv ==
    conv then blur-downsample. Equal away from the border (where the zero padding sits differently)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    up = conv2d_resample(x, w, F64, up=2, padding=1)
    ref = F.conv2d(upsample2d(x, F64), w.flip([2, 3]), padding=1)
    assert up.shape == ref.shape == (2, 5, 16, 16)
    assert torch.allclose(up[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-10)
    down = conv2d_resample(x, w, F64, down=2, padding=1)
    ref = downsample2d(F.conv2d(x, w, padding=1), F64)
    assert down.shape == ref.shape == (2, 5, 4, 4)
    assert torch.allclose(down[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-10)
    w1 = torch.randn(5, 3, 1, 1, dtype=torch.float64)
    assert torch.allclose(conv2d_resample(x, w1, F64, down=2), downsample2d(F.conv2d(x, w1), F64), atol=1e-10)


def test_grouped_transposed_conv_equals_per_group():
    torch.manual_seed(1)
    x = torch.randn(1, 2 * 3, 6, 6, dtype=torch.float64)
    w = torch.randn(2 * 4, 3, 3, 3, dtype=torch.float64)
    grouped = conv2d_resample(x, w, F64, up=2, padding=1, groups=2)
    parts = [conv2d_resample(x[:, 3 * g : 3 * g + 3], w[4 * g : 4 * g + 4], F64, up=2, padding=1) for g in range(2)]
    assert torch.allclose(grouped, torch.cat(parts, 1), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# modulated convolution
# ---------------------------------------------------------------------------------------------
def reference_modconv(x, weight, styles, *, demodulate, up, padding):
    """One explicit weight per sample, one F.conv2d (or the up path) per sample."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt((w**2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xn = x[n : n + 1]
        if up == 1:
            outs.append(F.conv2d(xn, w, padding=padding))
        else:
            outs.append(conv2d_resample(xn, w, setup_filter(), up=up, padding=padding))
    return torch.cat(outs)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_equals_per_sample_reference(fused, demodulate, up):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8)
    weight = torch.randn(5, 4, 3, 3)
    styles = torch.randn(3, 4)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, fused=fused, up=up, padding=1,
                           resample_filter=setup_filter())
    ref = reference_modconv(x, weight, styles, demodulate=demodulate, up=up, padding=1)
    assert out.shape == (3, 5, 8 * up, 8 * up)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), (out - ref).abs().max()


def test_demodulation_gives_unit_output_variance():
    """With unit-variance iid input, a demodulated conv's output has unit variance whatever the style."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 32, 32)
    styles = torch.tensor([[0.1] * 64, [30.0] * 64])
    y = modulated_conv2d(x, torch.randn(8, 64, 3, 3), styles, fused=False, padding=1)
    std = y[..., 1:-1, 1:-1].std(dim=[1, 2, 3])
    assert torch.allclose(std, torch.ones(2), atol=0.05), std


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_shapes_and_channel_counts(channels, resolution):
    K = 4
    torch.manual_seed(0)
    pair = MODELS["stylegan2"](TINY, channels=channels, num_labels=K, resolution=resolution)
    G, D = pair.G, pair.D
    assert G.z_dim == 16 and G.conditional is False
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    z = torch.randn(2, G.z_dim)
    joint = G(z)
    assert joint.shape == (2, channels + K, resolution, resolution)
    logits, feats = D(joint, return_features=True)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert len(feats) == int(math.log2(resolution)) - 2 + 1
    G.eval()
    sample = G(z)
    assert sample.shape == joint.shape and sample.min() >= -1 and sample.max() <= 1


def test_bad_resolution_is_an_error():
    with pytest.raises(ValueError, match="power-of-two"):
        MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=48)


def test_fused_and_unfused_synthesis_agree():
    torch.manual_seed(0)
    G = MODELS["stylegan2"](TINY, channels=1, num_labels=3, resolution=16).G.eval()
    ws = G.sample_ws(torch.randn(3, 16))
    torch.manual_seed(1)
    a = G.synthesis(ws, fused=True)
    torch.manual_seed(1)
    b = G.synthesis(ws, fused=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_truncation_and_w_avg():
    torch.manual_seed(0)
    G = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16).G
    z = torch.randn(8, 16)
    G.train()
    G(z)  # one training forward moves w_avg toward the batch mean of w
    w_avg = G.mapping.w_avg.clone()
    assert w_avg.abs().sum() > 0
    G.eval()
    ws0 = G.sample_ws(z, truncation_psi=0.0)
    assert torch.allclose(ws0, w_avg.expand_as(ws0))
    ws1 = G.sample_ws(z, truncation_psi=1.0)
    ws_half = G.sample_ws(z, truncation_psi=0.5)
    assert torch.allclose(ws_half, 0.5 * (ws1 + w_avg), atol=1e-6)
    assert torch.equal(G.mapping.w_avg, w_avg)  # eval never moves it


def test_noise_is_fresh_in_training_and_fixed_in_eval():
    torch.manual_seed(0)
    G = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16).G
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
    ws = G.sample_ws(torch.randn(2, 16)).detach()
    assert not torch.equal(G.synthesis(ws), G.synthesis(ws))  # training: new noise every call
    G.eval()
    rng = torch.get_rng_state()
    a, b = G.synthesis(ws), G.synthesis(ws)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), rng)  # sampling draws nothing from the global RNG


def test_style_mixing_only_in_training():
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=8, w_dim=8, resolution=16, out_channels=3, channel_max=8, mapping_layers=2,
                           style_mixing=1.0)
    z = torch.randn(16, 8)
    G.train()
    ws = G.sample_ws(z)
    distinct = [(ws[i] - ws[i, :1]).abs().amax(dim=1).gt(0).any().item() for i in range(16)]
    assert all(distinct)  # with probability 1 every sample switches to a second w at some layer >= 1
    assert torch.equal(ws[:, 0], G.mapping(z, update_w_avg=False)[:, 0])
    G.eval()
    ws = G.sample_ws(z)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))


def test_minibatch_stddev_value_and_groups():
    x = torch.randn(6, 4, 2, 2)
    y = minibatch_stddev(x, group_size=4)  # 6 is not divisible by 4: groups of 3
    assert y.shape == (6, 5, 2, 2)
    g0 = x[[0, 2, 4]]  # reshape(G, -1, ...) puts samples 0, 2, 4 in one group
    expected = (g0.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(y[0, 4], expected.expand(2, 2), atol=1e-6)
    assert torch.equal(y[:, :4], x)


def test_deepcopy_channels_last_and_ema_friendly():
    torch.manual_seed(0)
    pair = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16)
    G_ema = copy.deepcopy(pair.G).eval()
    for p, q in zip(pair.G.parameters(), G_ema.parameters(), strict=True):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    x = torch.randn(4, 3, 16, 16)
    D_cl = copy.deepcopy(pair.D).to(memory_format=torch.channels_last)
    assert torch.allclose(pair.D(x), D_cl(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)
    z = torch.randn(2, 16)
    G_cl = copy.deepcopy(G_ema).to(memory_format=torch.channels_last)
    assert torch.allclose(G_ema(z), G_cl(z), atol=1e-5)  # noise_strength is 0 at init: deterministic


def test_bf16_autocast_forward_backward():
    torch.manual_seed(0)
    pair = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = pair.D(pair.G(torch.randn(4, 16)))
    logits.float().mean().backward()
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in pair.G.parameters() if p.grad is not None)


def test_equalised_lr_mapping_uses_lr_multiplier():
    G = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16).G
    fc = G.mapping.layers[0]
    assert fc.weight_gain == pytest.approx(0.01 / math.sqrt(16))
    assert fc.weight.std().item() == pytest.approx(100, rel=0.2)  # stored N(0, 1) / lr_mul


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def make_loss(const_g):
    """``make_loss(D, fake=None, **loss_cfg) -> StyleGAN2Loss`` with a G that always returns ``fake``."""

    def build(D, fake=None, **cfg):
        fake = torch.zeros(2, 3, 4, 4) if fake is None else fake
        kw = {k: cfg.pop(k) for k in ("augment_pipe", "ada_target") if k in cfg}
        return StyleGAN2Loss(LossConfig(name="stylegan2", **cfg), const_g(fake, z_dim=2), D, channels=1, num_labels=2, **kw)

    return build


def test_r1_equals_closed_form_on_linear_D(linear_d, make_loss):
    torch.manual_seed(0)
    D = linear_d(torch.randn(3, 4, 4), ada=True)
    real = torch.randn(5, 3, 4, 4)
    assert r1_penalty(D, real).item() == pytest.approx(D.w.pow(2).sum().item(), rel=1e-6)
    loss = make_loss(D, r1_gamma=2.5, r1_interval=4)
    total, terms = loss.d_regularize(real, step=8)
    assert total.item() == pytest.approx(4 * 2.5 / 2 * D.w.pow(2).sum().item(), rel=1e-6)
    assert terms["D_r1"].item() == pytest.approx(D.w.pow(2).sum().item(), rel=1e-6)
    total.backward()  # R1's gradient flows into D: d/dw (c ||w||^2) = 2 c w
    assert torch.allclose(D.w.grad, 2 * (4 * 2.5 / 2) * D.w.detach(), rtol=1e-5)
    assert loss.d_regularize(real, step=9) == (None, {})
    assert make_loss(D, r1_gamma=0.0).d_regularize(real, step=0) == (None, {})


def test_logistic_losses_on_fixed_logits(linear_d, make_loss):
    def softplus(v):
        return math.log1p(math.exp(v))

    D = linear_d(torch.randn(3, 4, 4), ada=True)
    with torch.no_grad():
        D.w.zero_()
        D.w[0, 0, 0] = 1.0
    real = torch.zeros(2, 3, 4, 4)
    real[:, 0, 0, 0] = torch.tensor([2.0, -1.0])
    fake = torch.zeros(2, 3, 4, 4)
    fake[:, 0, 0, 0] = torch.tensor([0.5, -3.0])
    loss = make_loss(D, fake)
    d_total, d_terms = loss.d_loss(real, torch.zeros(2, 2))
    expect_d = (softplus(0.5) + softplus(-3.0)) / 2 + (softplus(-2.0) + softplus(1.0)) / 2
    assert d_total.item() == pytest.approx(expect_d, rel=1e-6)
    assert d_terms["D_real"].item() == pytest.approx(0.5) and d_terms["D_fake"].item() == pytest.approx(-1.25)
    g_total, _ = loss.g_loss(real, torch.zeros(2, 2))
    assert g_total.item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, rel=1e-6)


def test_label_smoothing_is_rejected(linear_d, make_loss):
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_loss(linear_d(torch.randn(3, 4, 4), ada=True), label_smoothing=0.1)


def test_path_length_penalty_is_its_own_lazy_g_phase():
    """StyleGAN2-ADA's Greg: g_loss is the adversarial term only; g_regularize adds pl_weight * interval * pl."""
    torch.manual_seed(0)
    pair = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16)
    loss = StyleGAN2Loss(LossConfig(name="stylegan2", pl_weight=2.0), pair.G, pair.D, channels=1, num_labels=2)
    real, z = torch.randn(4, 3, 16, 16), torch.randn(4, 16)
    g_total, g_terms = loss.g_loss(real, z, step=4)
    assert "G_pl" not in g_terms and g_total.item() == pytest.approx(g_terms["G_adv"].item())
    total, terms = loss.g_regularize(lambda: z, step=4)
    assert math.isfinite(terms["G_pl"].item()) and loss.pl_interval == 4
    assert pair.G.pl_mean.item() > 0  # the EMA of the path lengths started moving from 0
    assert total.item() == pytest.approx(2.0 * 4 * terms["G_pl"].item(), rel=1e-6)
    assert terms["G_reg"].item() == pytest.approx(total.item())
    total.backward()
    assert pair.G.mapping.layers[0].weight.grad is not None
    before = pair.G.pl_mean.clone()
    drawn = []
    assert loss.g_regularize(lambda: drawn.append(1) or z, step=5) == (None, {})  # off-interval: no penalty, no update
    assert drawn == []  # ... and no z drawn, so the latent stream only moves when the phase runs
    assert torch.equal(pair.G.pl_mean, before)
    off = StyleGAN2Loss(LossConfig(name="stylegan2", pl_weight=0.0), pair.G, pair.D, channels=1, num_labels=2)
    assert off.g_regularize(lambda: z, step=0) == (None, {})


def test_adaptive_augment_probability():
    x = torch.randn(64, 3, 8, 8)
    pipe = DiffAugment("translation,cutout", channels=1)
    p = torch.zeros([])
    ada = AdaptiveAugment(pipe, p)
    assert torch.equal(ada(x), x)  # p = 0: nothing augmented
    p.fill_(1.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(ada(x, generator=g1), pipe(x, generator=g2))  # p = 1: all augmented
    p.fill_(0.5)
    changed = (ada(x) != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.8


def test_ada_moves_p_toward_target(linear_d, make_loss):
    D = linear_d(torch.randn(3, 4, 4), ada=True)
    real = torch.ones(8, 3, 4, 4)
    with torch.no_grad():
        D.w.fill_(1.0)  # D(real) > 0 for every real: r_t = 1 > target -> more augmentation
    loss = make_loss(D, augment_pipe=DiffAugment("translation", channels=1), ada_target=0.6)
    assert isinstance(loss.augment_pipe, AdaptiveAugment)
    _, terms = loss.d_loss(real, torch.zeros(8, 2))
    step = 8 / (loss.ada_kimg * 1000)
    assert terms["ada_rt"].item() == 1.0
    assert D.ada_p.item() == pytest.approx(step)
    with torch.no_grad():
        D.w.fill_(-1.0)  # r_t = -1 < target -> less, clamped at 0
    loss.d_loss(real, torch.zeros(8, 2))
    loss.d_loss(real, torch.zeros(8, 2))
    assert D.ada_p.item() == 0.0


def test_ada_without_augmentations_is_a_config_error(linear_d, make_loss):
    with pytest.raises(ConfigError, match="diffaugment"):
        make_loss(linear_d(torch.randn(3, 4, 4), ada=True), ada_target=0.6)


def test_registries_and_gan_defaults_are_paper256():
    """``--gan stylegan2`` alone = stylegan2-ada-pytorch ``--cfg paper256`` (train.py), fp32."""
    from medgan.config import TrainConfig
    from medgan.train import apply_gan

    assert "stylegan2" in MODELS and "stylegan2" in LOSSES
    spec = GANS["stylegan2"]
    assert (spec.model, spec.loss) == ("stylegan2", "stylegan2")
    cfg = apply_gan(TrainConfig(), "stylegan2")
    assert (cfg.batch, cfg.lr, cfg.lr_d, cfg.beta1, cfg.beta2) == (64, 0.0025, None, 0.0, 0.99)
    assert (cfg.ema_kimg, cfg.ema_rampup, cfg.amp) == (20.0, 0.0, "off")
    m = cfg.model
    assert (m.latent_dim, m.w_dim, m.mapping_layers, m.style_mixing) == (512, 512, 8, 0.9)
    assert (m.channel_base, m.channel_max, m.mbstd_group) == (16384, 512, 8)
    assert (cfg.loss.r1_gamma, cfg.loss.r1_interval, cfg.loss.pl_weight) == (1.0, 16, 2.0)
    assert (StyleGAN2Loss.pl_interval, StyleGAN2Loss.pl_batch_shrink, StyleGAN2Loss.pl_decay) == (4, 2, 0.01)
    assert ADA_TARGET == 0.6 and cfg.aug.ada_target == 0.0  # paper256 trains without ADA
    assert ModelConfig().channel_max == 256 and ModelConfig().mbstd_group == 4  # other models unchanged


# stylegan2-ada-pytorch d72cc7d, Generator / Discriminator(architecture="resnet") with the paper256 kwargs
# (z = w = 512, mapping 8, channel_base 16384, channel_max 512, mbstd 8) and img_channels = 5 (ACDC: 1
# image + 4 label channels): sum(p.numel() for p in G.parameters()), likewise D.
OFFICIAL_PARAMS = {128: (24_530_089, 23_882_625), 256: (24_772_464, 24_001_217)}


@pytest.mark.parametrize("resolution", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_equal_the_official_networks(resolution):
    from medgan.config import TrainConfig
    from medgan.train import apply_gan

    cfg = apply_gan(TrainConfig(), "stylegan2").model
    pair = MODELS["stylegan2"](cfg, channels=1, num_labels=4, resolution=resolution)
    ours = tuple(sum(p.numel() for p in net.parameters()) for net in (pair.G, pair.D))
    assert ours == OFFICIAL_PARAMS[resolution]  # equal, well inside the 1 % the issue allows


def test_bad_widths_are_a_config_error():
    with pytest.raises(ConfigError, match="mbstd_group"):
        MODELS["stylegan2"](ModelConfig(name="stylegan2", mbstd_group=0), channels=1, num_labels=2, resolution=16)


def test_unwrap_module_sees_through_compile():
    G = MODELS["stylegan2"](TINY, channels=1, num_labels=2, resolution=16).G
    assert unwrap_module(torch.compile(G)) is G
    assert unwrap_module(G) is G


# ---------------------------------------------------------------------------------------------
# through the trainer
# ---------------------------------------------------------------------------------------------
def test_trains_without_nan_and_generates_a_prepared_set(train_disk_run, finite_stats, disk_set, tmp_path):
    from medgan.generate import generate

    run = train_disk_run(disk_set, tmp_path / "run", "stylegan2", 0.016,
                    [*TINY_SETS, "loss.pl_weight=2", "loss.r1_interval=2"])
    stats = finite_stats(run)
    assert {"D_r1", "G_pl", "G_adv", "D_adv"} <= set().union(*stats)
    out = generate(run, 6, tmp_path / "gen", batch=4, progress=False)
    ps = load_prepared(out)
    images, masks = ps.load("train")
    assert images.shape == (6, 1, 16, 16) and masks.shape == (6, 16, 16)
    assert set(np.unique(masks)) <= {0, 1, 2} and np.abs(images).max() <= 1
    assert ps.meta["source"] == "generated" and ps.meta["model"] == "stylegan2"
    assert ps.meta["mask_source"] == "generator"


def test_resume_is_exact_with_r1_path_length_and_ada(assert_resume_exact, disk_set, tmp_path):
    sets = [*TINY_SETS, "loss.pl_weight=2", "loss.r1_interval=2", "aug.diffaugment=translation,cutout",
            "aug.ada_target=0.6"]
    state = assert_resume_exact(disk_set, tmp_path, "stylegan2", sets)
    # the regularisers' and ADA's states moved and were part of what resumed exactly
    assert state["G"]["pl_mean"].item() != 0
    assert state["D"]["ada_p"].item() != 0


def test_ada_through_the_trainer_needs_a_supporting_loss(train_disk_run, disk_set, tmp_path):
    from medgan.train import read_stats

    run = train_disk_run(disk_set, tmp_path / "ada", "stylegan2", 0.008,
                    [*TINY_SETS, "aug.diffaugment=translation", "aug.ada_target=0.6"])
    assert all("ada_p" in line and "ada_rt" in line for line in read_stats(run))
    with pytest.raises(ConfigError, match="ada_target"):
        train_disk_run(disk_set, tmp_path / "dcgan", "dcgan", 0.008, ["aug.diffaugment=translation", "aug.ada_target=0.6"])
    assert not (tmp_path / "dcgan").exists()  # rejected before anything was written


def test_bench_train_reports_s_per_kimg():
    from medgan.train_bench import bench_train, format_table

    res = bench_train("stylegan2", 8, 4, steps=1, warmup=1, device="cpu", modes=("fp32",), overrides=TINY_SETS)
    (row,) = res["results"]
    assert res["gan"] == "stylegan2" and row["finite"]
    assert row["img_per_s"] > 0 and row["s_per_kimg"] == pytest.approx(1000 / row["img_per_s"])
    assert "s/kimg" in format_table(res)


@pytest.mark.slow
def test_compiled_training_step_does_not_fall_back():
    """G and D compile (dynamo + inductor on CPU) and the lazy R1 / path length run on the eager modules."""
    import warnings

    from medgan.config import TrainConfig, apply_overrides
    from medgan.train import Trainer, apply_gan

    cfg = apply_overrides(apply_gan(TrainConfig(compile=True), "stylegan2"),
                          [*TINY_SETS, "batch=4", "loss.pl_weight=2"])
    joint = torch.cat([torch.rand(8, 1, 16, 16) * 2 - 1, torch.ones(8, 2, 16, 16)], dim=1)
    trainer = Trainer(cfg, joint, channels=1, num_labels=2, device=torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = trainer.train_step()
    assert not [w for w in caught if "eager" in str(w.message)]  # the trainer's fall-back warning
    assert isinstance(trainer.loss.G, torch._dynamo.eval_frame.OptimizedModule)
    assert "D_r1" in stats and "G_pl" in stats
    assert all(torch.isfinite(v).all() for v in stats.values())


def test_lazy_regularisation_compensates_adam():
    """StyleGAN2-ADA's mb_ratio: R1 every 16 D steps -> D lr * 16/17, betas ** (16/17); likewise G with path length."""
    from medgan.config import TrainConfig, apply_overrides
    from medgan.train import Trainer, apply_gan

    base = apply_overrides(apply_gan(TrainConfig(), "stylegan2"), [*TINY_SETS, "batch=4", "loss.pl_weight=2"])
    joint = torch.cat([torch.rand(8, 1, 16, 16) * 2 - 1, torch.ones(8, 2, 16, 16)], dim=1)
    t = Trainer(base, joint, channels=1, num_labels=2, device=torch.device("cpu"))
    k, g = base.loss.r1_interval, t.loss.pl_interval
    (d_group,), (g_group,) = t.opt_D.param_groups, t.opt_G.param_groups
    lr_d = base.lr if base.lr_d is None else base.lr_d
    assert d_group["lr"] == pytest.approx(lr_d * k / (k + 1))
    assert d_group["betas"][1] == pytest.approx(base.beta2 ** (k / (k + 1)))
    assert d_group["eps"] == g_group["eps"] == 1e-8  # paper256's Adam epsilon
    assert g_group["lr"] == pytest.approx(base.lr * g / (g + 1))
    plain = Trainer(apply_overrides(base, ["loss.pl_weight=0", "loss.r1_gamma=0"]), joint, channels=1, num_labels=2,
                    device=torch.device("cpu"))
    assert plain.opt_D.param_groups[0]["lr"] == pytest.approx(lr_d) and plain.opt_G.param_groups[0]["lr"] == pytest.approx(base.lr)


# ---------------------------------------------------------------------------------------------
# golden vectors from the official code (tests/golden/README.md; tools/golden/make_stylegan2_golden.py)
# ---------------------------------------------------------------------------------------------
GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-5  # max |ours - official|, relative to max(1, max |official|)


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"stylegan2_{name}.npz") as f:
        return dict(f)


def official_to_ours(name: str, resolution: int) -> str:
    """Official parameter/buffer name -> ours: ``mapping.fc3.weight`` -> ``mapping.layers.3.weight``,
    ``synthesis.b16.conv0.weight`` -> ``synthesis.blocks.2.conv0.weight``, D ``b32.conv1.bias`` ->
    ``blocks.0.conv1.bias`` (blocks from full resolution down), ``b4.fc.weight`` -> ``fc.weight``."""
    parts = name.split(".")
    if parts[0] == "mapping":
        return ".".join(["mapping", "layers", parts[1][2:], *parts[2:]] if parts[1].startswith("fc") else parts)
    if parts[0] == "synthesis":
        return ".".join(["synthesis", "blocks", str(int(math.log2(int(parts[1][1:]))) - 2), *parts[2:]])
    res = int(parts[0][1:])
    if res == 4:
        return ".".join(parts[1:])
    return ".".join(["blocks", str(int(math.log2(resolution // res))), *parts[1:]])


def official_weights(data: dict, net: str, resolution: int) -> dict[str, torch.Tensor]:
    """``w/...`` arrays of ``net`` ("G": mapping.* / synthesis.*, "D": b<res>.*) under our names."""
    is_g = ("w/mapping.", "w/synthesis.")
    return {official_to_ours(k[2:], resolution): torch.from_numpy(v) for k, v in data.items()
            if k.startswith("w/") and k.startswith(is_g) == (net == "G")}


def load_official(module: torch.nn.Module, data: dict, net: str, resolution: int) -> torch.nn.Module:
    weights = official_weights(data, net, resolution)
    if weights:  # a file holds G's weights, D's or both
        missing, unexpected = module.load_state_dict(weights, strict=False)
        assert not unexpected and set(missing) <= {"pl_mean", "ada_p"}, (missing, unexpected)
    return module


def golden_nets(data: dict):
    m = {k[5:]: int(v) for k, v in data.items() if k.startswith("meta/")}
    G = StyleGAN2Generator(z_dim=m["z_dim"], w_dim=m["w_dim"], resolution=m["res"], out_channels=m["channels"],
                           channel_max=m["channel_max"], channel_base=m["channel_base"], mapping_layers=8)
    D = StyleGAN2Discriminator(resolution=m["res"], in_channels=m["channels"], channel_max=m["channel_max"],
                               channel_base=m["channel_base"], mbstd_group=m["mbstd_group"])
    return load_official(G, data, "G", m["res"]), load_official(D, data, "D", m["res"])


def assert_golden(ours: torch.Tensor, ref: np.ndarray, what: str = "") -> float:
    ref_t = torch.from_numpy(np.asarray(ref, dtype=np.float32))
    assert ours.shape == ref_t.shape, (what, ours.shape, ref_t.shape)
    diff = (ours.detach().float() - ref_t).abs().max().item()
    assert diff <= TOL * max(1.0, ref_t.abs().max().item()), f"{what}: max |diff| {diff:.3g}"
    return diff


def test_golden_names_cover_every_official_tensor():
    g_data, d_data = golden("G"), golden("D")
    G, D = golden_nets({**g_data, **d_data})
    assert {k for k in G.state_dict() if k != "pl_mean"} == set(official_weights(g_data, "G", 32))
    assert {k for k in D.state_dict() if k != "ada_p"} == set(official_weights(d_data, "D", 32))
    assert torch.equal(G.mapping.w_avg, torch.from_numpy(g_data["w/mapping.w_avg"]))


def test_golden_mapping_and_truncation():
    data = golden("G")
    G, _ = golden_nets(data)
    G.eval()
    z = torch.from_numpy(data["in/z"])
    assert_golden(G.mapping(z), data["out/ws"], "mapping")
    assert_golden(G.sample_ws(z, truncation_psi=0.7), data["out/ws_trunc07"], "truncation")


@pytest.mark.parametrize("fused", [True, False])
def test_golden_synthesis_const_noise(fused):
    data = golden("G")
    G, _ = golden_nets(data)
    G.eval()  # eval = noise_mode 'const'
    img = G.synthesis(torch.from_numpy(data["in/ws"]), fused=fused)
    assert_golden(img, data["out/img_fused" if fused else "out/img_unfused"], f"synthesis fused={fused}")


def test_golden_discriminator():
    data = golden("D")
    _, D = golden_nets(data)
    assert_golden(D(torch.from_numpy(data["in/img"])), data["out/logits"], "D")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_golden_modulated_conv(up, demodulate, fused):
    data = golden("modconv")
    x, weight, styles = (torch.from_numpy(data[f"in/{k}"]) for k in ("x", "weight", "styles"))
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, fused=fused, up=up, padding=1,
                           resample_filter=setup_filter())
    assert_golden(out, data[f"out/up{up}_demod{int(demodulate)}_fused{int(fused)}"], "modconv")


def test_golden_resampling():
    data = golden("resample")
    x, f_asym, w3, w1 = (torch.from_numpy(data[f"in/{k}"]) for k in ("x", "f_asym", "w3", "w1"))
    f = setup_filter()
    ours = {
        "upsample2d": upsample2d(x, f),
        "downsample2d": downsample2d(x, f),
        "upfirdn_u2_d1_p2112": upfirdn2d(x, f, up=2, pad=(2, 1, 1, 2), gain=4),
        "upfirdn_u1_d2_pneg": upfirdn2d(x, f, down=2, pad=(1, -1, 0, 2)),
        "upfirdn_asym_u2_d1": upfirdn2d(x, f_asym, up=2, pad=(1, 1, 1, 1)),  # convolution, not correlation
        "conv_down2_k3": conv2d_resample(x, w3, f, down=2, padding=1),
        "conv_down2_k1": conv2d_resample(x, w1, f, down=2),
        "conv_up2_k3": conv2d_resample(x, w3, f, up=2, padding=1),
    }
    for name, y in ours.items():
        assert_golden(y, data[f"out/{name}"], name)


def assert_golden_grads(module: torch.nn.Module, data: dict, resolution: int) -> None:
    refs = {official_to_ours(k[9:], resolution): v for k, v in data.items() if k.startswith("out/grad/")}
    params = dict(module.named_parameters())
    assert refs.keys() >= {k for k, p in params.items() if p.grad is not None}
    for name, ref in refs.items():
        # the official ``logits * 0 + loss`` trick gives the parameters that do not reach the penalty (D's
        # last bias, toRGB biases) a zero gradient; ours leaves theirs None
        grad = params[name].grad
        assert_golden(torch.zeros_like(params[name]) if grad is None else grad, ref, f"grad {name}")


def test_golden_lazy_r1():
    """One ``Dreg`` phase of the official StyleGAN2Loss (gamma 1, gain 16): value and D's gradients."""
    data = golden("r1")
    G, D = golden_nets(data)
    loss = StyleGAN2Loss(LossConfig(name="stylegan2", r1_gamma=1.0, r1_interval=16), G, D, channels=1, num_labels=4)
    total, terms = loss.d_regularize(torch.from_numpy(data["in/real"]), step=0)
    assert_golden(terms["D_r1"], data["out/r1_penalty"].mean(), "r1")
    assert_golden(total, data["out/loss_Dr1"].mean() * 16, "r1 total")
    total.backward()
    assert_golden_grads(D, data, 32)


def test_golden_lazy_path_length():
    """One ``Greg`` phase (weight 2, gain 4, batch shrink 2, decay 0.01, style mixing 0.9): the official
    code draws the mixing cutoff, its coin, the second z, the layer noise and the PL noise from the global
    RNG in this order, and so do we -- the same seed gives the same ws, penalty, EMA and G gradients."""
    data = golden("pl")
    G, D = golden_nets(data)
    G.train()
    z, seed = torch.from_numpy(data["in/gen_z"]), int(data["in/seed"])
    torch.manual_seed(seed)
    assert_golden(G.sample_ws(z[: len(z) // 2]), data["out/ws"], "style-mixed ws")
    G, D = golden_nets(data)  # a fresh w_avg
    G.train()
    G.pl_mean.fill_(float(data["in/pl_mean"]))
    loss = StyleGAN2Loss(LossConfig(name="stylegan2", pl_weight=2.0), G, D, channels=1, num_labels=4)
    torch.manual_seed(seed)
    total, terms = loss.g_regularize(lambda: z, step=0)
    assert_golden(terms["G_pl"], data["out/pl_penalty"].mean(), "pl")
    assert_golden(total, data["out/loss_Gpl"].mean() * 4, "pl total")
    assert_golden(G.pl_mean, data["out/pl_mean"], "pl_mean")
    assert_golden(G.mapping.w_avg, data["out/w_avg"], "w_avg")
    total.backward()
    assert_golden_grads(G, data, 32)
