"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a cubic polynomial kernel.

k(x, y) = (xᵀy / d + 1)³. Over ``num_subsets`` random subsets of size m = min(subset_size, n1, n2)
drawn without replacement from each set:

    MMD²_u = [Σ_{i≠j} k(x_i, x_j) + Σ_{i≠j} k(y_i, y_j)] / (m (m - 1)) - 2 Σ_{i,j} k(x_i, y_j) / m²

(the estimator of StyleGAN2-ADA's ``metrics/kernel_inception_distance.py``); we report the mean and
the standard deviation over subsets. Unlike FID it is unbiased at small n, so it is the number to
trust on sets smaller than the feature dimension (IDRiD: 54 images). Float64 throughout: the
estimate is a difference of sums of ~m² kernel values of size ~1 and float32 would cancel it away.
"""

from __future__ import annotations

import numpy as np
import torch


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    same = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(same - 2 * kxy.sum() / (m * m))


def kid_subsets(
    features1,
    features2,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``[num_subsets]`` unbiased MMD² values between random subsets of ``features1 [n1, d]`` and ``features2 [n2, d]``."""
    f1 = torch.as_tensor(np.asarray(features1), dtype=torch.float64, device=device or "cpu")
    f2 = torch.as_tensor(np.asarray(features2), dtype=torch.float64, device=device or "cpu")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets of different dimension: {f1.shape[1]} vs {f2.shape[1]}")
    m = min(int(subset_size), len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        a = torch.as_tensor(rng.choice(len(f1), m, replace=False), device=f1.device)
        b = torch.as_tensor(rng.choice(len(f2), m, replace=False), device=f2.device)
        values[i] = _mmd2_unbiased(f1[a], f2[b])
    return values


def kid(features1, features2, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
        device: str | torch.device | None = None) -> dict:
    """``{"kid_mean", "kid_std", "kid_subsets", "kid_subset_size"}`` between two feature sets."""
    values = kid_subsets(features1, features2, num_subsets=num_subsets, subset_size=subset_size, seed=seed,
                         device=device)
    m = min(int(subset_size), len(features1), len(features2))
    return {
        "kid_mean": float(values.mean()),
        "kid_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "kid_subsets": int(num_subsets),
        "kid_subset_size": int(m),
    }
