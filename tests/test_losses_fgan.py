"""The original minimax GAN and the f-GAN family (Nowozin et al. 2016): closed forms, the variational
estimate of known divergences, and training / exact resume / generation through the real trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from medgan.cli import main as cli_main
from medgan.config import CHOICES, LossConfig, TrainConfig
from medgan.data.prepared import load_prepared
from medgan.errors import ConfigError
from medgan.losses import DIVERGENCES, build_loss
from medgan.models import GANS
from medgan.training import make_config

REAL = [0.3, -1.2, 2.0, 0.0]  # D's logits v on a real batch
FAKE = [-0.5, 1.1, -2.5, 0.4]  # ... and on a fake batch


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Table 2 of Nowozin et al. written out literally: output activation g_f(v) and conjugate f*(t)
TABLE2 = {
    "kl": (lambda v: v, lambda t: math.exp(t - 1.0)),
    "rkl": (lambda v: -math.exp(-v), lambda t: -1.0 - math.log(-t)),
    "js": (lambda v: math.log(2.0) - math.log(1.0 + math.exp(-v)), lambda t: -math.log(2.0 - math.exp(t))),
    "pearson": (lambda v: v, lambda t: t * t / 4.0 + t),
    "hellinger": (lambda v: 1.0 - math.exp(-v), lambda t: t / (1.0 - t)),
}
# the generator functions f(u) of Table 1 (Table 2's pairs), for the true divergences
F_OF_U = {
    "kl": lambda u: u * np.log(u),
    "rkl": lambda u: -np.log(u),
    "js": lambda u: u * np.log(u) - (u + 1) * np.log((u + 1) / 2),
    "pearson": lambda u: (u - 1) ** 2,
    "hellinger": lambda u: (np.sqrt(u) - 1) ** 2,
}


def _loss(name: str, **cfg):
    d = nn.Linear(1, 1)  # never called: the adversarial terms act on given logits
    return build_loss(LossConfig(name=name, **cfg), d, d, channels=1, num_labels=1)


def test_the_divergence_knob_lists_exactly_the_registered_divergences():
    assert set(CHOICES["loss.divergence"]) == set(DIVERGENCES.names()) == set(TABLE2)
    assert {f"fgan-{n}" for n in TABLE2} <= set(GANS.names()) and "minimax" in GANS
    for name in TABLE2:
        cfg = make_config(out="x", gan=f"fgan-{name}")
        assert (cfg.loss.name, cfg.loss.divergence, cfg.model.name) == ("fgan", name, "dcgan")
        # the backbone sizes of the paper's DCGAN family
        assert cfg.model == make_config(out="x", gan="dcgan").model and cfg.lr == TrainConfig().lr


def test_bad_divergence_and_tricks_are_one_config_error():
    with pytest.raises(ConfigError, match="loss.divergence"):
        LossConfig(name="fgan", divergence="tv")
    with pytest.raises(ConfigError, match="loss.divergence"):
        make_config(out="x", gan="fgan-kl", overrides=["loss.divergence=chi2"])
    with pytest.raises(ConfigError, match="label_smoothing"):
        _loss("fgan", label_smoothing=0.1)
    _loss("minimax", label_smoothing=0.1)  # minimax keeps dcgan's real-label target
    assert _loss("minimax").saturates and not _loss("fgan").saturates


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_fgan_losses_match_table2_on_fixed_logits(name):
    g, f_star = TABLE2[name]
    loss = _loss("fgan", divergence=name)
    d_expected = -(sum(g(v) for v in REAL) / 4 - sum(f_star(g(v)) for v in FAKE) / 4)
    g_expected = -sum(g(v) for v in FAKE) / 4
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    assert float(loss.d_adv(real, fake)) == pytest.approx(d_expected, rel=1e-5)
    assert float(loss.g_adv(fake)) == pytest.approx(g_expected, rel=1e-5)


def test_minimax_matches_the_original_game_and_saturates():
    loss, ns = _loss("minimax"), _loss("dcgan")
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    d_expected = -sum(math.log(_sig(v)) for v in REAL) / 4 - sum(math.log(1 - _sig(v)) for v in FAKE) / 4
    assert float(loss.d_adv(real, fake)) == pytest.approx(d_expected, rel=1e-5)
    assert float(loss.g_adv(fake)) == pytest.approx(sum(math.log(1 - _sig(v)) for v in FAKE) / 4, rel=1e-5)
    # saturating: where D rejects the fake confidently (v = -8), G's gradient is ~σ(v)/N, the
    # non-saturating dcgan's ~(1 - σ(v))/N
    v = torch.tensor([-8.0], requires_grad=True)
    (grad_minimax,) = torch.autograd.grad(loss.g_adv(v), v)
    (grad_dcgan,) = torch.autograd.grad(ns.g_adv(v), v)
    assert float(grad_minimax) == pytest.approx(-_sig(-8.0), rel=1e-4)
    assert float(grad_dcgan) == pytest.approx(-(1 - _sig(-8.0)), rel=1e-4)


# --------------------------------------------------------------------------------------------- the estimate
NARROW, WIDE = (0.0, 1.0), (1.0, 1.5)  # N(mean, sd)


def _pair(name: str):
    """(P, Q). A *sampled* objective is unbounded above where the distribution under an unbounded term has
    samples and the other has none, so the term that is unbounded (Q's for rkl, P's otherwise) gets the
    narrower distribution: rkl(P‖Q) is then KL(N(0,1) ‖ N(1,1.5²)) again, checked in closed form below."""
    return (WIDE, NARROW) if name == "rkl" else (NARROW, WIDE)


def _quantiles(mean: float, sd: float, n: int) -> torch.Tensor:
    """n stratified 'samples': the (i + ½)/n quantiles (a deterministic, low-variance stand-in for a batch)."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (mean + sd * torch.special.ndtri(u))[:, None]


def _true_divergence(name: str, P, Q) -> float:
    p, q = stats.norm(*P), stats.norm(*Q)
    f = F_OF_U[name]
    return integrate.quad(lambda x: q.pdf(x) * f(p.pdf(x) / q.pdf(x)), -25, 25, limit=200)[0]


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_the_optimal_d_estimates_the_divergence_between_two_gaussians(name):
    """Train only a tiny 1-D D to minimise the f-GAN loss's d_adv between samples of two Gaussians: at
    the optimum, -d_adv is the variational lower bound, tight at T = f'(p/q), so it must equal D_f(P‖Q)."""
    P, Q = _pair(name)
    truth = _true_divergence(name, P, Q)
    kl_closed = math.log(1.5) + (1 + 1) / (2 * 1.5**2) - 0.5  # KL(N(0,1) ‖ N(1,1.5²))
    if name in ("kl", "rkl"):
        assert truth == pytest.approx(kl_closed, rel=1e-6)
    loss = _loss("fgan", divergence=name)
    xp, xq = _quantiles(*P, 1000), _quantiles(*Q, 1000)
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    opt = torch.optim.Adam(D.parameters(), lr=2e-2)
    for _ in range(500):
        d_adv = loss.d_adv(D(xp).squeeze(1), D(xq).squeeze(1))
        opt.zero_grad()
        d_adv.backward()
        opt.step()
    with torch.no_grad():
        estimate = -float(loss.d_adv(D(xp).squeeze(1), D(xq).squeeze(1)))
    assert estimate == pytest.approx(truth, rel=0.03), (estimate, truth)


# --------------------------------------------------------------------------------------------- the trainer
@pytest.mark.parametrize("gan", ["minimax", *[f"fgan-{n}" for n in sorted(TABLE2)]])
def test_trains_resumes_exactly_and_generates(gan, disk_set, tmp_path, assert_resume_exact, finite_stats):
    state = assert_resume_exact(disk_set, tmp_path, gan, ["model.g_filters=8", "model.d_filters=8"])
    assert state["config"]["loss"]["name"] == GANS[gan].loss and state["config"]["gan"] == gan
    finite_stats(tmp_path / "full")
    out = tmp_path / "gen"
    assert cli_main(["generate", str(tmp_path / "full"), "--n", "3", "--out", str(out), "--batch", "2"]) == 0
    gen = load_prepared(out)
    assert len(gen) == 3 and gen.meta["gan"] == gan and gen.source == "generated"
