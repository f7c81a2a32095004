"""medgan.beyond.divergences: true f-divergences between Gaussians (against closed forms), their f-GAN
estimates, and the demo's training section end to end at a tiny size (runs reused on a second call)."""

from __future__ import annotations

import math

import matplotlib
import pytest

from medgan.beyond import divergences as demo_mod
from medgan.data.prepared import load_prepared
from medgan.losses.fgan import DIVERGENCES

matplotlib.use("Agg")
NARROW, WIDE = demo_mod.NARROW, demo_mod.WIDE


def _closed_forms(P, Q) -> dict[str, float]:
    """Closed forms for Gaussians P = N(m1, s1²), Q = N(m2, s2²)."""
    (m1, s1), (m2, s2) = P, Q
    kl = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    bc = math.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * math.exp(-((m1 - m2) ** 2) / (4 * (s1**2 + s2**2)))
    # χ²(P‖Q) = ∫ p²/q - 1: a Gaussian integral, finite when 2 s2² > s1²
    a = 2 / s1**2 - 1 / s2**2
    b = 2 * m1 / s1**2 - m2 / s2**2
    c = 2 * m1**2 / s1**2 - m2**2 / s2**2
    chi2 = (s2 / (s1**2 * math.sqrt(2 * math.pi))) * math.sqrt(2 * math.pi / a) * math.exp(b**2 / (2 * a) - c / 2) - 1
    return {"kl": kl, "hellinger": 2 * (1 - bc), "pearson": chi2}


def test_true_divergences_match_closed_forms():
    P, Q = NARROW, WIDE
    for name, value in _closed_forms(P, Q).items():
        assert demo_mod.true_divergence(DIVERGENCES[name], P, Q) == pytest.approx(value, rel=1e-6), name
    # reverse KL is KL with the arguments swapped; js (Table 2's) lies in (0, 2 log 2)
    assert demo_mod.true_divergence(DIVERGENCES["rkl"], Q, P) == pytest.approx(_closed_forms(P, Q)["kl"], rel=1e-6)
    assert 0 < demo_mod.true_divergence(DIVERGENCES["js"], P, Q) < 2 * math.log(2)


@pytest.mark.parametrize("name", ["kl", "rkl"])
def test_the_quick_shape_estimates_the_divergence(name):
    """At the quick profile's size (the full table's accuracy per divergence is tested in test_losses_fgan);
    rkl needs its Gaussians swapped (the module docstring says why)."""
    shape = demo_mod.SHAPES["quick"]
    P, Q = demo_mod.gaussian_pair(name)
    estimate = demo_mod.estimate_divergence(DIVERGENCES[name], P, Q, n=shape.estimate_n, steps=shape.estimate_steps)
    assert estimate == pytest.approx(_closed_forms(NARROW, WIDE)["kl"], rel=0.02)


def test_divergence_table_rows():
    rows = demo_mod.divergence_table(n=50, steps=2)
    assert [r["divergence"] for r in rows] == DIVERGENCES.names()
    for r in rows:
        assert r["true"] == demo_mod.true_divergence(DIVERGENCES[r["divergence"]], r["P"], r["Q"])
        assert r["rel_error"] == pytest.approx((r["estimate"] - r["true"]) / r["true"])


def test_demo_trains_generates_scores_and_reuses(monkeypatch, discs, tiny_overrides, tmp_path):
    tiny = demo_mod.DemoShape(size=None, kimg=0.016, knobs=(*tiny_overrides, "tick_kimg=0.008"),
                              gans=("minimax", "fgan-kl", "ebgan"), n_generate=3, n_real=4, estimate_n=50,
                              estimate_steps=2)
    monkeypatch.setitem(demo_mod.SHAPES, "quick", tiny)
    monkeypatch.setattr(demo_mod, "prepared_set", lambda *a, **k: load_prepared(discs))
    kw = dict(data_root=tmp_path / "data", runs_root=tmp_path / "runs")
    result = demo_mod.demo("quick", **kw)
    assert len(result["divergences"]) == 5
    gans = result["training"]["gans"]
    assert list(gans) == ["minimax", "fgan-kl", "ebgan"] and result["training"]["features"] == "inception-random:128"  # the quick profile's
    for gan, r in gans.items():
        assert r["status"] == "finished" and math.isfinite(r["fid"]) and r["fid"] >= 0
        assert (r["n_real"], r["n_gen"]) == (4, 3)
        assert load_prepared(r["generated"]).meta["gan"] == gan
    assert gans["ebgan"]["D_real"] >= 0  # energies
    figs = demo_mod.plot_demo(result)
    assert set(figs) == {"divergences", "samples"} and len(figs["samples"].axes) == 3
    # a second call reuses the current runs and sets: nothing is retrained
    ckpts = {g: (tmp_path / "runs" / f"discs-{g}-quick" / "checkpoint-last.pt").stat().st_mtime_ns for g in gans}
    again = demo_mod.train_family("quick", **kw)
    assert {g: r["fid"] for g, r in again["gans"].items()} == {g: r["fid"] for g, r in gans.items()}
    assert ckpts == {g: (tmp_path / "runs" / f"discs-{g}-quick" / "checkpoint-last.pt").stat().st_mtime_ns
                     for g in gans}
