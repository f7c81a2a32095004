"""Patient-level splits (never by slice), seeded and independent of discovery order.

Every function sorts its input first, so the same patients and seed give the same split on any
file system. ``check_disjoint_splits`` (from ``prepared``) is the proof that no patient leaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medgan.data.prepared import SPLITS, check_disjoint_splits

__all__ = ["n_holdout", "stratified_pick", "split_official", "split_random", "check_disjoint_splits", "SPLITS"]


def n_holdout(n: int, fraction: float) -> int:
    """How many of ``n`` patients a ``fraction`` holds out: rounded, >= 1 when n >= 2 and fraction > 0, <= n - 1."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    if n < 2 or fraction == 0.0:
        return 0
    return int(min(n - 1, max(1, round(fraction * n))))


def stratified_pick(strata: Mapping[str, str], k: int, rng: np.random.Generator) -> list[str]:
    """Pick ``k`` ids from ``strata`` (id -> group) in proportion to the group sizes.

    Each group gets ``floor(k * n_g / n)``; the remaining picks go to the groups with the largest
    fractional quota (ties broken at random), so a 20% pick of 5 equal groups of 20 takes 4 from each.
    """
    ids = sorted(strata)
    if k <= 0:
        return []
    if k > len(ids):
        raise ValueError(f"cannot pick {k} of {len(ids)} patients")
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(strata[i], []).append(i)
    names = sorted(groups)
    quota = np.array([k * len(groups[g]) / len(ids) for g in names])
    take = np.floor(quota).astype(int)
    order = sorted(range(len(names)), key=lambda j: (-(quota[j] - take[j]), rng.random()))
    for j in order[: k - int(take.sum())]:
        take[j] += 1
    picked = []
    for g, t in zip(names, take, strict=True):
        members = groups[g]
        picked += [members[j] for j in rng.permutation(len(members))[:t]]
    return sorted(picked)


def split_official(
    subsets: Mapping[str, str],
    *,
    val_fraction: float,
    seed: int,
    strata: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Keep an official separation: ``testing`` -> test; ``training`` -> train + a val pick.

    ``subsets`` maps patient -> "training" | "testing"; ``strata`` (patient -> group) makes the val
    pick stratified (ACDC's pathology groups), otherwise it is a plain seeded draw.
    """
    bad = {s for s in subsets.values()} - {"training", "testing"}
    if bad:
        raise ValueError(f"unknown subset(s) {sorted(bad)}; expected 'training' or 'testing'")
    rng = np.random.default_rng(seed)
    training = sorted(p for p, s in subsets.items() if s == "training")
    test = sorted(p for p, s in subsets.items() if s == "testing")
    groups = {p: (strata or {}).get(p, "all") for p in training}
    val = stratified_pick(groups, n_holdout(len(training), val_fraction), rng)
    splits = {"train": sorted(set(training) - set(val)), "val": val, "test": test}
    check_disjoint_splits(splits)
    return splits


def split_random(patients: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded train/val/test by patient; with >= 3 patients each split holds at least one."""
    ids = sorted(set(patients))
    if len(ids) != len(patients):
        raise ValueError("duplicate patient ids")
    rng = np.random.default_rng(seed)
    order = [ids[j] for j in rng.permutation(len(ids))]
    n = len(ids)
    n_test = n_holdout(n, test_fraction)
    n_val = n_holdout(n - n_test, val_fraction * n / max(n - n_test, 1)) if val_fraction > 0 else 0
    if n >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    n_train = n - n_test - n_val
    if n >= 1 and n_train < 1:
        raise ValueError(f"no patient left for training ({n} patients, val {n_val}, test {n_test})")
    splits = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
    check_disjoint_splits(splits)
    return splits
