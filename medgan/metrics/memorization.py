"""Memorisation: does the generator output (near-)copies of its training images?

For every generated sample g, d(g) = distance (in feature space) to its nearest *training* sample.
The reference is what an honest, unseen sample from the same distribution looks like: the real
*test* set's own nearest-train distances d(t). A threshold tau is the q-th percentile of d(t)
(q = 5 by default), so by construction about q % of real unseen images fall below it:

* ``near_copy_fraction``  fraction of generated samples with d(g) < tau; ~q/100 for a generator that
  samples the distribution, up to 1 for one that replays training images;
* ``median_ratio``        median d(g) / median d(t); ~1 honest, << 1 copying (0 for exact copies);
* ``memorised``           near_copy_fraction >= 2 q/100 *and* a one-sided Fisher exact test of
  "more generated than test samples below tau" gives p < 0.01 (Fisher, not a binomial test against
  q/100, because tau itself is estimated from the finite test set) — a flag, not a proof: read it
  with the two numbers above.
"""

from __future__ import annotations

import numpy as np
import torch

from medgan.metrics.prdc import CHUNK, _sqdist


def nearest_distance(query, reference, device: str | torch.device | None = None) -> np.ndarray:
    """``[n_query]`` Euclidean distance of each row of ``query`` to its nearest row of ``reference``."""
    device = device or "cpu"
    q = torch.as_tensor(np.asarray(query), dtype=torch.float64, device=device)
    r = torch.as_tensor(np.asarray(reference), dtype=torch.float64, device=device)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature sets of different dimension: {q.shape[1]} vs {r.shape[1]}")
    out = torch.empty(len(q), dtype=torch.float64, device=device)
    for s in range(0, len(q), CHUNK):
        out[s : s + CHUNK] = _sqdist(q[s : s + CHUNK], r).min(1).values.sqrt()
    return out.cpu().numpy()


def memorisation(gen, train, test, *, q: float = 5.0, device: str | torch.device | None = None) -> dict:
    """Memorisation score of generated features ``gen [n, d]`` against ``train`` with ``test`` as the reference."""
    from scipy.stats import fisher_exact

    if not 0 < q < 100:
        raise ValueError(f"q must be a percentile in (0, 100), got {q}")
    d_gen = nearest_distance(gen, train, device)
    d_test = nearest_distance(test, train, device)
    tau = float(np.percentile(d_test, q))
    n_close = int((d_gen < tau).sum())
    frac = n_close / len(d_gen)
    med_test = float(np.median(d_test))
    n_test_close = int((d_test < tau).sum())
    table = [[n_close, len(d_gen) - n_close], [n_test_close, len(d_test) - n_test_close]]
    p_value = float(fisher_exact(table, alternative="greater").pvalue)
    return {
        "near_copy_fraction": frac,
        "expected_fraction": q / 100,
        "q": float(q),
        "threshold": tau,
        "median_ratio": float(np.median(d_gen) / med_test) if med_test > 0 else float("nan"),
        "gen_nn_median": float(np.median(d_gen)),
        "test_nn_median": med_test,
        "p_value": p_value,
        "memorised": bool(frac >= 2 * q / 100 and p_value < 0.01),
        "n_gen": int(len(d_gen)),
        "n_train": int(len(np.asarray(train))),
        "n_test": int(len(d_test)),
    }
