"""Bootstrap confidence intervals over feature sets (seeded, percentile method).

Each replicate resamples the rows of every feature set with replacement, independently, and
recomputes the statistic. The percentile interval describes how much the number moves with the
particular samples drawn; it does not remove FID's small-sample bias (a resample has ~63 % distinct
rows, so bootstrap FIDs sit slightly above the point estimate) — compare CIs between models
computed at the same n, never with an FID at another n.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medgan.runtime import progress_bar


def bootstrap(
    statistic: Callable[..., float],
    *features: np.ndarray,
    n: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
    progress: bool | None = None,
    desc: str = "bootstrap",
) -> dict:
    """``{"ci": [lo, hi], "std", "n", "values"}`` of ``statistic(*resampled_features)`` over ``n`` replicates.

    ``progress``: None = a bar only on a terminal, True = on, False = off.
    """
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 replicates, got {n}")
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(f) for f in features]
    values = np.empty(n)
    for i in progress_bar(range(n), progress=progress, desc=desc, leave=False):
        values[i] = statistic(*(a[rng.integers(0, len(a), len(a))] for a in arrays))
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"ci": [float(lo), float(hi)], "std": float(values.std(ddof=1)), "n": int(n), "values": values}
