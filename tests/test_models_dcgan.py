"""The DCGAN backbone: shapes, every Table-1 knob value, init statistics, the joint mask encoding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from medgan import config
from medgan.config import ConfigError, ModelConfig, TrainConfig, apply_overrides
from medgan.data.prepared import mask_to_onehot, onehot_to_mask, split_joint
from medgan.losses import LOSSES, build_loss
from medgan.models import GANS, MODELS
from medgan.models.dcgan import MAX_MULT
from medgan.models.layers import ACTIVATIONS, INITS, NORMS

SMALL = dict(g_filters=16, d_filters=16, latent_dim=32)


def build(resolution=64, channels=1, num_labels=4, **kw):
    cfg = ModelConfig(**{**SMALL, **kw})
    return MODELS["dcgan"](cfg, channels=channels, num_labels=num_labels, resolution=resolution)


def test_layer_registries_match_the_config_choices():
    assert set(ACTIVATIONS.names()) == set(config.ACTIVATIONS)
    assert set(NORMS.names()) == set(config.NORMS)
    assert set(INITS.names()) == set(config.INITS)


@pytest.mark.parametrize("resolution, channels", [(16, 1), (64, 1), (128, 3), (256, 1)])
def test_shapes_range_and_features(resolution, channels):
    torch.manual_seed(0)
    K = 3
    pair = build(resolution, channels=channels, num_labels=K)
    G, D = pair.G, pair.D
    assert G.z_dim == 32 and G.conditional is False
    x = G(torch.randn(2, G.z_dim))
    assert x.shape == (2, channels + K, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert G(torch.randn(2, G.z_dim, 1, 1)).shape == x.shape  # [N, z_dim, 1, 1] works too
    D.eval()
    logits, feats = D(x, return_features=True)
    assert logits.shape == (2,)
    torch.testing.assert_close(D(x), logits)
    assert len(feats) == int(math.log2(resolution // 4))
    assert [f.shape[-1] for f in feats] == [resolution // 2**i for i in range(1, len(feats) + 1)]


@pytest.mark.parametrize("resolution", [8, 48, 100, 0, 12])
def test_bad_resolution_is_a_config_error(resolution):
    with pytest.raises(ConfigError, match="power-of-two"):
        build(resolution)


def test_filters_are_the_width_at_the_highest_resolution_and_capped():
    pair = build(256, g_filters=16, d_filters=32)
    g_convs = [m for m in pair.G.modules() if isinstance(m, nn.ConvTranspose2d)]
    d_convs = [m for m in pair.D.modules() if isinstance(m, nn.Conv2d)]
    assert g_convs[-2].out_channels == 16  # last hidden layer of G (128²)
    assert d_convs[0].out_channels == 32  # first layer of D (128²)
    assert max(c.out_channels for c in g_convs) == 16 * MAX_MULT
    assert max(c.out_channels for c in d_convs) == 32 * MAX_MULT
    assert [c.out_channels for c in d_convs[:4]] == [32, 64, 128, 256]


KNOBS = (
    [("g_activation", a) for a in config.ACTIVATIONS]
    + [("d_activation", a) for a in config.ACTIVATIONS]
    + [("g_norm", n) for n in config.NORMS]
    + [("d_norm", n) for n in config.NORMS]
    + [("g_filters", f) for f in config.TABLE1["model.g_filters"]]
    + [("d_filters", f) for f in config.TABLE1["model.d_filters"]]
    + [("g_spectral", s) for s in (True, False)]
    + [("d_spectral", s) for s in (True, False)]
    + [("init", i) for i in config.INITS]
    + [("init_gain", g) for g in config.TABLE1["model.init_gain"]]
    + [("latent_dim", z) for z in (16, 128)]
)


@pytest.mark.parametrize("knob, value", KNOBS, ids=[f"{k}={v}" for k, v in KNOBS])
def test_every_knob_value_builds_and_trains_at_64(knob, value):
    torch.manual_seed(0)
    pair = build(64, **{knob: value})
    G, D = pair.G, pair.D
    x = G(torch.randn(2, G.z_dim))
    logits = D(x)
    (logits.mean() - D(torch.rand_like(x)).mean()).backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the knob really changed the network
    net = G if knob.startswith("g_") else D
    types = {type(m) for m in net.modules()}
    if knob.endswith("activation"):
        assert type(ACTIVATIONS[value]()) in types
    elif knob.endswith("norm"):
        want = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}.get(value)
        has = {nn.BatchNorm2d, nn.InstanceNorm2d} & types
        assert has == ({want} if want else set())
    elif knob.endswith("spectral"):
        parametrized = [m for m in net.modules() if hasattr(m, "parametrizations")]
        n_convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules())
        assert len(parametrized) == (n_convs if value else 0)
    elif knob == "latent_dim":
        assert G.z_dim == value


@pytest.mark.parametrize("init", config.INITS)
@pytest.mark.parametrize("gain", [0.02, 1.0])
def test_init_statistics_follow_the_closed_form(init, gain):
    torch.manual_seed(0)
    pair = build(64, init=init, init_gain=gain, g_filters=64)
    conv = max((m for m in pair.G.modules() if isinstance(m, nn.ConvTranspose2d)), key=lambda m: m.weight.numel())
    w = conv.weight
    # ConvTranspose2d weight is [in, out, k, k]: torch's fan_in is dim 1 × k², fan_out dim 0 × k²
    rf = w[0, 0].numel()
    fan_in, fan_out = w.shape[1] * rf, w.shape[0] * rf
    std = {
        "normal": gain,
        "xavier": gain * math.sqrt(2.0 / (fan_in + fan_out)),
        "xavier-uniform": gain * math.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming": gain * math.sqrt(2.0 / fan_in),
    }[init]
    assert w.std().item() == pytest.approx(std, rel=0.05)
    assert w.mean().abs().item() < 0.05 * std
    if init == "xavier-uniform":
        assert w.abs().max().item() <= std * math.sqrt(3) * 1.0001
    bn = next(m for m in pair.G.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.bias.abs().max() == 0


def test_spectral_norm_bounds_the_weight_and_survives_copy_and_state_dict():
    torch.manual_seed(0)
    pair = build(16, g_spectral=True, d_spectral=True, init_gain=1.0)
    for _ in range(10):  # one power iteration per training-mode forward (σ is underestimated until it converges)
        pair.D(torch.randn(2, 5, 16, 16))
        pair.G(torch.randn(2, pair.G.z_dim))
    for m in list(pair.D.modules()) + list(pair.G.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = m.weight.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else m.weight  # [out, in, k, k]
            assert torch.linalg.matrix_norm(w.flatten(1), ord=2).item() == pytest.approx(1.0, rel=0.03)
    G_ema = copy.deepcopy(pair.G).eval()
    G2 = build(16, g_spectral=True, d_spectral=True, init_gain=1.0).G.eval()
    G2.load_state_dict(G_ema.state_dict())
    z = torch.randn(3, G2.z_dim)
    torch.testing.assert_close(G2(z), G_ema(z))


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    pair = build(64)
    G, D = pair.G.eval(), pair.D.eval()
    z = torch.randn(2, G.z_dim)
    x = G(z)
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)
    D_cl = copy.deepcopy(D).to(memory_format=torch.channels_last)
    torch.testing.assert_close(G_cl(z), x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(D_cl(x.contiguous(memory_format=torch.channels_last)), D(x), rtol=1e-4, atol=1e-5)


def test_bad_model_values_are_config_errors():
    with pytest.raises(ConfigError):
        ModelConfig(g_activation="tanh")
    with pytest.raises(ConfigError):
        ModelConfig(d_norm="layer")
    with pytest.raises(ConfigError):
        ModelConfig(init="orthogonal")
    with pytest.raises(ConfigError):
        build(64, channels=0)


def test_mask_encoding_round_trips_through_G_output():
    """G learns to emit one joint; the argmax of its mask channels gives back the integer labels exactly."""
    torch.manual_seed(0)
    K, R = 4, 16
    pair = build(R, num_labels=K, g_norm="none", init="xavier", init_gain=1.0)
    G = pair.G
    labels = torch.zeros(2, R, R, dtype=torch.long)
    labels[0, 4:12, 4:12] = 1
    labels[0, 6:10, 6:10] = 2
    labels[1, 2:8, 8:14] = 3
    labels[1, 10:14, 2:6] = 1
    image = torch.rand(2, 1, R, R) * 2 - 1
    target = torch.cat([image, mask_to_onehot(labels, K)], dim=1)
    z = torch.randn(2, G.z_dim)
    opt = torch.optim.Adam(G.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        ((G(z) - target) ** 2).mean().backward()
        opt.step()
    out = G(z).detach()
    _, mask = split_joint(out, channels=1)
    assert mask.dtype == torch.long
    assert torch.equal(mask, labels)
    # and the {-1, +1} encoding itself is exact in both directions
    assert torch.equal(onehot_to_mask(mask_to_onehot(labels, K)), labels)


def test_any_G_output_maps_to_valid_labels():
    torch.manual_seed(1)
    pair = build(64, num_labels=3)
    _, mask = split_joint(pair.G(torch.randn(4, pair.G.z_dim)), channels=1)
    assert mask.min() >= 0 and mask.max() <= 2


@pytest.mark.parametrize("gan", ["dcgan", "lsgan", "wgan", "wgan-gp", "hinge"])
def test_every_gan_spec_builds_and_steps(gan):
    spec = GANS[gan]
    assert spec.model in MODELS and spec.loss in LOSSES
    cfg = apply_overrides(
        TrainConfig(),
        {
            **spec.overrides,
            "model.name": spec.model,
            "loss.name": spec.loss,
            **{f"model.{k}": v for k, v in SMALL.items()},
        },
    )
    torch.manual_seed(0)
    pair = MODELS[cfg.model.name](cfg.model, channels=1, num_labels=3, resolution=16)
    loss = build_loss(cfg.loss, pair.G, pair.D, channels=1, num_labels=3)
    real = torch.rand(4, 4, 16, 16) * 2 - 1
    d_total, d_terms = loss.d_loss(real, torch.randn(4, pair.G.z_dim))
    d_total.backward()
    loss.after_d_step()
    g_total, _ = loss.g_loss(real, torch.randn(4, pair.G.z_dim))
    g_total.backward()
    assert torch.isfinite(d_total) and torch.isfinite(g_total)
    assert {"D_real", "D_fake", "D_adv", "D_total"} <= set(d_terms)
    if gan == "wgan":
        assert loss.n_critic == 5 and cfg.loss.clip == 0.01
        assert max(p.abs().max().item() for p in pair.D.parameters()) <= 0.01 + 1e-9
    if gan == "wgan-gp":
        assert loss.n_critic == 5 and "D_gp" in d_terms and cfg.model.d_norm != "batch"
