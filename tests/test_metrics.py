"""Metric maths on synthetic features (no network): FID closed forms and pytorch-fid equality, KID, PRDC,
memorisation, bootstrap."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from pytorch_fid.fid_score import calculate_frechet_distance

from medgan.cli import main as cli_main
from medgan.metrics.bench import make_images, run_frechet_bench
from medgan.metrics.bootstrap import bootstrap
from medgan.metrics.fid import _use_gram, feature_statistics, fid_from_features, frechet_distance, is_rank_deficient
from medgan.metrics.kid import kid, kid_subsets
from medgan.metrics.memorization import memorisation, nearest_distance
from medgan.metrics.prdc import prdc


def correlated(rng, n, d, shift=0.0, scale=0.3):
    mixing = rng.standard_normal((d, d)) * scale
    return rng.standard_normal((n, d)) @ mixing + shift


# ------------------------------------------------------------------------------------------- FID
@pytest.mark.parametrize("n", [40, 300])  # n <= d: Gram route; n > d: eigh route
def test_fid_of_a_set_with_itself_is_zero(n):
    x = correlated(np.random.default_rng(0), n, 64)
    assert _use_gram(n, n, 64) == (n <= 64)
    assert abs(fid_from_features(x, x)) < 1e-8


def test_fid_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, abs=1e-9)
    # FID is invariant to a common rotation of both Gaussians: the non-diagonal case, same closed form
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    assert rotated == pytest.approx(closed, abs=1e-8)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    v1, v2 = np.array([1.0, 2, 0.5, 1]), np.array([1.0, 1, 1, 3])
    x = mu1 + rng.standard_normal((n, d)) * np.sqrt(v1)
    y = mu2 + rng.standard_normal((n, d)) * np.sqrt(v2)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert fid_from_features(x, y) == pytest.approx(closed, abs=0.03)


def test_statistics_equal_numpy_mean_and_cov():
    x = correlated(np.random.default_rng(3), 50, 16)
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=0, atol=1e-12)


def test_fid_equals_pytorch_fid_on_full_rank_statistics():
    rng = np.random.default_rng(4)
    x, y = correlated(rng, 600, 64), correlated(rng, 500, 64, shift=0.2)
    m1, s1 = np.mean(x, axis=0), np.cov(x, rowvar=False)
    m2, s2 = np.mean(y, axis=0), np.cov(y, rowvar=False)
    theirs = calculate_frechet_distance(m1, s1, m2, s2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(theirs, abs=1e-6)
    assert fid_from_features(x, y) == pytest.approx(theirs, abs=1e-6)
    assert frechet_distance(m1, s1, m2, s2, exact=True) == theirs  # the pytorch-fid path, bit for bit


def test_fid_on_rank_deficient_statistics_matches_pytorch_fid():
    rng = np.random.default_rng(5)
    x, y = correlated(rng, 20, 64), correlated(rng, 30, 64, shift=0.1)
    assert is_rank_deficient(20, 64) and not is_rank_deficient(65, 64)
    theirs = calculate_frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    # pytorch-fid's sqrtm of a singular product carries ~1e-8 relative error itself
    assert fid_from_features(x, y) == pytest.approx(theirs, rel=1e-6)
    gram = fid_from_features(x, y)
    mu1, s1 = feature_statistics(x)
    mu2, s2 = feature_statistics(y)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(gram, rel=1e-7)


def test_fid_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimension"):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


# ------------------------------------------------------------------------------------------- KID
def test_kid_estimator_matches_a_brute_force_loop():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(6, 3)), rng.normal(0.3, 1, size=(6, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = 6
    same = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    values = kid_subsets(x, y, num_subsets=3, subset_size=6)  # subsets = whole sets (permuted)
    np.testing.assert_allclose(values, same - 2 * cross, rtol=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    shifted = rng.normal(0.5, 1, size=(1000, 16))
    same = kid(a, b, num_subsets=50, subset_size=200)
    diff = kid(a, shifted, num_subsets=50, subset_size=200)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"] / np.sqrt(50) + 1e-3
    assert diff["kid_mean"] > 20 * same["kid_std"]
    assert same["kid_subset_size"] == 200 and same["kid_subsets"] == 50


def test_kid_is_seeded():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(100, 4)), rng.normal(size=(80, 4))
    assert kid(a, b, subset_size=50, seed=3) == kid(a, b, subset_size=50, seed=3)


# ------------------------------------------------------------------------------------------- PRDC
def test_prdc_on_hand_made_points():
    real = np.array([[0.0], [1.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    # k=1 radii: real 0->1, 1->1, 3->2; fake 0.5->9.5, 10->9.5 (worked out by hand)
    r = prdc(real, fake, k=1)
    assert r["precision"] == 0.5  # 0.5 lies in real balls, 10 in none
    assert r["recall"] == 1.0  # the ball of 0.5 (radius 9.5) holds every real point
    assert r["density"] == 1.0  # 0.5 sits in 2 real balls, 10 in 0: (2 + 0) / 2 / k
    assert r["coverage"] == pytest.approx(2 / 3)  # 3's nearest fake (0.5) is 2.5 >= its radius 2


def test_prdc_of_identical_sets_is_perfect_and_of_far_sets_zero():
    x = np.random.default_rng(9).normal(size=(60, 8))
    same = prdc(x, x.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(x, x + 100.0, k=5)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0


def test_prdc_needs_more_than_k_samples():
    with pytest.raises(ValueError, match="k=5"):
        prdc(np.zeros((5, 2)), np.zeros((9, 2)), k=5)


# ------------------------------------------------------------------------------------ memorisation
def test_memorisation_flags_copies_of_training_samples_and_not_fresh_samples():
    rng = np.random.default_rng(10)
    train, test, fresh = rng.normal(size=(300, 8)), rng.normal(size=(150, 8)), rng.normal(size=(150, 8))
    copies = train[rng.choice(300, 150, replace=False)] + rng.normal(0, 1e-3, (150, 8))
    copied = memorisation(copies, train, test)
    honest = memorisation(fresh, train, test)
    assert copied["memorised"] and copied["near_copy_fraction"] == 1.0 and copied["median_ratio"] < 0.01
    assert not honest["memorised"]
    assert honest["near_copy_fraction"] < 0.15 and 0.7 < honest["median_ratio"] < 1.4
    assert honest["expected_fraction"] == 0.05 and honest["n_gen"] == 150


def test_memorisation_of_half_copies_is_flagged_with_the_right_fraction():
    rng = np.random.default_rng(11)
    train, test, fresh = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)), rng.normal(size=(100, 8))
    gen = np.concatenate([train[:100], fresh])
    r = memorisation(gen, train, test)
    assert r["memorised"] and 0.5 <= r["near_copy_fraction"] <= 0.6


def test_nearest_distance_is_exact():
    q = np.array([[0.0, 0.0], [3.0, 4.0]])
    ref = np.array([[1.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(nearest_distance(q, ref), [1.0, 4.0], atol=1e-12)


# --------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_of_a_mean_contains_the_true_mean_and_has_the_normal_width():
    true_mean, sd, n = 3.0, 2.0, 4000
    x = np.random.default_rng(12).normal(true_mean, sd, size=n)
    r = bootstrap(lambda a: float(a.mean()), x, n=400, seed=0, progress=False)
    lo, hi = r["ci"]
    assert lo < true_mean < hi
    # not degenerate and not loose: the width of the normal-theory 95 % interval, 2 * 1.96 * sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * sd / np.sqrt(n), rel=0.15)
    assert r["std"] == pytest.approx(sd / np.sqrt(n), rel=0.15)
    assert len(np.unique(r["values"])) == 400  # every replicate drew its own resample
    again = bootstrap(lambda a: float(a.mean()), x, n=400, seed=0, progress=False)
    assert again["ci"] == r["ci"]  # seeded


def test_bootstrap_ci_covers_the_true_mean_95_percent_of_the_time():
    """Coverage over many independent samples: a 95 % interval that is really 90 % (or 99 %) fails."""
    rng = np.random.default_rng(14)
    trials, n, sd = 400, 100, 1.0
    covered, widths = 0, []
    for t in range(trials):
        x = rng.normal(0.0, sd, size=n)  # true mean 0
        lo, hi = bootstrap(lambda a: float(a.mean()), x, n=200, seed=t, progress=False)["ci"]
        covered += lo < 0.0 < hi
        widths.append(hi - lo)
    # Binomial(400, 0.95) has sd 0.011; the percentile bootstrap of a mean under-covers slightly at n = 100
    assert 0.915 <= covered / trials <= 0.985
    assert np.mean(widths) == pytest.approx(2 * 1.96 * sd / np.sqrt(n), rel=0.05)


def test_bootstrap_fid_ci_brackets_the_shift():
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(200, 4)), rng.normal(1.0, 1, size=(200, 4))
    r = bootstrap(fid_from_features, a, b, n=50, seed=1, progress=False)
    lo, hi = r["ci"]
    assert lo < 4.0 < hi + 0.5 and hi - lo < 3  # true FID = 4 (mean shift of 1 in 4 dims)


# --------------------------------------------------------------------------------------- benchmark
def test_frechet_benchmark_agrees_with_pytorch_fid(capsys):
    r = run_frechet_bench(200, 32, device="cpu")
    assert r["route"] == "eigh" and r["abs_delta_fid"] < 1e-8
    assert "speed-up" in capsys.readouterr().out
    a, b = make_images(3, 16, 2.0, seed=0), make_images(3, 16, 2.0, seed=0)
    assert a.dtype == np.uint8 and a.shape == (3, 16, 16) and np.array_equal(a, b) and a.std() > 10


@pytest.mark.slow  # pytorch-fid's scipy sqrtm of a 2048 x 2048 product: ~15 s on 2 cores
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # pytorch-fid's own note on n <= d statistics
def test_cli_bench_fid_prints_and_writes_both_paths(tmp_path, monkeypatch, capsys):
    # no weights here: the bench must say it fell back to labelled random-weight features
    monkeypatch.setenv("MEDGAN_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    out = tmp_path / "bench" / "fid.json"
    rc = cli_main(["bench", "fid", "--n", "3", "--size", "16", "--batch", "3", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["n"] == 3 and r["size"] == 16 and r["batch"] == 3 and r["features"] == "inception-random"
    assert r["frechet_route"] == "gram" and r["dataloader_workers"] == 0  # 3 samples of 2048-d features
    assert r["abs_delta_fid"] == abs(r["fid_pytorch_fid"] - r["fid_ours"])
    # the two paths see the same images through the same network: one FID, up to pytorch-fid's singular sqrtm
    assert r["fid_pytorch_fid"] > 0.1
    assert r["fid_ours"] == pytest.approx(r["fid_pytorch_fid"], rel=1e-4)
    assert "FID benchmark: 3 vs 3 images (16² grayscale), batch 3" in printed
    assert "features inception-random (random weights" in printed
    theirs = re.search(r"pytorch-fid fid_score path .* FID ([0-9.]+)", printed)
    ours = re.search(r"medgan path .* gram route .* FID ([0-9.]+)", printed)
    assert theirs and float(theirs.group(1)) == pytest.approx(r["fid_pytorch_fid"], abs=1e-6)
    assert ours and float(ours.group(1)) == pytest.approx(r["fid_ours"], abs=1e-6)
    assert f"|ΔFID| {r['abs_delta_fid']:.2e}" in printed
