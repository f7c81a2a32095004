"""Notebook 08, "other GAN families": f-GAN divergences on known Gaussians, then minimax, f-GAN and EBGAN
trained on the ACDC phantom by the same trainer as the paper's GANs.

``demo(profile)`` does two things and returns one JSON-ready dict; ``plot_demo(result)`` draws it.

(a) **Does the f-GAN objective estimate the divergence?** For each f-divergence of Nowozin et al.
(``medgan.losses.fgan.DIVERGENCES``) a tiny 1-D D (an MLP 1-16-16-1) is trained to maximise
``E_P[g_f(v)] - E_Q[f*(g_f(v))]`` between P and Q, two known Gaussians; at the optimum the objective is
the divergence. The true value is ``∫ q f(p/q)`` by numerical integration (scipy ``quad``). The "samples"
are the (i + ½)/n quantiles of P and Q (stratified: the estimate then reflects the objective and D's
capacity, not Monte-Carlo noise). A sampled objective is unbounded where the distribution under an
unbounded term (Q's ``v`` for ``rkl``, P's ``exp`` terms otherwise) has samples and the other has none, so
that distribution is the narrower one: P = N(0, 1), Q = N(1, 1.5²), swapped for ``rkl``. ``js`` is Table
2's pair, which measures **twice** the usual Jensen-Shannon divergence (``medgan.losses.fgan``).

(b) **Training.** ``minimax``, one or two f-GANs and ``ebgan`` through ``medgan.experiments.trained_run``
(run folders ``{runs_root}/acdc-<size>-<gan>-<profile>``, reused while current), a generated set each
(``generated_set``), and FID with the profile's features (``inception-random`` in ``quick``: a labelled
random-weight substitute, never comparable with published FIDs) against real slices of the GANs' training
patients. In ``quick`` everything is shaped to stay within about 90 s on a 2-core CPU (``SHAPES``): 32²
slices, 16 filters, 1 kimg per GAN, three GANs, FID on 24 generated vs 48 real slices (Inception costs
~0.3 s a slice there). Such FIDs are rank-deficient and noisy: they show the pipeline, not a ranking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, stats
from torch import nn

from medgan.config import get_profile
from medgan.data.prepared import GAN_SPLIT, load_prepared
from medgan.experiments import generated_set, prepared_set, trained_run
from medgan.images import pairs_grid
from medgan.losses.fgan import DIVERGENCES, FDivergence, variational_objective
from medgan.metrics import dataset_features, fid_from_features, get_extractor
from medgan.training import read_stats, run_status

NARROW, WIDE = (0.0, 1.0), (1.0, 1.5)  # (mean, sd) of the two Gaussians


@dataclass(frozen=True)
class DemoShape:
    """How big the demo is in a profile (training knobs go on top of the profile's own ``train_knobs``)."""

    size: int | None  # prepared ACDC size; None = the profile's
    kimg: float | None  # per GAN; None = the profile's
    knobs: tuple[str, ...]
    gans: tuple[str, ...]
    n_generate: int  # generated pairs per GAN (0 = the profile's)
    n_real: int  # real slices of the GANs' training split that FID compares with (0 = all)
    estimate_n: int  # quantile samples per distribution in (a)
    estimate_steps: int  # Adam steps of the 1-D D in (a)


SHAPES: dict[str, DemoShape] = {
    "quick": DemoShape(size=32, kimg=1.0, knobs=("model.g_filters=16", "model.d_filters=16", "tick_kimg=0.25",
                                                 "snapshot_kimg=1.0"),
                       gans=("minimax", "fgan-kl", "ebgan"), n_generate=24, n_real=48, estimate_n=500,
                       estimate_steps=400),
    "paper": DemoShape(size=None, kimg=None, knobs=(), gans=("minimax", "fgan-kl", "fgan-hellinger", "ebgan"),
                       n_generate=0, n_real=0, estimate_n=20000, estimate_steps=3000),
}


# --------------------------------------------------------------------------------------------- (a)
def gaussian_pair(name: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(P, Q) as (mean, sd) for divergence ``name`` (see the module docstring for the swap of ``rkl``)."""
    return (WIDE, NARROW) if name == "rkl" else (NARROW, WIDE)


def true_divergence(div: FDivergence, P, Q) -> float:
    """``D_f(P‖Q) = ∫ q f(p/q) dx`` for Gaussians P, Q, by adaptive quadrature."""
    p, q = stats.norm(*P), stats.norm(*Q)
    value, _ = integrate.quad(lambda x: q.pdf(x) * div.f(p.pdf(x) / q.pdf(x)), -25, 25, limit=200)
    return float(value)


def _quantiles(mean: float, sd: float, n: int) -> torch.Tensor:
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (mean + sd * torch.special.ndtri(u))[:, None]


def estimate_divergence(div: FDivergence, P, Q, *, n: int = 1000, steps: int = 500, hidden: int = 16,
                        lr: float = 0.02, seed: int = 0) -> float:
    """Train a 1-``hidden``-``hidden``-1 tanh MLP to maximise the f-GAN objective; return its final value."""
    xp, xq = _quantiles(*P, n), _quantiles(*Q, n)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        D = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                          nn.Linear(hidden, 1)).double()
    opt = torch.optim.Adam(D.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops on [1000, 16] tensors: a second thread only adds synchronisation
    try:
        for _ in range(steps):
            loss = -variational_objective(div, D(xp).squeeze(1), D(xq).squeeze(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(variational_objective(div, D(xp).squeeze(1), D(xq).squeeze(1)))
    finally:
        torch.set_num_threads(threads)


def divergence_table(*, n: int = 1000, steps: int = 500, seed: int = 0) -> list[dict]:
    """One row per divergence: P, Q, the true value, the optimal-D estimate, relative error, seconds."""
    rows = []
    for name in DIVERGENCES.names():
        div = DIVERGENCES[name]
        P, Q = gaussian_pair(name)
        t0 = time.perf_counter()
        estimate = estimate_divergence(div, P, Q, n=n, steps=steps, seed=seed)
        truth = true_divergence(div, P, Q)
        rows.append({"divergence": name, "title": div.title, "P": list(P), "Q": list(Q), "true": truth,
                     "estimate": estimate, "rel_error": (estimate - truth) / truth,
                     "seconds": round(time.perf_counter() - t0, 2)})
    return rows


# --------------------------------------------------------------------------------------------- (b)
def _fid(real, gen, extractor, n_real: int, seed: int) -> dict:
    idx = real.indices(GAN_SPLIT)
    if n_real and n_real < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, n_real, replace=False))
    f_real = dataset_features(real, extractor, indices=idx, progress=False)
    f_gen = dataset_features(gen, extractor, split="all", progress=False)
    return {"fid": fid_from_features(f_real, f_gen), "n_real": len(f_real), "n_gen": len(f_gen),
            "features": extractor.name.split(":")[0]}


def train_family(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
                 progress: bool | None = False) -> dict:
    """Train (or reuse) each GAN of ``SHAPES[profile]``, sample a set from it and compute its FID."""
    p, shape = get_profile(profile), SHAPES[profile]
    real = prepared_set("acdc", profile, data_root=data_root, size=shape.size, seed=seed)
    kimg = shape.kimg or p.kimg
    extractor = get_extractor(p.features)
    out: dict = {"dataset": real.root.name, "source": real.source, "features": p.features, "kimg": kimg, "gans": {}}
    for gan in shape.gans:
        t0 = time.perf_counter()
        run_dir = trained_run(real, gan, profile, runs_root=runs_root, seed=seed, kimg=kimg,
                              overrides=shape.knobs, progress=progress)
        t_train = time.perf_counter() - t0
        gen = generated_set(run_dir, profile, data_root=data_root, n=shape.n_generate or p.n_generate, seed=seed,
                            progress=progress)
        stats_last = (read_stats(run_dir) or [{}])[-1]
        out["gans"][gan] = {
            "run_dir": str(run_dir), "generated": str(gen.root), "status": run_status(run_dir)["status"],
            "D_real": stats_last.get("D_real"), "D_fake": stats_last.get("D_fake"),
            **_fid(real, gen, extractor, shape.n_real, seed),
            "train_seconds": round(t_train, 1), "seconds": round(time.perf_counter() - t0, 1),
        }
    return out


def demo(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0) -> dict:
    """(a) true vs estimated f-divergences between two Gaussians, (b) minimax / f-GAN / EBGAN on ACDC."""
    shape = SHAPES[get_profile(profile).name]
    t0 = time.perf_counter()
    table = divergence_table(n=shape.estimate_n, steps=shape.estimate_steps, seed=seed)
    t1 = time.perf_counter()
    family = train_family(profile, data_root=data_root, runs_root=runs_root, seed=seed)
    return {"profile": profile, "seed": seed, "divergences": table, "training": family,
            "seconds": {"divergences": round(t1 - t0, 1), "training": round(time.perf_counter() - t1, 1)}}


# --------------------------------------------------------------------------------------------- figures
def plot_demo(result: dict, n_samples: int = 8) -> dict:
    """``{"divergences": bars of true vs estimated, "samples": one grid of image|mask pairs per GAN}``."""
    import matplotlib.pyplot as plt

    rows = result["divergences"]
    fig_div, ax = plt.subplots(figsize=(6.5, 3.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["true"] for r in rows], 0.4, label="true (numerical integration)", color="0.6")
    ax.bar(x + 0.2, [r["estimate"] for r in rows], 0.4, label="f-GAN estimate (optimal 1-D D)", color="C0")
    ax.set_xticks(x, [r["divergence"] for r in rows])
    ax.set_ylabel("divergence D_f(P‖Q)")
    ax.set_title("f-divergences between two Gaussians (js: Table 2's, 2× the usual JS)", fontsize=9)
    ax.legend(fontsize=8)
    fig_div.tight_layout()

    gans = result["training"]["gans"]
    fig_s, axes = plt.subplots(1, len(gans), figsize=(4.2 * len(gans), 3.0), squeeze=False)
    for ax, (gan, r) in zip(axes[0], gans.items(), strict=True):
        gen = load_prepared(r["generated"])
        k = min(n_samples, len(gen))
        ax.imshow(pairs_grid(np.asarray(gen.images[:k], np.float32), np.asarray(gen.masks[:k]), columns=2))
        ax.set_title(f"{gan}: FID {r['fid']:.0f} ({r['features']}, n={r['n_gen']})", fontsize=8)
        ax.axis("off")
    fig_s.suptitle(f"{result['training']['dataset']} ({result['training']['source']}): generated image | mask",
                   fontsize=9)
    fig_s.tight_layout()
    return {"divergences": fig_div, "samples": fig_s}


__all__ = ["SHAPES", "DemoShape", "demo", "divergence_table", "estimate_divergence", "gaussian_pair", "plot_demo",
           "train_family", "true_divergence"]
