"""InfoGAN: codes computed from z, the mutual-information bound in closed form, Q on D's trunk (its gradient
reaches D's trunk and G), exact resume, ``medgan generate --code`` with fixed codes, the traversal figure and
the code <-> factor correlation helpers."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgan import cli
from medgan.beyond.conditional import latent_traversal, lv_area, pearson, plot_traversal, sample_codes
from medgan.config import ConfigError, LossConfig, TrainConfig
from medgan.data.prepared import load_prepared, to_joint
from medgan.generate import generate
from medgan.losses import build_loss
from medgan.losses.info import HALF_LOG_2PI, info_loss, info_nll, mi_lower_bound
from medgan.models import MODELS
from medgan.models.conditional import codes_from_z, info_dims, z_for_codes
from medgan.training import make_config, run_training

matplotlib.use("Agg")
TINY = ["model.g_filters=8", "model.d_filters=8", "grid=4"]
PHI_INV = torch.distributions.Normal(0.0, 1.0).icdf


def _pair(info_cat=3, info_cont=2, **model):
    cfg = TrainConfig().with_overrides({"model.g_filters": 8, "model.d_filters": 8, "model.info_cat": info_cat,
                                        "model.info_cont": info_cont, **{f"model.{k}": v for k, v in model.items()}})
    return MODELS["dcgan"](cfg.model, channels=1, num_labels=3, resolution=16)


# ------------------------------------------------------------------------------------------ codes from z
def test_codes_are_quantiles_of_the_last_dims_of_z():
    z = torch.zeros(3, 6)
    z[:, 3] = PHI_INV(torch.tensor([0.1, 0.5, 0.999]))  # categorical dim: floor(Φ(z) · 4)
    z[:, 4] = PHI_INV(torch.tensor([0.75, 0.5, 0.05]))  # continuous: 2 Φ(z) - 1
    z[:, 5] = torch.tensor([0.0, 8.0, -8.0])
    cat, cont = codes_from_z(z, 4, 2)
    assert cat.tolist() == [0, 2, 3]
    torch.testing.assert_close(cont, torch.tensor([[0.5, 0.0], [0.0, 1.0], [-0.9, -1.0]]), atol=1e-5, rtol=0)
    assert info_dims(4, 2) == 3 and info_dims(0, 2) == 2 and codes_from_z(z, 0, 2)[0] is None
    # uniform over the categories and U(-1, 1) under z ~ N(0, I)
    cat, cont = codes_from_z(torch.randn(40000, 4, generator=torch.Generator().manual_seed(0)), 5, 1)
    assert np.allclose(np.bincount(cat.numpy(), minlength=5) / 40000, 0.2, atol=0.01)
    assert abs(cont.mean().item()) < 0.02 and abs(cont.var().item() - 1 / 3) < 0.01


def test_z_for_codes_inverts_codes_from_z_and_keeps_the_rest():
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    fixed = z_for_codes(z, 3, 2, cat=2, cont={1: -0.3})
    cat, cont = codes_from_z(fixed, 3, 2)
    assert cat.tolist() == [2] * 5
    torch.testing.assert_close(cont[:, 1], torch.full((5,), -0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(cont[:, 0], codes_from_z(z, 3, 2)[1][:, 0])  # c0 not given: unchanged
    assert torch.equal(fixed[:, :5], z[:, :5])
    for kw, words in [({"cat": 3}, "outside"), ({"cont": {2: 0.1}}, "does not exist"), ({"cont": {0: 1.0}}, "(-1, 1)")]:
        with pytest.raises(ConfigError, match=words):
            z_for_codes(z, 3, 2, **kw)


def test_generator_input_is_noise_onehot_and_continuous_codes():
    G = _pair(info_cat=3, info_cont=2).G
    z = torch.randn(4, 100)
    x = G.input(z, None)
    cat, cont = codes_from_z(z, 3, 2)
    assert x.shape == (4, 97 + 3 + 2) and G.body[0][0].in_channels == 102
    torch.testing.assert_close(x, torch.cat([z[:, :97], F.one_hot(cat, 3).float(), cont], 1))
    with pytest.raises(ConfigError, match="latent_dim"):
        _pair(info_cat=3, info_cont=2, latent_dim=3)


# ------------------------------------------------------------------------------------------ the MI bound
def test_info_terms_in_closed_form():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    cat = torch.tensor([0, 2])
    mean = torch.tensor([[0.5, -0.5], [0.0, 0.0]])
    cont = torch.tensor([[1.0, 0.0], [0.2, -0.2]])
    lse0, lse1 = math.log(math.e**2 + 1 + math.e**-1), math.log(2 + math.e)
    ce = ((lse0 - 2.0) + (lse1 - 0.0)) / 2
    nll = ((0.125 + 0.125) + (0.02 + 0.02)) / 2 + 2 * HALF_LOG_2PI  # Σ_j ½ (c - μ)² + ½ log 2π, batch mean
    got_ce, got_nll = info_nll(logits, mean, cat, cont)
    assert got_ce.item() == pytest.approx(ce, rel=1e-6) and got_nll.item() == pytest.approx(nll, rel=1e-6)
    bound = math.log(3) + 2 * math.log(2) - ce - nll
    assert mi_lower_bound(got_ce, got_nll, 3, 2).item() == pytest.approx(bound, rel=1e-6)
    total, terms = info_loss(logits, mean, cat, cont, weight=1.0, cont_weight=0.1, info_cat=3, info_cont=2)
    assert total.item() == pytest.approx(ce + 0.1 * nll, rel=1e-6)
    assert terms["info_mi"].item() == pytest.approx(bound, rel=1e-6)
    only_cont, _ = info_loss(None, mean, None, cont, weight=1.0, cont_weight=0.5, info_cat=0, info_cont=2)
    assert only_cont.item() == pytest.approx(0.5 * nll, rel=1e-6)
    # a perfect Q on a categorical code reaches the bound's maximum, H(c) = log K
    sure = torch.tensor([[50.0, 0, 0], [0, 0, 50.0]])
    assert mi_lower_bound(*info_nll(sure, None, cat, None), 3, 0).item() == pytest.approx(math.log(3), abs=1e-6)


@pytest.mark.parametrize("name", ["dcgan", "lsgan", "wgan", "wgan-gp", "hinge"])
def test_q_loss_is_added_to_both_players_and_reaches_d_trunk_and_G(name):
    torch.manual_seed(0)
    pair = _pair(d_norm="instance")
    cfg = LossConfig(name=name, gp_weight=10.0 if name == "wgan-gp" else 0.0, info_weight=1.0, info_cont_weight=0.1)
    loss = build_loss(cfg, pair.G, pair.D, channels=1, num_labels=3)
    real = to_joint(torch.rand(4, 1, 16, 16) * 2 - 1, torch.randint(0, 3, (4, 16, 16)), 3)
    z = torch.randn(4, 100)
    d_total, d_terms = loss.d_loss(real, z)
    expected = d_terms["D_adv"] + d_terms["D_info"] + d_terms.get("D_gp", 0.0) * cfg.gp_weight
    assert d_total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert d_terms["D_info"].item() == pytest.approx((d_terms["info_ce"] + 0.1 * d_terms["info_nll"]).item(), rel=1e-5)
    g_total, g_terms = loss.g_loss(real, z)
    assert g_total.item() == pytest.approx((g_terms["G_adv"] + g_terms["G_info"]).item(), rel=1e-5)

    # the info term alone: its gradient reaches Q, D's shared trunk (first conv) and G's first layer
    pair.G.zero_grad()
    pair.D.zero_grad()
    _, feats = pair.D(pair.G(z), return_features=True)
    info, _ = loss.info_term(z, feats)
    info.backward()
    for where, p in [("Q", pair.D.q_head.out.weight), ("D trunk", pair.D.blocks[0][0].weight),
                     ("G", pair.G.body[0][0].weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, where


def test_info_weight_zero_leaves_the_adversarial_loss():
    torch.manual_seed(0)
    pair = _pair(d_norm="instance")
    loss = build_loss(LossConfig(name="hinge", info_weight=0.0, info_cont_weight=0.0), pair.G, pair.D, channels=1,
                      num_labels=3)
    real = to_joint(torch.rand(2, 1, 16, 16) * 2 - 1, torch.randint(0, 3, (2, 16, 16)), 3)
    total, terms = loss.d_loss(real, torch.randn(2, 100))
    assert total.item() == pytest.approx(terms["D_adv"].item(), rel=1e-6) and terms["info_ce"] > 0


# ------------------------------------------------------------------------------------------ train, resume, generate
def test_infogan_resume_is_exact(discs, tmp_path, assert_resume_exact):
    sets = [*TINY, "model.info_cat=3", "model.info_cont=2", "aug.diffaugment=translation"]
    state = assert_resume_exact(discs, tmp_path, "hinge", sets)
    assert state["config"]["model"]["info_cat"] == 3


@pytest.fixture(scope="module")
def info_run(discs, tmp_path_factory):
    out = tmp_path_factory.mktemp("info") / "run"
    rc = cli.main(["train", "--data", str(discs), "--out", str(out), "--gan", "dcgan", "--kimg", "0.016", "--batch",
                   "8", "--no-progress", "--set", *TINY, "model.info_cat=3", "model.info_cont=2", "tick_kimg=0.008"])
    assert rc == 0
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(s["D_info"]) and math.isfinite(s["G/info_ce"]) for s in stats)
    return out


def test_generate_with_fixed_codes(info_run, tmp_path, capsys):
    assert cli.main(["generate", str(info_run), "--n", "6", "--out", str(tmp_path / "a"), "--code", "cat=1",
                     "--code", "c0=0.5"]) == 0
    a = load_prepared(tmp_path / "a")
    assert a.extra["code_cat"].tolist() == [1] * 6
    np.testing.assert_allclose(a.extra["code_c0"], 0.5, atol=1e-5)
    assert len(set(np.round(a.extra["code_c1"], 5).tolist())) == 6  # c1 still varies with z
    assert a.meta["info_codes"]["fixed"] == {"cat": 1, "c0": 0.5}
    b = load_prepared(generate(info_run, 6, tmp_path / "b", codes={"cat": 2, "c0": 0.5}))
    np.testing.assert_array_equal(a.extra["code_c1"], b.extra["code_c1"])  # same z, only the category moved
    assert not np.array_equal(np.asarray(a.images), np.asarray(b.images))
    for bad, words in [(["--code", "c7=0.1"], "does not exist"), (["--code", "c0=2"], "(-1, 1)"),
                       (["--code", "x=1"], "unknown code"), (["--code", "cat"], "name=value"),
                       (["--label", "DCM"], "is unconditional")]:
        rc = cli.main(["generate", str(info_run), "--n", "2", "--out", str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], (bad, err)


def test_code_on_a_run_without_codes_is_one_error_line(disk_set, tmp_path, capsys):
    run = run_training(make_config(out=tmp_path / "r", data=disk_set, gan="dcgan", kimg=0.004, batch=2,
                                   overrides=TINY), progress=False)
    rc = cli.main(["generate", str(run), "--n", "2", "--out", str(tmp_path / "g"), "--code", "c0=0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no InfoGAN codes" in err[0]


def test_traversal_fixes_z_and_moves_one_code(info_run):
    trav = latent_traversal(info_run, "c1", steps=3, rows=2, seed=4)
    assert trav["values"] == [-0.9, 0.0, 0.9] and trav["images"].shape == (2, 3, 1, 16, 16)
    _, _, cat, cont = sample_codes(info_run, 2, seed=4, cont={1: 0.9})
    np.testing.assert_allclose(cont[:, 1], 0.9, atol=1e-5)
    image, _, _, _ = sample_codes(info_run, 2, seed=4, cont={1: 0.9})
    np.testing.assert_array_equal(trav["images"][:, 2], image)  # the last column is c1 = 0.9 on the same z
    assert not np.array_equal(trav["images"][:, 0], trav["images"][:, 2])
    cats = latent_traversal(info_run, "cat", rows=1)
    assert cats["values"] == [0, 1, 2]
    fig = plot_traversal(trav)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "c1=-0.9"


def test_factor_helpers_in_closed_form():
    masks = np.zeros((3, 4, 4), np.int64)
    masks[0, :1] = 3
    masks[1, :2] = 3
    masks[2, :2, :2] = 3
    masks[2, 3] = 1
    labels = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
    assert lv_area(masks, labels).tolist() == [4.0, 8.0, 4.0]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, -1, -1, 1]) == pytest.approx(0.0)
    assert math.isnan(pearson([1, 1], [1, 2]))
