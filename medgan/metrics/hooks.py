"""Training-time metric hooks ``fid_hook`` and ``kid_hook``: ``METRIC_HOOKS["fid"]`` / ``["kid"]``.

``medgan.training.hooks`` registers them by path (``"medgan.metrics.hooks:fid_hook"``), so the trainer
imports this module on first use and this module registers nothing itself.

Cheap monitoring numbers, not the Table 2 evaluation: ``n`` generated samples (``ctx.sample(n)``,
seeded by the trainer) against a fixed, seeded subset of ``n`` images of the run's training split (``cfg.split``, the paper's training patients), so
successive ticks of one run are comparable with each other (never with a full 10k FID).

Settings, first found wins: the config field (``cfg.metric_features`` / ``cfg.metric_n`` if the
trainer's config has them), then ``$MEDGAN_METRIC_FEATURES`` / ``$MEDGAN_METRIC_N``, then defaults:
features ``"inception"`` (an error when its weights are absent — set ``inception-random`` explicitly
to monitor with labelled random features) and n = 1024 on CUDA, 64 on CPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medgan.data.prepared import GAN_SPLIT, load_prepared
from medgan.metrics.features import dataset_features, extract_features, get_extractor, split_indices
from medgan.metrics.fid import fid_from_features, is_rank_deficient
from medgan.metrics.kid import kid
from medgan.training.hooks import MetricContext

REAL_SUBSET_SEED = 0


def hook_settings(ctx: MetricContext) -> tuple[str, int]:
    """(feature extractor name, sample count) for this run."""
    cfg = ctx.cfg
    features = getattr(cfg, "metric_features", None) or os.environ.get("MEDGAN_METRIC_FEATURES") or "inception"
    n = getattr(cfg, "metric_n", None) or os.environ.get("MEDGAN_METRIC_N")
    if not n:
        n = 1024 if str(ctx.device).startswith("cuda") else 64
    return str(features), int(n)


# One generated batch serves both hooks of a tick: (run, kimg, features, n) -> (real, gen) features.
_LAST: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _features(ctx: MetricContext) -> tuple[np.ndarray, np.ndarray, str]:
    features, n = hook_settings(ctx)
    key = (str(ctx.run_dir), float(ctx.kimg), features, n)
    extractor = get_extractor(features, ctx.device)
    if key not in _LAST:
        real = load_prepared(ctx.real_dir)
        idx = split_indices(real, getattr(ctx.cfg, "split", "") or GAN_SPLIT)  # the run's training patients
        if len(idx) > n:
            idx = np.sort(np.random.default_rng(REAL_SUBSET_SEED).choice(idx, n, replace=False))
        f_real = dataset_features(real, extractor, indices=idx, progress=False)
        image, _mask = ctx.sample(n)
        f_gen = extract_features(np.asarray(image, np.float32), extractor, progress=False)
        _LAST.clear()
        _LAST[key] = (f_real, f_gen)
    f_real, f_gen = _LAST[key]
    return f_real, f_gen, extractor.name


def fid_hook(ctx: MetricContext) -> dict[str, Any]:
    f_real, f_gen, name = _features(ctx)
    return {
        "value": fid_from_features(f_real, f_gen, device=ctx.device),
        "n_real": len(f_real),
        "n_gen": len(f_gen),
        "features": name,
        "rank_deficient": is_rank_deficient(min(len(f_real), len(f_gen)), f_real.shape[1]),
    }


def kid_hook(ctx: MetricContext) -> dict[str, Any]:
    f_real, f_gen, name = _features(ctx)
    k = kid(f_real, f_gen, num_subsets=50, subset_size=1000, device=ctx.device)
    return {"value": k["kid_mean"], **k, "n_real": len(f_real), "n_gen": len(f_gen), "features": name}
