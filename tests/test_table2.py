"""Table 2's arithmetic and provenance (medgan.table2) on hand-made results, and the quick Inception substitute.

The full pipeline (train -> generate -> FID -> U-Net) runs in notebook 05 and in tests/test_notebook_params.py; here
every number is known in advance: Spearman's ρ of hand-ranked columns, the least/most effective GAN, the published
numbers, the caption's provenance tokens. One test runs the whole pipeline here, with two GANs forced to diverge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan import table2
from medgan.errors import UserError
from medgan.metrics.features import feature_cache_key, get_extractor


def _seg(mean: float, ci: float = 0.05) -> dict:
    return {"dice": {"LV": {"mean": mean}, "mean": {"mean": mean, "ci95": ci, "values": [mean - ci, mean + ci]}}}


def _result(fids: dict, dices: dict, domain: dict | None = None, **kw) -> dict:
    gans = list(fids)
    result = {
        "dataset": "acdc", "source": "phantom", "profile": "quick", "seed": 0, "features": "inception-random:128",
        "image_size": 32, "counts": {"train": 116, "val": 42, "test": 64}, "kimg": {g: 2.0 for g in fids}, "batch": 16,
        "unet_seeds": 2,
        "n_generate": 96,
        "runs": {g: {"status": "finished", "trained_on": "phantom", "kimg": 2.0} for g in gans},
        "fid": {g: {"fid": f, "fid_ci95": [f - 1, f + 1], "floor": {"fid": 0.5}, "kid_mean": f / 1000,
                    "memorisation": {"near_copy_fraction": 0.0}} for g, f in fids.items()},
        "domain_fid": {g: {"fid": f} for g, f in (domain or fids).items()},
        "dice": {"real": _seg(0.9), "real-aug": _seg(0.91), **{g: _seg(d) for g, d in dices.items()}},
    }
    result.update(kw)
    result["spearman"] = table2.spearman(result)
    return result


def test_spearman_is_minus_one_when_lower_fid_always_means_higher_dice():
    r = _result({"dcgan": 60.0, "lsgan": 50.0, "wgan": 40.0, "hinge": 30.0}, {"dcgan": 0.1, "lsgan": 0.2, "wgan": 0.3,
                                                                              "hinge": 0.4},
                domain={"dcgan": 1.0, "lsgan": 4.0, "wgan": 2.0, "hinge": 3.0})
    s = r["spearman"]
    assert s["fid"]["n"] == 4 and s["fid"]["rho"] == pytest.approx(-1.0) and s["fid"]["p"] == pytest.approx(0.0, abs=1e-9)
    # domain ranks 1,4,2,3 against Dice ranks 1,2,3,4: d² = 0+4+1+1 = 6 -> ρ = 1 - 6·6/(4·15) = 0.4
    assert s["domain_fid"]["rho"] == pytest.approx(0.4)


def test_spearman_is_undefined_below_three_gans_or_for_a_constant_column():
    two = _result({"dcgan": 60.0, "lsgan": 50.0}, {"dcgan": 0.1, "lsgan": 0.2})
    assert two["spearman"]["fid"] == {"rho": None, "p": None, "n": 2}
    flat = _result({"dcgan": 60.0, "lsgan": 50.0, "wgan": 40.0}, {"dcgan": 0.2, "lsgan": 0.2, "wgan": 0.2})
    assert flat["spearman"]["fid"]["rho"] is None and flat["spearman"]["fid"]["n"] == 3


def test_spearman_leaves_out_a_gan_without_a_dice():
    r = _result({"dcgan": 60.0, "lsgan": 50.0, "wgan": 40.0, "hinge": 30.0}, {"dcgan": 0.1, "lsgan": 0.2, "wgan": 0.3})
    assert r["spearman"]["fid"]["n"] == 3 and r["spearman"]["fid"]["rho"] == pytest.approx(-1.0)


def test_effectiveness_orders_by_generated_set_dice_then_fid():
    r = _result({"dcgan": 60.0, "lsgan": 50.0, "wgan": 40.0, "spade": 10.0},
                {"dcgan": 0.3, "lsgan": 0.1, "wgan": 0.3, "spade": 0.8})
    # wgan and dcgan tie on Dice: the higher FID (dcgan) is the less effective
    assert table2.effectiveness(r) == ["lsgan", "dcgan", "wgan", "spade"]


def test_frame_has_the_papers_rows_and_its_published_numbers():
    gans = {"dcgan": 60.0, "spade": 20.0, "stylegan2": 10.0}
    r = _result(gans, {"dcgan": 0.1, "spade": 0.5, "stylegan2": 0.6})
    r["dice"]["real+spade"] = _seg(0.88)
    t = table2.frame(r)
    assert list(t.index) == ["Original data", "Augmented original data", "DCGAN", "SPADE", "StyleGAN2",
                             "Orig. data + SPADE"]
    assert t.loc["DCGAN", "FID"] == 60.0 and t.loc["DCGAN", "paper FID"] == 60.12 and t.loc["DCGAN", "paper Dice"] == 0.3
    assert t.loc["SPADE", "paper FID"] == 41.54 and t.loc["Orig. data + SPADE", "paper Dice"] == 0.9
    assert t.loc["Original data", "FID"] == "" and t.loc["Original data", "paper Dice"] == 0.89
    assert t.loc["StyleGAN2", "Dice (± CI95)"] == "0.600 ± 0.050" and t.loc["DCGAN", "floor (real vs real)"] == 0.5


def test_a_nan_dice_reads_n_a_and_a_nan_ci_is_left_out():
    r = _result({"dcgan": 60.0, "lsgan": 50.0}, {"dcgan": float("nan"), "lsgan": 0.5})
    r["dice"]["lsgan"]["dice"]["mean"]["ci95"] = float("nan")  # one seed, or no spread
    r["dice"]["real"] = _seg(0.81234, 0.01234)
    t = table2.frame(r)
    assert t.loc["DCGAN", "Dice (± CI95)"] == "n/a" and t.loc["LSGAN", "Dice (± CI95)"] == "0.500"
    assert t.loc["Original data", "Dice (± CI95)"] == "0.812 ± 0.012"
    assert "nan" not in t.to_string().lower().replace("n/a", "")


def test_a_diverged_gan_says_so_in_its_row():
    r = _result({"dcgan": 60.0, "lsgan": 50.0}, {"dcgan": 0.1, "lsgan": 0.2})
    r["runs"]["wgan"] = {"status": "diverged", "not_scored": "no checkpoint"}
    t = table2.frame(r)
    assert "WGAN (diverged)" in t.index and t.loc["WGAN (diverged)", "FID"] == "" and t.loc["WGAN (diverged)", "Dice (± CI95)"] == "n/a"


def test_published_table_is_the_papers():
    p = table2.PAPER_TABLE2
    assert set(p) == {"acdc", "sliver07", "idrid"}
    assert p["idrid"]["spade"] == (1.09, 0.82) and p["sliver07"]["stylegan2"] == (29.06, 0.36)
    assert p["acdc"]["real"] == (None, 0.89) and p["sliver07"]["real-aug"] == (None, 0.70)
    assert all("wgan-gp" not in rows for rows in p.values())  # the paper prints no WGAN-GP row
    # the paper's own claim, checked on its own numbers: FID and Dice do not rank the GANs alike on SLiver07
    s = table2.paper_spearman()
    assert s["sliver07"]["n"] == 6 and -1 <= s["sliver07"]["rho"] <= 1 and s["acdc"]["rho"] < 0


def test_caption_states_every_provenance_item():
    r = _result({"dcgan": 60.0, "lsgan": 50.0, "wgan": 40.0}, {"dcgan": 0.1, "lsgan": 0.2, "wgan": 0.3})
    c = table2.caption(r)
    for token in ("ACDC", "phantom data", "32²", "profile quick", "2 kimg at batch 16 on phantom data", "seed 0",
                  "features inception-random:128", "2 seed(s)", "96 generated pairs", "train 116 / val 42 / test 64"):
        assert token in c, token
    real = dict(r, source="raw", runs={g: dict(v, trained_on="raw") for g, v in r["runs"].items()})
    assert "raw data" in table2.caption(real) and "phantom" not in table2.caption(real)
    assert table2.text(r).startswith(c) and "ρ = " in table2.text(r)


def test_kimg_text_names_the_exceptions():
    assert table2.kimg_text({"dcgan": 4.0, "hinge": 4.0, "spade": 2.0, "stylegan2": 2.0, "wgan": 4.0}) == (
        "4 kimg (SPADE, StyleGAN2: 2 kimg)")
    assert table2.kimg_text({"dcgan": 1000.0}) == "1000 kimg"


def test_numbers_ok_flags_out_of_range_values():
    r = _result({"dcgan": 60.0, "lsgan": 50.0, "wgan": 40.0}, {"dcgan": 0.1, "lsgan": 0.2, "wgan": 0.3})
    assert table2.numbers_ok(r) == []
    bad = _result({"dcgan": float("nan"), "lsgan": 50.0, "wgan": 40.0}, {"dcgan": 0.1, "lsgan": 1.2, "wgan": 0.3})
    problems = table2.numbers_ok(bad)
    assert any("fid of dcgan" in p for p in problems) and any("of lsgan: 1.2" in p for p in problems)
    del r["dice"]["wgan"]
    assert table2.numbers_ok(r) == ["wgan scored but has no Dice row"]


def test_table2_refuses_an_unknown_gan(tmp_path):
    with pytest.raises(UserError, match="no GAN"):
        table2.table2("acdc", "smoke", gans=["hinge", "bigbird"], data_root=tmp_path, runs_root=tmp_path)


def test_row_labels_follow_the_paper():
    assert [table2.row_label(r) for r in ("real", "real-aug", "wgan-gp", "real+stylegan2")] == [
        "Original data", "Augmented original data", "WGAN-GP", "Orig. data + StyleGAN2"]
    assert table2._folder("real+spade") == "real-gen-spade" and table2._folder("hinge") == "gen-hinge"


# ---------------------------------------------------------------------------------------------
# inception-random:<px>, the quick profile's extractor
# ---------------------------------------------------------------------------------------------
def test_inception_random_at_128_px_is_its_own_labelled_extractor():
    full, small = get_extractor("inception-random", "cpu"), get_extractor("inception-random:128", "cpu")
    assert small.name == "inception-random:128" and small.random_weights and small.info["input_px"] == 128
    assert small.digest != full.digest  # never shares a cached feature file with the 299² one

    class _Set:
        content_sha256 = "x"

    idx = np.arange(3)
    assert feature_cache_key(_Set(), small, idx) != feature_cache_key(_Set(), full, idx)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    seen = []
    handle = small.model.blocks[0][0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    try:
        f = small(x)
    finally:
        handle.remove()
    assert seen == [128] and f.shape == (2, 2048) and torch.isfinite(f).all()
    assert not torch.allclose(f, full(x))  # same weights, other input size: other features


@pytest.mark.parametrize("name", ["inception-random:74", "inception-random:300", "inception-random:big", "inception:128"])
def test_bad_inception_variants_are_refused(name):
    with pytest.raises(UserError):
        get_extractor(name, "cpu")


def test_quick_profile_runs_table2_at_the_sweep_size_with_the_small_inception():
    from medgan.config import get_profile

    q, paper = get_profile("quick"), get_profile("paper")
    assert q.table2_size == q.sweep_size == 32 and q.features == "inception-random:128" and q.unet_seeds >= 2
    assert paper.table2_size is None and paper.table2_kimg is None and paper.features == "inception"
    assert q.table2_kimg == 4.0 and q.table2_batch == 16 and not q.table2_swept and paper.table2_swept
    from medgan import experiments

    assert experiments.table2_kimg("quick", "spade") == 2.0 and experiments.table2_kimg("quick", "hinge") == 4.0
    assert experiments.table2_kimg("paper", "spade") == experiments.table2_kimg("paper", "hinge") == 1000.0


# ---------------------------------------------------------------------------------------------
# a GAN that diverges, through the whole pipeline (smoke sizes)
# ---------------------------------------------------------------------------------------------
def test_table2_scores_a_diverged_gan_from_its_checkpoint_and_leaves_one_without_any_unscored(tmp_path, monkeypatch):
    """LSGAN diverges at its 2nd tick (after the snapshot at 0.032 kimg): its row is scored from that checkpoint and
    says "(diverged)". WGAN diverges at its 1st tick, before any snapshot: its row has no numbers, it adds no U-Net,
    no domain FID and no original+WGAN row, and Spearman counts the GANs left."""
    import dataclasses

    from medgan import config
    from medgan.training import loop

    smoke = config.PROFILES["smoke"]
    monkeypatch.setitem(config.PROFILES, "smoke", dataclasses.replace(
        smoke, train_knobs=(*smoke.train_knobs, "snapshot_kimg=0.032")))
    healthy = loop.Run.divergence
    at_tick = {"lsgan": 2, "wgan": 1}
    ticks: dict[str, int] = {}

    def divergence(self, summary):
        ticks[self.cfg.gan] = ticks.get(self.cfg.gan, 0) + 1  # one call per tick end
        if at_tick.get(self.cfg.gan) == ticks[self.cfg.gan]:
            return "non-finite G_total (forced by the test)"
        return healthy(self, summary)

    monkeypatch.setattr(loop.Run, "divergence", divergence)
    result = table2.table2("idrid", "smoke", gans=("dcgan", "hinge", "lsgan", "wgan"), combos=("lsgan", "wgan"),
                           data_root=tmp_path / "data", runs_root=tmp_path / "runs", progress=False)
    runs = result["runs"]
    assert [runs[g]["status"] for g in ("dcgan", "hinge", "lsgan", "wgan")] == ["finished", "finished", "diverged",
                                                                                 "diverged"]
    assert "forced by the test" in runs["lsgan"]["reason"] and runs["lsgan"]["checkpoint_kimg"] == pytest.approx(0.032)
    assert "not_scored" in runs["wgan"] and "checkpoint" in runs["wgan"]["not_scored"]
    assert sorted(result["fid"]) == sorted(result["domain_fid"]) == ["dcgan", "hinge", "lsgan"]
    assert sorted(result["dice"]) == ["dcgan", "hinge", "lsgan", "real", "real+lsgan", "real-aug"]
    assert result["spearman"]["fid"]["n"] == 3 and table2.numbers_ok(result) == []
    t = table2.frame(result)
    assert "LSGAN (diverged)" in t.index and t.loc["LSGAN (diverged)", "Dice (± CI95)"] != "n/a"
    assert "WGAN (diverged)" in t.index and t.loc["WGAN (diverged)", "Dice (± CI95)"] == "n/a"
    assert list(t.index) == ["Original data", "Augmented original data", "DCGAN", "HingeGAN", "LSGAN (diverged)",
                             "WGAN (diverged)", "Orig. data + LSGAN"]
