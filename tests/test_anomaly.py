"""medgan.beyond.anomaly: the rank AUC against hand examples and scikit-learn, ROC curves, per-group AUCs, the
AnoGAN search on a toy G whose optimum is known, and D/AnoGAN scoring of a trained run's test patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medgan.beyond.anomaly import (
    AnomalyConfig,
    anogan_search,
    auc_per_group,
    average_ranks,
    load_discriminator,
    roc_auc,
    roc_curve,
    score_set,
)
from medgan.data.prepared import load_prepared, to_joint, write_prepared
from medgan.errors import ConfigError, IncompatibleSetsError, UserError
from medgan.training.runs import load_checkpoint

SIZE = 16


# ---------------------------------------------------------------------------------------------
# AUC
# ---------------------------------------------------------------------------------------------
def test_auc_hand_examples():
    # positive 2 beats 1, ties 2, loses to 3 -> 1.5; positive 4 beats all three -> 3; (1.5 + 3) / (2 * 3)
    assert roc_auc([1, 2, 3], [2, 4]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [2, 3]) == 1.0
    assert roc_auc([2, 3], [0, 1]) == 0.0
    assert roc_auc([5, 5], [5]) == 0.5
    assert np.isnan(roc_auc([], [1.0])) and np.isnan(roc_auc([1.0], []))


def test_average_ranks_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], float)
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x))


def test_auc_matches_sklearn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        neg = rng.integers(0, 6, 13).astype(float)
        pos = rng.integers(2, 8, 9).astype(float)
        y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
        assert roc_auc(neg, pos) == pytest.approx(metrics.roc_auc_score(y, np.r_[neg, pos]))


def test_roc_curve_area_is_the_auc():
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(0, 1, 20).round(1), rng.normal(0.8, 1, 15).round(1)
    fpr, tpr = roc_curve(neg, pos)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(neg, pos))


def test_auc_per_group():
    scores = [0.1, 0.2, 0.9, 0.8, 0.15, 0.3]
    groups = ["NOR", "NOR", "DCM", "DCM", "HCM", "HCM"]
    out = auc_per_group(scores, groups)
    assert set(out) == {"DCM", "HCM", "all"}
    assert out["DCM"]["auc"] == 1.0 and out["DCM"]["n_abnormal"] == 2 and out["DCM"]["n_normal"] == 2
    assert out["HCM"]["auc"] == pytest.approx(roc_auc([0.1, 0.2], [0.15, 0.3]))  # = 0.75
    assert out["all"]["auc"] == pytest.approx(roc_auc([0.1, 0.2], [0.9, 0.8, 0.15, 0.3]))
    with pytest.raises(UserError, match="no 'NOR' patients"):
        auc_per_group([1.0, 2.0], ["DCM", "HCM"])
    with pytest.raises(ValueError, match="2 scores but 1 groups"):
        auc_per_group([1.0, 2.0], ["NOR"])


def test_config_checks():
    with pytest.raises(ConfigError, match="lam"):
        AnomalyConfig(lam=1.5)
    with pytest.raises(ConfigError, match="steps"):
        AnomalyConfig(steps=-1)
    assert AnomalyConfig().with_overrides(["steps=7"]).steps == 7


# ---------------------------------------------------------------------------------------------
# AnoGAN search on a toy pair
# ---------------------------------------------------------------------------------------------
class ToyG(nn.Module):
    """G(z) = reshape(W z): a linear G, so any target in its range is reachable exactly."""

    def __init__(self, z_dim: int = 4, shape=(2, 4, 4)):
        super().__init__()
        self.z_dim, self.shape = z_dim, shape
        self.W = nn.Linear(z_dim, int(np.prod(shape)), bias=False)

    def forward(self, z, mask_onehot=None):
        return self.W(z).view(len(z), *self.shape)


class ToyD(nn.Module):
    """Features = [2·x]; logit = sum."""

    def forward(self, x, labels=None, return_features=False):
        f = 2 * x
        logits = f.flatten(1).sum(1)
        return (logits, [f]) if return_features else logits


def test_anogan_terms_and_convergence():
    torch.manual_seed(0)
    G, D = ToyG().requires_grad_(False), ToyD()
    z_true = torch.randn(3, 4)
    x = G(z_true)
    z0 = torch.zeros(3, 4)
    start = anogan_search(G, D, x, z0, steps=0, lr=0.1, lam=0.1)
    # at z = 0 the residual is mean|x| and the feature residual mean|2x|: the loss is 0.9 * r + 0.1 * 2r
    r = x.abs().flatten(1).mean(1)
    torch.testing.assert_close(start["residual"], r)
    torch.testing.assert_close(start["feature"], 2 * r)
    torch.testing.assert_close(start["loss"], 0.9 * r + 0.1 * 2 * r)
    end = anogan_search(G, D, x, z0, steps=150, lr=0.05, lam=0.1)
    assert torch.all(end["loss"] < 0.1 * start["loss"]), (start["loss"], end["loss"])
    # samples are independent: searching one slice alone gives its score in the batch (few steps: near the
    # optimum the L1 kink makes Adam's path sensitive to rounding)
    batch = anogan_search(G, D, x, z0, steps=10, lr=0.05, lam=0.1)
    alone = anogan_search(G, D, x[1:2], z0[1:2], steps=10, lr=0.05, lam=0.1)
    torch.testing.assert_close(alone["loss"], batch["loss"][1:2])


# ---------------------------------------------------------------------------------------------
# scoring a trained run
# ---------------------------------------------------------------------------------------------
def _labelled_discs(out: Path) -> Path:
    """NOR = small bright disc, DCM = large dim disc; 4 slices a patient; train: NOR only (as the subset would be)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    plan = [("n0", "NOR", "train"), ("n1", "NOR", "train"), ("n2", "NOR", "val"), ("t0", "NOR", "test"),
            ("t1", "NOR", "test"), ("t2", "DCM", "test"), ("t3", "DCM", "test"), ("t4", "HCM", "test")]
    images, masks, patients, groups = [], [], [], []
    for pid, group, _ in plan:
        for _ in range(4):
            r = {"NOR": 3.0, "DCM": 6.0, "HCM": 2.0}[group] * rng.uniform(0.9, 1.1)
            disc = np.hypot(yy - 7.5, xx - 7.5) < r
            image = np.full((1, SIZE, SIZE), -0.8) + rng.normal(0, 0.05, (1, SIZE, SIZE))
            image[0][disc] = 0.6 if group == "NOR" else 0.0
            images.append(image.clip(-1, 1))
            masks.append(disc.astype(np.uint8))
            patients.append(pid)
            groups.append(group)
    splits = {s: [p for p, _, sp in plan if sp == s] for s in ("train", "val", "test")}
    meta = dict(name="discs-anomaly", modality="synthetic", labels={"0": "background", "1": "disc"}, source="phantom",
                splits=splits, normalisation="none", inputs_sha256="0" * 64)
    return write_prepared(out, images=np.asarray(images, np.float32), masks=np.asarray(masks), patients=patients,
                          meta=meta, extra={"group": np.asarray(groups, "<U8")})


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, train_disk_run, tiny_overrides):
    root = tmp_path_factory.mktemp("anomaly")
    data = _labelled_discs(root / "data")
    run = train_disk_run(data, root / "run", "dcgan", 0.048, [*tiny_overrides, "model.latent_dim=8"])
    return data, run


def test_load_discriminator_restores_the_checkpoint(scored_run):
    _, run = scored_run
    D, info, state, path = load_discriminator(run)
    assert path.name == "checkpoint-last.pt" and not D.training
    saved = load_checkpoint(path)["D"]
    for k, v in D.state_dict().items():
        assert torch.equal(v.cpu(), saved[k]), k
    assert info["dataset"]["name"] == "discs-anomaly"


def test_score_set_scores_every_test_slice(scored_run):
    data, run = scored_run
    cfg = AnomalyConfig(steps=5, batch=8, device="cpu")
    result = score_set(run, data, cfg=cfg)
    ps = load_prepared(data)
    idx = ps.indices("test")
    D = load_discriminator(run)[0]
    with torch.no_grad():
        by_hand = -D(to_joint(np.asarray(ps.images[idx], np.float32), np.asarray(ps.masks[idx]), 2)).numpy()
    np.testing.assert_allclose(result["slices"]["d_score"], by_hand, rtol=1e-5, atol=1e-6)
    assert result["slices"]["patient"] == ps.patients[idx].tolist()
    assert result["patient_ids"] == ["t0", "t1", "t2", "t3", "t4"]
    assert result["patient_groups"] == ["NOR", "NOR", "DCM", "DCM", "HCM"]
    slices = np.asarray(result["slices"]["anogan"])
    patients = np.asarray(result["slices"]["patient"])
    for name in ("d_score", "anogan"):
        per_slice = np.asarray(result["slices"][name])
        expected = [per_slice[patients == p].mean() for p in result["patient_ids"]]
        np.testing.assert_allclose(result["patient_scores"][name], expected)
        assert set(result["auc"][name]) == {"DCM", "HCM", "all"}
        assert result["auc"][name]["DCM"]["n_normal"] == 2 and result["auc"][name]["DCM"]["n_abnormal"] == 2
    assert np.isfinite(slices).all()
    np.testing.assert_allclose(slices, 0.9 * np.asarray(result["slices"]["anogan_residual"])
                               + 0.1 * np.asarray(result["slices"]["anogan_feature"]), rtol=1e-5)
    again = score_set(run, data, cfg=cfg)
    assert again["slices"]["anogan"] == result["slices"]["anogan"]  # the seeded start makes it repeatable
    other = score_set(run, data, cfg=AnomalyConfig(steps=5, batch=8, device="cpu", seed=1))
    assert other["slices"]["anogan"] != result["slices"]["anogan"]
    d_only = score_set(run, data, cfg=AnomalyConfig(anogan=False, device="cpu"))
    assert set(d_only["auc"]) == {"d_score"} and d_only["slices"]["d_score"] == result["slices"]["d_score"]


def test_score_set_refuses_another_kind_of_set(scored_run, discs):
    _, run = scored_run
    with pytest.raises(IncompatibleSetsError, match="not the kind of set"):
        score_set(run, discs, cfg=AnomalyConfig(anogan=False, device="cpu"))
