"""Dice from TP/FP/FN on hand-made masks with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medgan.io import jsonable
from medgan.segmentation.dice import (
    FN,
    FP,
    TP,
    confusion_counts,
    dice_from_counts,
    dice_report,
    group_counts,
    mean_ci,
)


def square(top: int, left: int, size: int = 4, shape: int = 8, label: int = 1) -> np.ndarray:
    m = np.zeros((shape, shape), np.int64)
    m[top : top + size, left : left + size] = label
    return m


def test_two_squares_overlapping_by_two_columns_give_half():
    target = square(0, 0)
    pred = square(0, 2)  # 4x4 squares sharing 2 columns: TP 8, FP 8, FN 8
    counts = confusion_counts(pred, target, 2)
    assert counts.shape == (2, 3)
    assert counts[1].tolist() == [8, 8, 8]
    assert dice_from_counts(counts)[1] == 0.5
    # background: 64 - 24 pixels agree, 8 FP (pred bg where target fg) and 8 FN
    assert counts[0].tolist() == [40, 8, 8]
    assert dice_from_counts(counts)[0] == pytest.approx(80 / 96)


def test_counts_match_a_direct_definition_on_random_masks():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (5, 7, 9))
    target = rng.integers(0, 4, (5, 7, 9))
    counts = confusion_counts(pred, target, 4)
    assert counts.shape == (5, 4, 3)
    for i in range(5):
        for c in range(4):
            p, t = pred[i] == c, target[i] == c
            assert counts[i, c, TP] == np.sum(p & t)
            assert counts[i, c, FP] == np.sum(p & ~t)
            assert counts[i, c, FN] == np.sum(~p & t)
    # torch input gives the same
    assert np.array_equal(confusion_counts(torch.from_numpy(pred), torch.from_numpy(target), 4), counts)


def test_absent_in_both_is_nan_and_absent_in_gt_but_predicted_is_zero():
    target = square(0, 0, label=1)
    pred = square(0, 0, label=1)
    pred[7, 7] = 3  # class 3 predicted on one pixel, absent in GT; class 2 absent in both
    dice = dice_from_counts(confusion_counts(pred, target, 4))
    assert dice[1] == 1.0
    assert math.isnan(dice[2])
    assert dice[3] == 0.0


def test_perfect_prediction_is_one_and_disjoint_is_zero():
    t = square(0, 0)
    assert dice_from_counts(confusion_counts(t, t, 2))[1] == 1.0
    assert dice_from_counts(confusion_counts(square(4, 4), t, 2))[1] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((4, 4), int), np.zeros((4, 5), int), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_counts(np.full((4, 4), 2), np.zeros((4, 4), int), 2)
    with pytest.raises(TypeError, match="integer"):
        confusion_counts(np.zeros((4, 4)), np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="TP, FP, FN"):
        dice_from_counts(np.zeros((3, 2)))


def test_patient_dice_is_the_3d_dice_of_summed_slices():
    # patient A: slice 0 perfect (TP 16), slice 1 half overlap (TP 8, FP 8, FN 8) -> 3-D dice 48/64
    # patient B: class 1 absent in both slices -> NaN; class 2 perfect
    t0, t1 = square(0, 0), square(0, 0)
    p0, p1 = square(0, 0), square(0, 2)
    b = square(2, 2, label=2)
    target = np.stack([t0, t1, b, b])
    pred = np.stack([p0, p1, b, b])
    counts = confusion_counts(pred, target, 3)
    ids, summed = group_counts(counts, ["A", "A", "B", "B"])
    assert ids == ["A", "B"]
    assert summed[0, 1].tolist() == [24, 8, 8]
    rep = dice_report(counts, {"0": "bg", "1": "one", "2": "two"}, ["A", "A", "B", "B"])
    assert rep["classes"] == ["one", "two"]
    assert rep["per_patient"]["A"]["one"] == pytest.approx(48 / 64)
    assert math.isnan(rep["per_patient"]["A"]["two"])
    assert rep["per_patient"]["A"]["mean"] == pytest.approx(48 / 64)  # NaN class skipped
    assert math.isnan(rep["per_patient"]["B"]["one"])
    assert rep["per_patient"]["B"]["two"] == 1.0
    # headline = mean over patients per class (NaNs skipped and counted), then mean over classes
    assert rep["dice"]["one"] == pytest.approx(0.75)
    assert rep["dice"]["two"] == 1.0
    assert rep["dice"]["mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert rep["patient"]["nan"] == {"one": 1, "two": 1, "all_classes": 0}
    assert rep["n_patients"] == 2 and rep["n_images"] == 4
    # per-image: slice dice one = [1, .5, nan, nan]; two = [nan, nan, 1, 1]
    assert rep["image"]["one"] == pytest.approx(0.75)
    assert rep["image"]["nan"]["one"] == 2 and rep["image"]["nan"]["two"] == 2
    # pooled: one -> TP 24 FP 8 FN 8 = 0.75; two -> 1
    assert rep["pooled"]["one"] == pytest.approx(0.75)
    assert rep["pooled"]["two"] == 1.0


def test_report_without_patients_uses_images_and_all_nan_class_stays_nan():
    target = np.stack([square(0, 0), square(0, 0)])
    rep = dice_report(confusion_counts(target, target, 3), 3)
    assert "patient" not in rep
    assert rep["dice"]["1"] == 1.0
    assert math.isnan(rep["dice"]["2"])  # absent everywhere: reported, not 0 or 1
    assert rep["image"]["nan"]["2"] == 2
    assert rep["dice"]["mean"] == 1.0
    text = json.dumps(jsonable(rep), allow_nan=False)  # strict JSON: NaN -> null
    assert json.loads(text)["dice"]["2"] is None


def test_mean_ci_matches_t_interval():
    r = mean_ci([0.8, 0.9, 1.0])
    # t_{0.975, 2} = 4.302652729..., sd = 0.1
    assert r["mean"] == pytest.approx(0.9)
    assert r["ci95"] == pytest.approx(4.302652729749464 * 0.1 / math.sqrt(3))
    one = mean_ci([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["ci95"])
    with_nan = mean_ci([0.5, float("nan"), 0.7])
    assert with_nan["n"] == 2 and with_nan["n_nan"] == 1 and with_nan["mean"] == pytest.approx(0.6)


def _pair(pred_px: int, target_px: int, overlap: int, shape: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """One slice with ``pred_px`` predicted and ``target_px`` true pixels of class 1, ``overlap`` of them shared:
    TP = overlap, FP = pred_px - overlap, FN = target_px - overlap."""
    pred = np.zeros(shape * shape, np.int64)
    target = np.zeros(shape * shape, np.int64)
    target[:target_px] = 1
    start = target_px - overlap  # the predicted run starts inside the true run, ``overlap`` pixels from its end
    pred[start : start + pred_px] = 1
    return pred.reshape(shape, shape), target.reshape(shape, shape)


def test_patient_slice_and_pooled_dice_are_three_different_numbers():
    """Unequal slice counts per patient: the three Dice definitions must each give their own hand-computed value.

    Slices (TP, FP, FN) of class 1, in a patient order that interleaves the patients:
      B: (16, 0, 0) -> 1        A: (8, 8, 8) -> 1/2      B: (4, 0, 0) -> 1
      C: (0, 0, 0) -> NaN       B: (0, 16, 0) -> 0       C: (4, 0, 4) -> 2/3
    per patient (3-D, counts summed): A = 1/2, B = 2·20 / (2·20 + 16) = 5/7, C = 2·4 / (2·4 + 4) = 2/3
    """
    slices = [("B", _pair(16, 16, 16)), ("A", _pair(16, 16, 8)), ("B", _pair(4, 4, 4)),
              ("C", _pair(0, 0, 0)), ("B", _pair(16, 0, 0)), ("C", _pair(4, 8, 4))]
    patients = [p for p, _ in slices]
    pred = np.stack([pt[0] for _, pt in slices])
    target = np.stack([pt[1] for _, pt in slices])
    counts = confusion_counts(pred, target, 2)
    assert counts[:, 1].tolist() == [[16, 0, 0], [8, 8, 8], [4, 0, 0], [0, 0, 0], [0, 16, 0], [4, 0, 4]]

    rep = dice_report(counts, {"0": "bg", "1": "organ"}, patients)
    per_patient = (1 / 2 + 5 / 7 + 2 / 3) / 3  # mean over the 3 patients of their 3-D Dice
    per_slice = (1 + 1 / 2 + 1 + 0 + 2 / 3) / 5  # mean over the 5 slices where Dice is defined
    pooled = 2 * 32 / (2 * 32 + 24 + 12)  # all counts summed: TP 32, FP 24, FN 12
    assert rep["per_patient"]["A"]["organ"] == pytest.approx(1 / 2, rel=1e-12)
    assert rep["per_patient"]["B"]["organ"] == pytest.approx(5 / 7, rel=1e-12)
    assert rep["per_patient"]["C"]["organ"] == pytest.approx(2 / 3, rel=1e-12)
    assert list(rep["per_patient"]) == ["B", "A", "C"]  # order of first appearance
    assert rep["patient"]["organ"] == pytest.approx(per_patient, rel=1e-12)
    assert rep["dice"]["organ"] == pytest.approx(per_patient, rel=1e-12)  # the headline is the patient Dice
    assert rep["image"]["organ"] == pytest.approx(per_slice, rel=1e-12)
    assert rep["pooled"]["organ"] == pytest.approx(pooled, rel=1e-12)
    assert rep["image"]["nan"]["organ"] == 1 and rep["patient"]["nan"]["organ"] == 0
    assert rep["n_patients"] == 3 and rep["patient"]["n"] == 3 and rep["image"]["n"] == 6
    # the example separates the definitions: a report that swapped two of them would fail above
    values = sorted([per_patient, per_slice, pooled])
    assert min(np.diff(values)) > 0.005


def test_mean_ci_contains_the_true_mean_of_a_large_sample():
    x = np.random.default_rng(21).normal(0.8, 0.05, size=2000)  # true mean 0.8
    r = mean_ci(x)
    assert r["low"] < 0.8 < r["high"]
    # 95 % t-interval of a large sample ~ 1.96 sd / sqrt(n): neither degenerate nor loose
    assert r["ci95"] == pytest.approx(1.96 * 0.05 / math.sqrt(2000), rel=0.1)
