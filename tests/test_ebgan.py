"""EBGAN (Zhao et al. 2017): the auto-encoder D's energy, the margin loss and the pulling-away term by hand,
and training / exact resume / generation through the real trainer."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from medgan.cli import main as cli_main
from medgan.config import LossConfig, ModelConfig
from medgan.data.prepared import load_prepared
from medgan.errors import ConfigError
from medgan.losses import EBGANLoss, build_loss, pulling_away
from medgan.models import MODELS
from medgan.models.ebgan import EBGANDiscriminator
from medgan.training import make_config

TINY = ModelConfig(g_filters=4, d_filters=4, latent_dim=3)


def _d(seed: int = 0) -> EBGANDiscriminator:
    torch.manual_seed(seed)
    return EBGANDiscriminator(TINY, channels=1, num_labels=2, resolution=16)


def test_d_returns_the_per_sample_reconstruction_mse_and_its_encoder_features():
    D = _d()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        energy, feats = D(x, return_features=True)
        recon = D.reconstruct(x)
    assert recon.shape == x.shape and float(recon.abs().max()) <= 1.0
    by_hand = [float(((recon[i] - x[i]) ** 2).sum()) / (3 * 16 * 16) for i in range(3)]
    assert energy.shape == (3,) and energy.tolist() == pytest.approx(by_hand, rel=1e-5)
    with torch.no_grad():
        assert torch.equal(D(x), energy)
    assert feats[-1].shape == (3, 2 * 4, 4, 4)  # the code: width 2 × d_filters at 4×4 for a 16² input
    pair = MODELS["ebgan"](TINY, channels=1, num_labels=2, resolution=16)
    assert isinstance(pair.D, EBGANDiscriminator) and pair.G(torch.randn(2, 3)).shape == (2, 3, 16, 16)


def test_margin_loss_by_hand():
    loss = build_loss(LossConfig(name="ebgan", ebgan_margin=1.0), _d(), _d(), channels=1, num_labels=2)
    real, fake = torch.tensor([0.2, 0.5]), torch.tensor([0.3, 1.5, 0.9])
    # mean real energy + mean of max(0, m - fake energy)
    assert float(loss.d_adv(real, fake)) == pytest.approx((0.2 + 0.5) / 2 + (0.7 + 0.0 + 0.1) / 3, rel=1e-6)
    loss2 = build_loss(LossConfig(name="ebgan", ebgan_margin=2.0), _d(), _d(), channels=1, num_labels=2)
    assert float(loss2.d_adv(real, fake)) == pytest.approx(0.35 + (1.7 + 0.5 + 1.1) / 3, rel=1e-6)


def _pt_by_hand(rows: list[list[float]]) -> float:
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    n = len(rows)
    return sum(cos(rows[i], rows[j]) ** 2 for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))


def test_pulling_away_term_by_hand():
    rows = [[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]
    # cos² = 1/2, 0, 1/2 for the pairs (0,1), (0,2), (1,2): Σ_{i≠j} = 2, / (3·2)
    assert _pt_by_hand(rows) == pytest.approx(1 / 3)
    assert float(pulling_away(torch.tensor(rows))) == pytest.approx(1 / 3, rel=1e-6)
    # norms do not matter, the per-sample map is flattened, orthogonal codes give 0, one sample gives 0
    assert float(pulling_away(torch.tensor(rows) * torch.tensor([[3.0], [0.1], [7.0]]))) == pytest.approx(1 / 3, rel=1e-5)
    emb = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    assert float(pulling_away(emb)) == pytest.approx(_pt_by_hand(emb.flatten(1).tolist()), rel=1e-5)
    assert float(pulling_away(torch.eye(4))) == 0.0 and float(pulling_away(torch.ones(1, 6))) == 0.0


def test_g_loss_is_fake_energy_plus_weighted_pt_of_the_fake_codes(const_g):
    torch.manual_seed(1)
    fake = torch.rand(4, 3, 16, 16) * 2 - 1
    G, D = const_g(fake), _d()
    loss = build_loss(LossConfig(name="ebgan", pt_weight=0.5), G, D, channels=1, num_labels=2)
    total, terms = loss.g_loss(torch.zeros_like(fake), torch.zeros(4, 3))
    with torch.no_grad():
        energy, feats = D(fake, return_features=True)
    pt = _pt_by_hand(feats[-1].flatten(1).tolist())
    assert float(total.detach()) == pytest.approx(float(energy.mean()) + 0.5 * pt, rel=1e-5)
    assert float(terms["G_pt"]) == pytest.approx(pt, rel=1e-5) and float(terms["G_energy"]) == pytest.approx(float(energy.mean()))
    # and D's loss is the margin loss on the real and fake energies
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    d_total, d_terms = loss.d_loss(real, torch.zeros(4, 3))
    with torch.no_grad():
        e_real = D(real)
    expected = float(e_real.mean()) + float(torch.relu(1.0 - energy).mean())
    assert float(d_total.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(d_terms["D_real"]) == pytest.approx(float(e_real.mean()), rel=1e-5)


def test_capabilities_defaults_and_bad_knobs():
    cfg = make_config(out="x", gan="ebgan")
    assert (cfg.model.name, cfg.loss.name, cfg.loss.ebgan_margin, cfg.loss.pt_weight) == ("ebgan", "ebgan", 1.0, 0.1)
    assert (cfg.model.g_filters, cfg.model.d_filters, cfg.lr) == (64, 64, 2e-4)  # the DCGAN family's sizes
    assert not EBGANLoss.saturates and not EBGANLoss.allows_label_smoothing
    with pytest.raises(ConfigError, match="ebgan_margin"):
        make_config(out="x", gan="ebgan", overrides=["loss.ebgan_margin=0"])
    with pytest.raises(ConfigError, match="pt_weight"):
        LossConfig(pt_weight=-1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_loss(LossConfig(name="ebgan", label_smoothing=0.1), _d(), _d(), channels=1, num_labels=2)
    labelled = make_config(out="x", gan="ebgan", overrides=["model.info_cat=2"]).model
    with pytest.raises(ConfigError, match="model.condition and model.info_"):
        MODELS["ebgan"](labelled, channels=1, num_labels=2, resolution=16)


def test_trains_resumes_exactly_and_generates(disk_set, tmp_path, assert_resume_exact, finite_stats):
    assert_resume_exact(disk_set, tmp_path, "ebgan", ["model.g_filters=8", "model.d_filters=8"])
    stats = finite_stats(tmp_path / "full")
    assert all("G_pt" in line and "G_energy" in line for line in stats)
    assert all(line["D_real"] >= 0 and line["D_fake"] >= 0 for line in stats)  # energies
    out = tmp_path / "gen"
    assert cli_main(["generate", str(tmp_path / "full"), "--n", "3", "--out", str(out), "--batch", "2"]) == 0
    gen = load_prepared(out)
    assert len(gen) == 3 and gen.meta["gan"] == "ebgan"
