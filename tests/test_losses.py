"""The five GAN losses and their tricks against hand-computed values (CPU, fast)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medgan.augment import AdaptiveAugment, DiffAugment
from medgan.config import ConfigError, LossConfig, ModelConfig
from medgan.losses import LOSSES, GANLoss, build_loss, feature_matching, gradient_penalty, vgg_loss
from medgan.models import MODELS
from medgan.models.vgg import TAPS, TAPS19, VGG19_LAYER_WEIGHTS, VGGWeightsNotFoundError, load_vgg

C, K, S = 1, 2, 4  # image channels, labels, spatial size of the stub tensors
REAL_LOGITS = [2.0, -1.0]
FAKE_LOGITS = [0.5, -3.0]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def joint_with_logits(logits: list[float]) -> torch.Tensor:
    """A joint tensor whose pixel (0, 0, 0) holds the logit ``pixel_d`` will read."""
    x = torch.zeros(len(logits), C + K, S, S)
    x[:, 0, 0, 0] = torch.tensor(logits)
    return x


@pytest.fixture(scope="session")
def make(const_g, pixel_d):
    """``make(name, **loss_cfg) -> (loss, G, D)`` on the fixed FAKE_LOGITS batch."""

    def build(name: str, **cfg):
        G = const_g(joint_with_logits(FAKE_LOGITS))
        D = pixel_d()
        loss = build_loss(LossConfig(name=name, **cfg), G, D, channels=C, num_labels=K)
        return loss, G, D

    return build


def run(make, name: str, **cfg):
    loss, G, D = make(name, **cfg)
    real = joint_with_logits(REAL_LOGITS)
    z = torch.zeros(2, 3)
    d_total, d_terms = loss.d_loss(real, z)
    g_total, g_terms = loss.g_loss(real, z)
    return d_total.item(), g_total.item(), d_terms, g_terms


r, f = REAL_LOGITS, FAKE_LOGITS
mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
HAND = {
    # name: (D loss, G loss) on r = [2, -1], f = [0.5, -3]
    "dcgan": (mean([softplus(-x) for x in r]) + mean([softplus(x) for x in f]), mean([softplus(-x) for x in f])),
    "lsgan": (0.5 * (1 + 4) / 2 + 0.5 * (0.25 + 9) / 2, 0.5 * (0.25 + 16) / 2),  # 3.5625, 4.0625
    "wgan": (-1.25 - 0.5, 1.25),
    "wgan-gp": (-1.25 - 0.5, 1.25),
    "hinge": ((0 + 2) / 2 + (1.5 + 0) / 2, 1.25),  # 1.75
}


def test_every_loss_is_registered():
    assert set(LOSSES.names()) >= set(HAND)


@pytest.mark.parametrize("name", sorted(HAND))
def test_loss_matches_hand_computed_values(make, name):
    d, g, d_terms, g_terms = run(make, name)
    assert d == pytest.approx(HAND[name][0], rel=1e-6)
    assert g == pytest.approx(HAND[name][1], rel=1e-6)
    assert d_terms["D_real"].item() == pytest.approx(0.5)
    assert d_terms["D_fake"].item() == pytest.approx(-1.25)
    assert d_terms["D_total"].item() == pytest.approx(d, rel=1e-6)
    assert g_terms["G_adv"].item() == pytest.approx(g, rel=1e-6)
    assert all(not t.requires_grad and t.dim() == 0 for t in {**d_terms, **g_terms}.values())


@pytest.mark.parametrize("name", sorted(HAND))
def test_d_loss_does_not_reach_G_and_g_loss_does(make, name):
    loss, G, D = make(name)
    real = joint_with_logits(REAL_LOGITS)
    loss.d_loss(real, torch.zeros(2, 3))[0].backward()
    assert G.fake.grad is None and D.scale.grad is not None
    D.scale.grad = None
    loss.g_loss(real, torch.zeros(2, 3))[0].backward()
    assert G.fake.grad is not None and G.fake.grad.abs().sum() > 0


def test_label_smoothing_is_one_sided_bce(make):
    a = 0.1
    d, g, *_ = run(make, "dcgan", label_smoothing=a)
    t = 1 - a
    bce_real = mean([t * softplus(-x) + (1 - t) * softplus(x) for x in r])
    assert d == pytest.approx(bce_real + mean([softplus(x) for x in f]), rel=1e-6)
    assert g == pytest.approx(HAND["dcgan"][1], rel=1e-6)  # G's target is untouched


def test_label_smoothing_lsgan_moves_real_target(make):
    d, *_ = run(make, "lsgan", label_smoothing=0.1)
    assert d == pytest.approx(0.5 * ((2 - 0.9) ** 2 + (-1 - 0.9) ** 2) / 2 + 0.5 * (0.25 + 9) / 2, rel=1e-6)


@pytest.mark.parametrize("gp_weight", [0.0, 0.1, 1.0, 10.0])
def test_gradient_penalty_closed_form_for_linear_D(const_g, linear_d, gp_weight):
    torch.manual_seed(0)
    w = torch.randn(C + K, S, S) * 0.3
    D = linear_d(w)
    fake = torch.randn(3, C + K, S, S)
    real = torch.randn(3, C + K, S, S)
    G = const_g(fake)
    loss = build_loss(LossConfig(name="wgan-gp", gp_weight=gp_weight), G, D, channels=C, num_labels=K)
    total, terms = loss.d_loss(real, torch.zeros(3, 3))
    wn = w.norm().item()
    wass = (fake * w).sum().item() / 3 - (real * w).sum().item() / 3
    assert total.item() == pytest.approx(wass + gp_weight * (wn - 1) ** 2, rel=1e-5, abs=1e-5)
    if gp_weight > 0:
        assert terms["D_gp"].item() == pytest.approx((wn - 1) ** 2, rel=1e-5)
    else:
        assert "D_gp" not in terms
    # the penalty's gradient reaches D: d/dw = mean(fake) - mean(real) + 2λ(‖w‖ - 1) w / ‖w‖
    total.backward()
    expected = fake.mean(0) - real.mean(0) + 2 * gp_weight * (wn - 1) * w / wn
    torch.testing.assert_close(D.w.grad, expected, rtol=1e-4, atol=1e-5)


def test_gradient_penalty_is_zero_for_unit_norm_linear_D(linear_d):
    w = torch.randn(C + K, S, S)
    D = linear_d(w / w.norm())
    gp = gradient_penalty(D, torch.randn(4, C + K, S, S), torch.randn(4, C + K, S, S))
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("clip", [0.01, 0.1])
def test_wgan_clipping_clamps_every_D_parameter(clip):
    torch.manual_seed(0)
    pair = MODELS["dcgan"](
        ModelConfig(g_filters=16, d_filters=16, d_spectral=True), channels=C, num_labels=K, resolution=16
    )
    with torch.no_grad():
        for p in pair.D.parameters():
            p.mul_(0).add_(torch.randn_like(p) * 5)
    before = [p.detach().clone() for p in pair.D.parameters()]
    loss = build_loss(LossConfig(name="wgan", clip=clip), pair.G, pair.D, channels=C, num_labels=K)
    loss.after_d_step()
    for b, p in zip(before, pair.D.parameters(), strict=True):
        assert p.abs().max() <= torch.tensor(clip, dtype=p.dtype)
        torch.testing.assert_close(p, b.clamp(-clip, clip))


@pytest.mark.parametrize("name", ["dcgan", "lsgan", "wgan-gp", "hinge"])
def test_other_losses_never_clip(make, name):
    loss, G, D = make(name)
    with torch.no_grad():
        D.scale.fill_(5.0)
    loss.after_d_step()
    assert D.scale.item() == 5.0


def test_wgan_clip_zero_is_off(make):
    loss, G, D = make("wgan", clip=0.0)
    with torch.no_grad():
        D.scale.fill_(5.0)
    loss.after_d_step()
    assert D.scale.item() == 5.0


def test_n_critic_and_default_regulariser(make):
    loss, G, D = make("wgan", n_critic=5)
    assert loss.n_critic == 5
    total, terms = loss.d_regularize(joint_with_logits(REAL_LOGITS), step=0)
    assert total is None and terms == {}


def test_feature_matching_hand_value(const_g, pixel_d):
    real_value, fake_value, weight = 0.5, -0.25, 10.0
    G = const_g(torch.full((2, C + K, S, S), fake_value))
    loss = build_loss(LossConfig(name="dcgan", fm_weight=weight), G, pixel_d(), channels=C, num_labels=K)
    real = torch.full((2, C + K, S, S), real_value)
    total, terms = loss.g_loss(real, torch.zeros(2, 3))
    assert terms["G_fm"].item() == pytest.approx((real_value - fake_value) ** 2)
    assert total.item() == pytest.approx(softplus(-fake_value) + weight * (real_value - fake_value) ** 2, rel=1e-6)


def test_feature_matching_uses_batch_means():
    real = [torch.tensor([[1.0], [3.0]])]  # batch mean 2
    fake = [torch.tensor([[2.0], [2.0]])]  # batch mean 2: equal means, different samples
    assert feature_matching(real, fake).item() == 0.0


def test_augment_pipe_sees_real_and_fake(const_g, pixel_d):
    calls = []

    def pipe(x):
        calls.append(x.detach().clone())
        return x

    G = const_g(joint_with_logits(FAKE_LOGITS))
    loss = build_loss(LossConfig(name="hinge"), G, pixel_d(), channels=C, num_labels=K, augment_pipe=pipe)
    real = joint_with_logits(REAL_LOGITS)
    loss.d_loss(real, torch.zeros(2, 3))
    assert len(calls) == 2
    assert torch.equal(calls[0], real) and torch.equal(calls[1], G.fake.detach())


def test_conditional_G_gets_the_real_masks_by_default(const_g, pixel_d):
    real = joint_with_logits(REAL_LOGITS)
    G = const_g(joint_with_logits(FAKE_LOGITS), conditional=True)
    loss = build_loss(LossConfig(name="dcgan"), G, pixel_d(), channels=C, num_labels=K)
    loss.d_loss(real, torch.zeros(2, 3))
    assert torch.equal(G.seen_masks[-1], real[:, C:])
    given = torch.ones(2, K, S, S)
    loss.g_loss(real, torch.zeros(2, 3), mask_onehot=given)
    assert G.seen_masks[-1] is given


# --------------------------------------------------------------------------- bad configurations
@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(name="wgan", label_smoothing=0.1), "label_smoothing"),
        (dict(name="wgan-gp", label_smoothing=0.1), "label_smoothing"),
        (dict(name="hinge", label_smoothing=0.1), "label_smoothing"),
        (dict(name="wgan-gp", clip=0.01), "weight clipping only applies to --gan wgan"),
        (dict(name="dcgan", clip=0.1), "weight clipping only applies to --gan wgan"),
        (dict(name="hinge", clip=0.1), "weight clipping only applies to --gan wgan"),
        (dict(name="dcgan", gp_weight=10.0), "gradient penalty"),
        (dict(name="wgan", gp_weight=1.0), "gradient penalty"),
        (dict(name="lsgan", gp_weight=0.1), "gradient penalty"),
        (dict(name="nosuchgan"), "unknown loss"),
        (dict(name="dcgan", vgg_weight=1.0, vgg_features="vgg13"), "vgg_features"),
    ],
)
def test_bad_loss_configs_raise_config_error(const_g, pixel_d, cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(LossConfig(**cfg), const_g(joint_with_logits(FAKE_LOGITS)), pixel_d(), channels=C, num_labels=K)


def test_direct_construction_validates_too(const_g, pixel_d):
    with pytest.raises(ConfigError):
        LOSSES["wgan-gp"](
            LossConfig(name="wgan-gp", clip=0.01),
            const_g(joint_with_logits(FAKE_LOGITS)),
            pixel_d(),
            channels=C,
            num_labels=K,
        )


# --------------------------------------------------------------------------- capabilities
# every name the trainer reads off a loss object; the base declares each, so no caller needs a getattr default
TRAINER_READS = (
    "allows_label_smoothing", "allows_clip", "allows_gp", "supports_ada", "lazy_r1", "pl_interval",
    "saturates", "n_critic", "vgg_name", "state_dict", "load_state_dict",
)  # fmt: skip
CRITICS = {"wgan", "wgan-gp"}


@pytest.fixture(scope="session")
def build_any(const_g, pixel_d):
    """``build_any(name, **kw) -> GANLoss`` with a D that carries ``ada_p``."""

    def build(name: str, **kw) -> GANLoss:
        return build_loss(LossConfig(name=name), const_g(joint_with_logits(FAKE_LOGITS)), pixel_d(ada=True), channels=C,
                          num_labels=K, **kw)

    return build


def test_the_base_declares_every_capability_the_trainer_reads():
    missing = [n for n in TRAINER_READS if n not in vars(GANLoss)]
    assert not missing, f"GANLoss does not declare {missing}"
    for name in LOSSES.names():
        assert issubclass(LOSSES[name], GANLoss), name


@pytest.mark.parametrize("name", sorted({*HAND, "stylegan2", "spade"}))
def test_capability_values(build_any, name):
    loss = build_any(name)
    # D can saturate unless it is a critic (unbounded output); StyleGAN2's logistic and SPADE's hinge can
    assert loss.saturates is (name not in CRITICS)
    assert loss.supports_ada is (name == "stylegan2")
    assert loss.lazy_r1 is (name == "stylegan2")
    assert loss.pl_interval == (4 if name == "stylegan2" else 1)
    assert loss.n_critic == 1 and loss.vgg_name is None
    assert loss.state_dict() == {}
    loss.load_state_dict({})


def test_ada_target_reaches_only_losses_that_support_it(build_any):
    msg = ("aug.ada_target=0.6 (adaptive augmentation) is implemented by --gan stylegan2 only, not by loss 'dcgan'; "
           "use aug.ada_target=0")
    with pytest.raises(ConfigError) as e:
        build_any("dcgan", ada_target=0.6)
    assert str(e.value) == msg
    assert not hasattr(build_any("dcgan", ada_target=0.0), "ada_target")
    loss = build_any("stylegan2", augment_pipe=DiffAugment("translation", channels=C), ada_target=0.6)
    assert loss.ada_target == 0.6 and isinstance(loss.augment_pipe, AdaptiveAugment)


# --------------------------------------------------------------------------- VGG
def test_missing_vgg_weights_name_the_path(const_g, pixel_d, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    monkeypatch.setenv("MEDGAN_VGG_WEIGHTS", str(missing))
    with pytest.raises(VGGWeightsNotFoundError, match="vgg16-397923af.pth") as e:
        build_loss(
            LossConfig(name="dcgan", vgg_weight=1.0),
            const_g(joint_with_logits(FAKE_LOGITS)),
            pixel_d(),
            channels=C,
            num_labels=K,
        )
    assert str(missing) in str(e.value)


def test_missing_vgg_weights_default_path_is_torch_hub(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDGAN_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VGGWeightsNotFoundError) as e:
        load_vgg("vgg16")
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in str(e.value)


def test_vgg_random_is_fixed_labelled_and_leaves_the_rng_alone():
    state = torch.random.get_rng_state()
    a, b = load_vgg("vgg16-random"), load_vgg("vgg16-random")
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.name == "vgg16-random"
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb) and not pa.requires_grad
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    feats = a(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    for f3, f1 in zip(a(x.expand(-1, 3, -1, -1)), feats, strict=True):  # grayscale is replicated to RGB
        assert torch.equal(f3, f1)
    a.train()
    assert not a.training


def test_vgg_loads_a_torchvision_checkpoint(tmp_path, monkeypatch):
    trunk = load_vgg("vgg16-random").trunk
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(1.0)  # distinguishable from the random init
    state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # present in the real file, ignored
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    monkeypatch.setenv("MEDGAN_VGG_WEIGHTS", str(path))
    vgg = load_vgg("vgg16")
    assert vgg.name == "vgg16"
    for p, q in zip(vgg.trunk.parameters(), trunk.parameters(), strict=True):
        assert torch.equal(p, q)
    del state[f"features.{TAPS['relu4_3'] - 1}.weight"]
    torch.save(state, path)
    with pytest.raises(ConfigError, match="not a torchvision VGG16"):
        load_vgg("vgg16")


def test_missing_vgg19_weights_name_the_file_the_path_and_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDGAN_VGG19_WEIGHTS", raising=False)
    monkeypatch.setenv("MEDGAN_VGG_WEIGHTS", str(tmp_path / "vgg16.pth"))  # the VGG16 variable is not read
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VGGWeightsNotFoundError, match="vgg19-dcbb9e9d.pth") as e:
        load_vgg("vgg19")
    msg = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in msg
    assert "MEDGAN_VGG19_WEIGHTS" in msg and "vgg19-random" in msg
    missing = tmp_path / "elsewhere.pth"
    monkeypatch.setenv("MEDGAN_VGG19_WEIGHTS", str(missing))
    with pytest.raises(VGGWeightsNotFoundError, match="elsewhere.pth"):
        load_vgg("vgg19")


def test_vgg19_is_spade_vggloss_relu_x_1_weighted_unnormalised():
    """NVlabs/SPADE's VGGLoss: relu1_1 ... relu5_1 of VGG19, weights 1/32 ... 1, the [-1, 1] image fed as is."""
    state = torch.random.get_rng_state()
    vgg = load_vgg("vgg19-random")
    assert torch.equal(state, torch.random.get_rng_state())
    assert vgg.name == "vgg19-random" and len(vgg.trunk) == 30
    assert list(TAPS19.values()) == [1, 6, 11, 20, 29]
    assert vgg.layer_weights == VGG19_LAYER_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert torch.equal(feats[0], vgg.trunk[:2](x))  # no ImageNet normalisation, as upstream
    for f1, f3 in zip(vgg(x[:, :1]), vgg(x[:, :1].expand(-1, 3, -1, -1)), strict=True):  # grayscale -> RGB
        assert torch.equal(f1, f3)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    fy = vgg(y)
    expected = sum(w * (a - b).abs().mean() for w, a, b in zip(VGG19_LAYER_WEIGHTS, fy, feats, strict=True))
    assert vgg_loss(vgg, x, y, paired=True).item() == pytest.approx(expected.item(), rel=1e-5)
    # the DCGAN-family VGG16 term keeps equal weights and ImageNet normalisation
    v16 = load_vgg("vgg16-random")
    assert v16.layer_weights == (1.0,) * 4 and v16.imagenet_normalize and not vgg.imagenet_normalize


def test_vgg19_loads_a_torchvision_checkpoint(tmp_path, monkeypatch):
    trunk = load_vgg("vgg19-random").trunk
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(1.0)
    state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    state["features.34.weight"] = torch.zeros(2, 2)  # conv5_4 of the real file: past relu5_1, ignored
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    monkeypatch.setenv("MEDGAN_VGG19_WEIGHTS", str(path))
    vgg = load_vgg("vgg19")
    assert vgg.name == "vgg19"
    for p, q in zip(vgg.trunk.parameters(), trunk.parameters(), strict=True):
        assert torch.equal(p, q)
    del state["features.28.weight"]
    torch.save(state, path)
    with pytest.raises(ConfigError, match="not a torchvision VGG19"):
        load_vgg("vgg19")


def test_vgg_term_unpaired_is_batch_mean_matching_paired_is_per_pair():
    vgg = load_vgg("vgg16-random")
    torch.manual_seed(0)
    real = torch.rand(3, 1, 16, 16) * 2 - 1
    permuted = real[[2, 0, 1]]
    # the same images in another order: same batch mean (0 unpaired), different pairs (> 0 paired)
    assert vgg_loss(vgg, real, permuted, paired=False).item() == pytest.approx(0.0, abs=1e-5)
    assert vgg_loss(vgg, real, permuted, paired=True).item() > 1e-3
    assert vgg_loss(vgg, real, real, paired=True).item() == 0.0


def test_vgg_term_in_g_loss_and_name(const_g, pixel_d, make):
    vgg = load_vgg("vgg16-random")
    torch.manual_seed(0)
    real = torch.rand(2, C + K, 16, 16) * 2 - 1
    fake = torch.rand(2, C + K, 16, 16) * 2 - 1
    for conditional in (False, True):
        G = const_g(fake, conditional=conditional)
        loss = build_loss(
            LossConfig(name="dcgan", vgg_weight=10.0, vgg_features="vgg16-random"),
            G,
            pixel_d(),
            channels=C,
            num_labels=K,
            vgg=vgg,
        )
        assert loss.vgg_name == "vgg16-random"
        total, terms = loss.g_loss(real, torch.zeros(2, 3))
        expected = vgg_loss(vgg, real[:, :C], fake[:, :C], paired=conditional).item()
        assert terms["G_vgg"].item() == pytest.approx(expected, rel=1e-5)
        assert total.item() == pytest.approx(terms["G_adv"].item() + 10.0 * expected, rel=1e-5)
    assert make("dcgan")[0].vgg_name is None


def test_gradient_penalty_uses_the_eager_module_under_torch_compile(const_g, linear_d):
    """A compiled D cannot double-backward; the loss penalises the module it wraps (``_orig_mod``)."""

    class CompiledLike(nn.Module):
        def __init__(self, D):
            super().__init__()
            self._orig_mod = D

        def forward(self, x, return_features=False):
            with torch.no_grad():  # no graph to x: a gradient penalty through this wrapper would fail
                return self._orig_mod(x, return_features)

    w = torch.randn(C + K, S, S)
    G = const_g(torch.randn(2, C + K, S, S))
    loss = build_loss(LossConfig(name="wgan-gp", gp_weight=1.0), G, CompiledLike(linear_d(w)), channels=C, num_labels=K)
    _, terms = loss.d_loss(torch.randn(2, C + K, S, S), torch.zeros(2, 3))
    assert terms["D_gp"].item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
