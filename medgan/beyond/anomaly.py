"""Anomaly detection with a GAN trained on normal hearts only (notebook 08): D's score and an AnoGAN residual.

A GAN sees the NOR (normal) patients only (``medgan.data.subset.subset_prepared`` writes that set in the
standard format, so ``medgan train`` needs no knob). Every test slice (image + its mask, the joint D models)
then gets two scores, high = anomalous:

- ``d_score``: minus D's logit. D was trained to call normal joints real; an unseen pathology should look fake.
- ``anogan``: the AnoGAN latent search (Schlegl et al. 2017): ``z`` is optimised (Adam, ``steps`` steps, from a
  seeded N(0, I) start) to minimise ``(1 − λ)·mean|x − G(z)| + λ·mean|f(x) − f(G(z))|`` with ``f`` the output
  of D's last feature block and ``λ = 0.1``; the score is that loss at the final ``z``. Means (not Schlegl's
  sums) keep both terms independent of the image and feature sizes, so λ keeps its meaning across resolutions.

Slice scores are averaged per patient; ``auc_per_group`` gives, for each pathology group, the ROC AUC of its
patients against the NOR test patients (``roc_auc``: the Mann-Whitney U statistic with tied ranks averaged).

    scores = score_set("runs/acdc-32-NOR-dcgan-quick", "data/prepared/acdc-32")
    auc_per_group(scores["patient_scores"]["d_score"], scores["patient_groups"])
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.config import apply_overrides, from_dict, to_dict
from medgan.data import ensure_prepared
from medgan.data.phantoms import write_phantom
from medgan.data.prepared import PreparedSet, load_prepared, to_joint
from medgan.data.subset import subset_prepared
from medgan.errors import ConfigError, IncompatibleSetsError, UserError
from medgan.experiments import expected_source, get_profile, prepared_set, trained_run
from medgan.generate import load_generator, load_network
from medgan.runtime import progress_bar, resolve_device

SCORES = ("d_score", "anogan")


@dataclass(frozen=True)
class AnomalyConfig:
    """How test slices are scored (``score_set``)."""

    steps: int = 100  # AnoGAN latent-search iterations per slice (Schlegl et al. used 500)
    lr: float = 0.05  # Adam on z
    lam: float = 0.1  # λ: weight of D's feature residual (Schlegl et al.: 0.1)
    anogan: bool = True  # False: D's score only (no latent search)
    batch: int = 64
    checkpoint: str = "last"
    label_key: str = "group"
    normal: str = "NOR"
    device: str = "auto"
    seed: int = 0  # the latent search's starting z

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or self.lr <= 0:
            raise ConfigError(f"anomaly steps must be >= 0, batch >= 1, lr > 0 (got {self.steps}, {self.batch}, {self.lr})")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"anomaly lam must be in [0, 1], got {self.lam}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyConfig:
        return from_dict(cls, d)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> AnomalyConfig:
        return apply_overrides(self, assignments)


# ---------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------
def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given the mean of the ranks they span."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie): the Mann-Whitney U / (n_pos · n_neg).

    NaN when either side is empty (there is nothing to rank).
    """
    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    ranks = average_ranks(np.concatenate([neg, pos]))
    u = ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def roc_curve(negatives: Sequence[float], positives: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) as the threshold falls through every distinct score,
    from (0, 0) to (1, 1); the trapezoid area under it equals ``roc_auc``."""
    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    thresholds = np.unique(np.concatenate([neg, pos]))[::-1]
    fpr = [0.0] + [float((neg >= t).mean()) if len(neg) else float("nan") for t in thresholds]
    tpr = [0.0] + [float((pos >= t).mean()) if len(pos) else float("nan") for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def auc_per_group(scores: Sequence[float], groups: Sequence[str], *, normal: str = "NOR") -> dict[str, dict]:
    """Per group other than ``normal``: ROC AUC of its scores against the ``normal`` ones (high = anomalous),
    ``n`` of each side and the ROC curve; ``"all"`` pools every other group against ``normal``."""
    scores, groups = np.asarray(scores, np.float64), np.asarray(groups).astype(str)
    if len(scores) != len(groups):
        raise ValueError(f"{len(scores)} scores but {len(groups)} groups")
    neg = scores[groups == normal]
    if len(neg) == 0:
        raise UserError(f"no {normal!r} patients among the scored ones (groups: {sorted(set(groups.tolist()))}): "
                        "an AUC against normal needs some")
    out = {}
    others = sorted(set(groups.tolist()) - {normal})
    for g in [*others, "all"]:
        pos = scores[groups != normal] if g == "all" else scores[groups == g]
        fpr, tpr = roc_curve(neg, pos)
        out[g] = {"auc": roc_auc(neg, pos), "n_abnormal": int(len(pos)), "n_normal": int(len(neg)),
                  "fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out


# ---------------------------------------------------------------------------------------------
# loading D, scoring
# ---------------------------------------------------------------------------------------------
def load_discriminator(source: str | os.PathLike, checkpoint: str = "last", device: str | torch.device = "cpu"):
    """Load ``D`` of a run (``medgan.generate.load_network``): returns ``(D, info, state, path)``, D in eval mode
    (batch norm on its running statistics: a slice's score never depends on its batch), gradients off."""
    return load_network(source, checkpoint, device, network="D")


def _check_unconditional(model: nn.Module, run: Path, what: str) -> None:
    if getattr(model, "conditional", False) or getattr(model, "num_classes", 0):
        raise UserError(f"{run}: its {what} is conditional (on a mask or a label); anomaly scores need an "
                        "unconditional GAN trained on normal patients")


def anogan_search(G: nn.Module, D: nn.Module, x: torch.Tensor, z0: torch.Tensor, *, steps: int, lr: float,
                  lam: float) -> dict[str, torch.Tensor]:
    """Optimise ``z`` (from ``z0 [n, z_dim]``) so that ``G(z)`` matches ``x [n, C + K, H, W]``; per-sample
    ``loss``, ``residual`` (mean |x − G(z)|) and ``feature`` (mean |f(x) − f(G(z))|) at the final ``z``.

    The loss is summed over the batch for the gradient, so every sample's ``z`` follows its own loss
    (G and D in eval mode: no sample sees another).
    """
    with torch.no_grad():
        fx = D(x, return_features=True)[1][-1]
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)

    def terms(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fake = G(z)
        residual = (x - fake).abs().flatten(1).mean(1)
        feature = (fx - D(fake, return_features=True)[1][-1]).abs().flatten(1).mean(1)
        return (1 - lam) * residual + lam * feature, residual, feature

    for _ in range(steps):
        loss = terms(z)[0].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss, residual, feature = terms(z)
    return {"loss": loss, "residual": residual, "feature": feature}


def score_set(run_dir: str | os.PathLike, prepared: str | os.PathLike | PreparedSet, *, split: str = "test",
              cfg: AnomalyConfig | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Score every slice of ``split`` of ``prepared`` with the run's D (and AnoGAN search through its G).

    Returns a JSON-ready dict: ``slices`` (``patient``, ``group``, ``d_score``, ``anogan``,
    ``anogan_residual``, ``anogan_feature`` per slice), ``patient_ids``, ``patient_groups``, ``patient_scores``
    (per score, the mean over the patient's slices, in ``patient_ids`` order), ``auc`` (per score,
    ``auc_per_group`` at patient level; absent when ``split`` holds no ``normal`` patient), ``config``, ``seconds``.
    """
    cfg = cfg or AnomalyConfig()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    D, info, state, path = load_discriminator(run_dir, cfg.checkpoint, device)
    _check_unconditional(D, Path(run_dir), "D")
    ps = prepared if isinstance(prepared, PreparedSet) else load_prepared(prepared)
    ds = info["dataset"]
    if (ps.channels, ps.image_size) != (int(ds["channels"]), int(ds["image_size"])) or \
            {str(k): v for k, v in ps.labels.items()} != {str(k): v for k, v in ds["labels"].items()}:
        raise IncompatibleSetsError(f"{ps.root} ({ps.channels} channel(s), {ps.image_size}², labels {ps.labels}) is "
                                    f"not the kind of set run {run_dir} was trained on ({ds['channels']}, "
                                    f"{ds['image_size']}², {ds['labels']})")
    idx = ps.indices(split)
    if len(idx) == 0:
        raise UserError(f"{ps.root} has no slices in split {split!r}")
    patients = np.asarray(ps.patients[idx]).astype(str)
    groups = (np.asarray(ps.extra[cfg.label_key])[idx].astype(str) if cfg.label_key in ps.extra
              else np.full(len(idx), "unknown"))
    G = None
    if cfg.anogan:
        G = load_generator(run_dir, cfg.checkpoint, device)[0]
        _check_unconditional(G, Path(run_dir), "G")
    z_all = torch.randn(len(idx), G.z_dim, generator=torch.Generator().manual_seed(cfg.seed)) if G is not None else None
    out = {k: np.full(len(idx), np.nan) for k in ("d_score", "anogan", "anogan_residual", "anogan_feature")}
    for s in progress_bar(range(0, len(idx), cfg.batch), progress=progress, desc="anomaly scores", unit="batch"):
        rows = idx[s : s + cfg.batch]
        x = to_joint(np.asarray(ps.images[rows], np.float32), np.asarray(ps.masks[rows]), ps.num_labels).to(device)
        with torch.no_grad():
            out["d_score"][s : s + len(rows)] = (-D(x).float()).cpu().numpy()
        if G is not None:
            r = anogan_search(G, D, x, z_all[s : s + len(rows)].to(device), steps=cfg.steps, lr=cfg.lr, lam=cfg.lam)
            for key, name in (("loss", "anogan"), ("residual", "anogan_residual"), ("feature", "anogan_feature")):
                out[name][s : s + len(rows)] = r[key].float().cpu().numpy()
    ids = np.unique(patients)
    pgroups = np.asarray([groups[patients == p][0] for p in ids])
    score_names = [k for k in SCORES if not np.isnan(out[k]).all()]
    patient_scores = {k: [float(out[k][patients == p].mean()) for p in ids] for k in score_names}
    result: dict[str, Any] = {
        "run_dir": str(Path(run_dir)), "checkpoint": str(path), "checkpoint_kimg": float(state["nimg"]) / 1000,
        "gan": info.get("gan"), "trained_on": ds.get("root"), "prepared": str(ps.root), "split": split,
        "source": ps.source,
        "slices": {"patient": patients.tolist(), "group": groups.tolist(),
                   **{k: v.tolist() for k, v in out.items()}},
        "patient_ids": ids.tolist(), "patient_groups": pgroups.tolist(), "patient_scores": patient_scores,
        "config": cfg.to_dict(),
    }
    if (pgroups == cfg.normal).any():
        result["auc"] = {k: auc_per_group(patient_scores[k], pgroups, normal=cfg.normal) for k in score_names}
        result["slice_auc"] = {k: auc_per_group(out[k], groups, normal=cfg.normal) for k in score_names}
    result["seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------------
# the notebook's demo
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSize:
    patients: int | None  # phantom patients (None: the real download)
    size: int | None  # prepared image size (None: the paper's 128)
    kimg: float
    batch: int
    filters: int
    latent: int
    steps: int  # AnoGAN steps


DEMO_SIZES = {
    # 30 phantom patients give 10 test patients (2 per group); 32² slices and a 16-filter DCGAN for 2 kimg
    "quick": DemoSize(patients=30, size=32, kimg=2.0, batch=32, filters=16, latent=32, steps=20),
    "paper": DemoSize(patients=None, size=None, kimg=500.0, batch=64, filters=64, latent=100, steps=500),
}


def _demo_size(profile: str) -> DemoSize:
    get_profile(profile)  # the one error for an unknown profile
    if profile not in DEMO_SIZES:
        raise ConfigError(f"the anomaly demo has no sizes for profile {profile!r} (known: {sorted(DEMO_SIZES)})")
    return DEMO_SIZES[profile]


def normal_subset(real: PreparedSet, out: str | os.PathLike, *, label_key: str = "group", normal: str = "NOR") -> PreparedSet:
    """``subset_prepared(real, out, {label_key: [normal]})`` unless ``out`` already holds that subset of this very
    ``real`` set (its recorded source content hash and filter); otherwise (re)written."""
    out = Path(out)
    if (out / "dataset.json").is_file():
        old = load_prepared(out).meta.get("subset") or {}
        if old.get("source_content_sha256") == real.content_sha256 and old.get("where") == {label_key: [normal]}:
            return load_prepared(out)
    return subset_prepared(real.root, out, {label_key: [normal]}, overwrite=True)


def demo(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0, gan: str = "dcgan",
         progress: bool | None = False) -> dict[str, Any]:
    """Notebook 08's anomaly section: NOR-only GAN, patient-level ROC AUC per group for D's and AnoGAN's scores.

    ``quick``: a 30-patient ACDC phantom at 32² (``{data_root}/prepared/acdc-p30-32``), its NOR subset, a
    16-filter DCGAN for 3 kimg (run folder reused when current, ``medgan.experiments.trained_run``), 40 AnoGAN
    steps. ``paper``: the real ACDC download at 128², 500 kimg, 500 steps. Returns ``score_set``'s result plus
    ``profile``, ``normal_set``, ``n_test`` (patients per group) and ``timings`` (seconds per step).
    """
    d = _demo_size(profile)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if d.patients is None:
        real = prepared_set("acdc", profile, data_root=data_root, size=d.size, seed=seed)
    else:
        # the profile's own 12-patient phantom has one NOR test patient: too few for a patient-level ROC
        raw = Path(data_root) / "raw" / f"acdc-p{d.patients}"
        out = Path(data_root) / "prepared" / f"acdc-p{d.patients}-{d.size}"
        if not (out / "dataset.json").is_file() and not raw.exists():
            write_phantom("acdc", raw, patients=d.patients, seed=seed, progress=False)
        real = ensure_prepared("acdc", raw, out, profile=profile, seed=seed, size=d.size)
    if real.source != expected_source(profile):
        raise UserError(f"{real.root} is a {real.source} set; the {profile} profile expects {expected_source(profile)}")
    timings["data"] = time.perf_counter() - t
    t = time.perf_counter()
    normal = normal_subset(real, Path(data_root) / "prepared" / f"{real.root.name}-NOR")
    timings["subset"] = time.perf_counter() - t
    t = time.perf_counter()
    knobs = [f"model.g_filters={d.filters}", f"model.d_filters={d.filters}", f"model.latent_dim={d.latent}",
             "tick_kimg=0.5", f"snapshot_kimg={d.kimg}", "grid=16"]
    run_dir = trained_run(normal, gan, profile, runs_root=runs_root, seed=seed, kimg=d.kimg, batch=d.batch,
                          overrides=knobs, progress=progress)
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    result = score_set(run_dir, real, split="test", cfg=AnomalyConfig(steps=d.steps, seed=seed), progress=progress)
    timings["score"] = time.perf_counter() - t
    groups = np.asarray(result["patient_groups"])
    result.update(profile=profile, normal_set=str(normal.root), run=str(run_dir),
                  n_test={g: int((groups == g).sum()) for g in sorted(set(groups.tolist()))}, timings=timings)
    return result


def plot_demo(result: dict[str, Any]):
    """ROC curves per group (one panel per score) and the per-patient scores by group; returns the Figure."""
    import matplotlib.pyplot as plt

    names = [k for k in SCORES if k in result.get("auc", {})]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 4), squeeze=False)
    axes = axes[0]
    label = {"d_score": "D score (−logit)", "anogan": "AnoGAN residual"}
    for ax, name in zip(axes, names, strict=False):
        for g, r in result["auc"][name].items():
            style = dict(color="k", lw=2.5) if g == "all" else dict(lw=1.5)
            # straight segments between ROC points: a tie moves both rates at once (its area counts half)
            ax.plot(r["fpr"], r["tpr"], label=f"{g} AUC {r['auc']:.2f} ({r['n_abnormal']})", **style)
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set(xlabel="false-positive rate (NOR)", ylabel="true-positive rate", title=label[name], aspect="equal")
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[-1]
    groups = np.asarray(result["patient_groups"])
    order = sorted(set(groups.tolist()), key=lambda g: (g != "NOR", g))
    for j, name in enumerate(names):
        vals = np.asarray(result["patient_scores"][name])
        z = (vals - vals[groups == "NOR"].mean()) / (vals.std() or 1.0)
        for i, g in enumerate(order):
            ax.scatter(np.full((groups == g).sum(), i + 0.15 * (j - 0.5)), z[groups == g], s=18,
                       label=label[name] if i == 0 else None, color=f"C{j}")
    ax.set_xticks(range(len(order)), order)
    ax.set(ylabel="patient score (standardised, NOR mean = 0)", title="per-patient scores")
    ax.legend(fontsize=7)
    src = "PHANTOM data (procedural, not the real dataset)" if result.get("source") == "phantom" else "real data"
    fig.suptitle(f"Anomaly detection, GAN trained on NOR only — {src}; patient level, test split", fontsize=10)
    fig.tight_layout()
    return fig
