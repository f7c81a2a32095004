"""Precision, recall, density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics").

With B(x, r) the ball around x whose radius r is the distance to x's k-th nearest neighbour in its
own set (k = 5, self excluded):

* precision = fraction of generated samples inside some real ball           (fidelity)
* recall    = fraction of real samples inside some generated ball           (diversity)
* density   = mean over generated samples of (#real balls containing it) / k  (fidelity, outlier-robust)
* coverage  = fraction of real samples whose ball contains some generated sample  (diversity)

Same definitions and strict inequalities as the authors' ``prdc`` package. Distances are Euclidean in
float64 and processed in chunks of generated samples, so 10k x 10k never needs an n² matrix at once.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 2048


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T
    return d.clamp_(min=0)


def kth_neighbour_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[n]`` distance of every row of ``x [n, d]`` to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"k-NN with k={k} needs more than {k} samples, got {len(x)}")
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for s in range(0, len(x), CHUNK):
        d = _sqdist(x[s : s + CHUNK], x)
        # the k+1-th smallest includes the point itself at distance 0 (as in the prdc package)
        out[s : s + CHUNK] = d.topk(k + 1, dim=1, largest=False).values[:, -1].sqrt()
    return out


def prdc(real, fake, *, k: int = 5, device: str | torch.device | None = None) -> dict:
    """``{"precision", "recall", "density", "coverage", "prdc_k"}`` for ``real [n, d]`` vs ``fake [m, d]``."""
    device = device or "cpu"
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64, device=device)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature sets of different dimension: {r.shape[1]} vs {f.shape[1]}")
    r_radius = kth_neighbour_distance(r, k)
    f_radius = kth_neighbour_distance(f, k)
    inside_real = torch.zeros(len(f), dtype=torch.long, device=device)  # per fake: #real balls containing it
    real_recalled = torch.zeros(len(r), dtype=torch.bool, device=device)
    real_nearest_fake = torch.full((len(r),), float("inf"), dtype=torch.float64, device=device)
    for s in range(0, len(f), CHUNK):
        d = _sqdist(f[s : s + CHUNK], r).sqrt()  # [chunk, n_real]
        inside_real[s : s + CHUNK] = (d < r_radius[None, :]).sum(1)
        real_recalled |= (d < f_radius[s : s + CHUNK, None]).any(0)
        real_nearest_fake = torch.minimum(real_nearest_fake, d.min(0).values)
    return {
        "precision": float((inside_real > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(inside_real.double().mean() / k),
        "coverage": float((real_nearest_fake < r_radius).double().mean()),
        "prdc_k": int(k),
    }
