"""Patient-level splits: sizes, stratification, official separation, determinism, disjointness."""

from __future__ import annotations

import random

import numpy as np
import pytest

from medgan.data.prepared import PreparedFormatError
from medgan.data.splits import check_disjoint_splits, n_holdout, split_official, split_random, stratified_pick

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


def acdc_like(n_train=100, n_test=50):
    subsets = {f"patient{i:03d}": ("training" if i <= n_train else "testing") for i in range(1, n_train + n_test + 1)}
    groups = {p: GROUPS[(int(p[-3:]) - 1) % 5] for p in subsets}
    return subsets, groups


@pytest.mark.parametrize("n,fraction,expected", [(0, 0.2, 0), (1, 0.2, 0), (2, 0.2, 1), (5, 0.2, 1), (100, 0.2, 20), (4, 0.0, 0), (3, 0.9, 2)])
def test_n_holdout(n, fraction, expected):
    assert n_holdout(n, fraction) == expected


def test_stratified_pick_takes_equal_share_of_equal_groups():
    strata = {f"p{i:03d}": GROUPS[i % 5] for i in range(100)}
    picked = stratified_pick(strata, 20, np.random.default_rng(0))
    assert len(picked) == len(set(picked)) == 20
    assert sorted(strata[p] for p in picked) == sorted(GROUPS * 4)


def test_stratified_pick_rounds_to_the_exact_total():
    strata = {f"p{i}": g for i, g in enumerate(["a"] * 3 + ["b"] * 3 + ["c"] * 1)}
    for seed in range(10):
        picked = stratified_pick(strata, 2, np.random.default_rng(seed))
        assert len(picked) == 2
        assert len({strata[p] for p in picked}) == 2  # the two largest quotas, one each


def test_acdc_split_keeps_official_test_and_stratifies_val():
    subsets, groups = acdc_like()
    splits = split_official(subsets, val_fraction=0.2, seed=0, strata=groups)
    assert splits["test"] == sorted(p for p, s in subsets.items() if s == "testing")
    assert len(splits["val"]) == 20 and len(splits["train"]) == 80
    assert sorted(groups[p] for p in splits["val"]) == sorted(GROUPS * 4)
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(subsets)
    check_disjoint_splits(splits)


def test_split_is_seeded_and_independent_of_input_order():
    subsets, groups = acdc_like()
    a = split_official(subsets, val_fraction=0.2, seed=3, strata=groups)
    items = list(subsets.items())
    random.Random(1).shuffle(items)
    b = split_official(dict(items), val_fraction=0.2, seed=3, strata=groups)
    c = split_official(subsets, val_fraction=0.2, seed=4, strata=groups)
    assert a == b
    assert a["val"] != c["val"]


@pytest.mark.parametrize("n,sizes", [(20, (14, 3, 3)), (4, (2, 1, 1)), (3, (1, 1, 1)), (2, (1, 0, 1)), (1, (1, 0, 0))])
def test_random_split_sizes(n, sizes):
    ids = [f"liver-{i:03d}" for i in range(1, n + 1)]
    splits = split_random(ids, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert tuple(len(splits[s]) for s in ("train", "val", "test")) == sizes
    assert sorted(sum(splits.values(), [])) == ids
    assert split_random(ids[::-1], val_fraction=0.15, test_fraction=0.15, seed=0) == splits


def test_disjointness_check_catches_a_leak():
    with pytest.raises(PreparedFormatError, match="patient001"):
        check_disjoint_splits({"train": ["patient001", "patient002"], "test": ["patient001"]})


def test_unknown_subset_is_rejected():
    with pytest.raises(ValueError, match="validation"):
        split_official({"a": "validation"}, val_fraction=0.2, seed=0)
