"""Score a visual Turing test: per rater and overall accuracy, sensitivity, specificity, an exact binomial test
against chance, and Fleiss' kappa across raters.

The positive class is **synthetic**: sensitivity = generated images called synthetic / generated images
answered; specificity = real images called real / real images answered. A rater at chance has accuracy
0.5; the paper's four cardiologists averaged 0.60 on 100 images (§4.3).

- Binomial test: ``scipy.stats.binomtest(correct, answered, 0.5)``, two-sided and one-sided "better than
  chance" (``alternative="greater"``), with the exact (Clopper-Pearson) 95 % interval of the accuracy.
  The pooled row adds every rater's answers; they are not independent draws (same images, same raters),
  so its p-value is descriptive; the per-rater tests are the exact ones.
- Fleiss' kappa (Fleiss 1971) on the items every rater answered, categories real/synthetic: agreement
  beyond chance between raters, whatever the truth.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from medgan.errors import AnswerSheetError
from medgan.turing.deck import KEY_FORMAT, TRUTHS

REQUIRED_COLUMNS = ("rater", "item_id", "answer", "confidence", "timestamp")
CONFIDENCES = range(1, 6)
POSITIVE = "synthetic"


@dataclass(frozen=True)
class Answer:
    rater: str
    item_id: str
    answer: str  # "real" | "synthetic"
    confidence: int
    timestamp: str
    where: str  # "file.csv:line" (for error messages)


def load_key(key: str | os.PathLike | dict) -> dict:
    """The answer key (``answer-key.json`` or its dict) with ``truth``: ``{item_id: "real"|"synthetic"}`` added."""
    if isinstance(key, dict):
        data, where = dict(key), "answer key"
    else:
        where = str(key)
        try:
            data = json.loads(Path(key).read_text())
        except OSError as e:
            raise AnswerSheetError(f"{where}: cannot read the answer key ({e.strerror})") from None
        except ValueError as e:
            raise AnswerSheetError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != KEY_FORMAT or not isinstance(data.get("items"), list):
        raise AnswerSheetError(f"{where} is not an answer key written by medgan turing deck")
    truth = {}
    for it in data["items"]:
        if it.get("truth") not in TRUTHS or not isinstance(it.get("item_id"), str):
            raise AnswerSheetError(f"{where}: item {it!r} has no item_id or a truth other than {TRUTHS}")
        truth[it["item_id"]] = it["truth"]
    data["truth"] = truth
    return data


def read_answers(csv_paths: Iterable[str | os.PathLike], key: dict) -> list[Answer]:
    """Every answer of every CSV, checked against ``key`` (a ``load_key`` result).

    One ``AnswerSheetError`` line for: an unreadable or empty file, a missing column, an unknown item id,
    an answer other than real/synthetic, a confidence outside 1-5, a CSV of another deck (its ``deck``
    column), or the same rater answering the same item twice (in one file or across files).
    """
    answers: list[Answer] = []
    seen: dict[tuple[str, str], str] = {}
    for path in csv_paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as e:
            raise AnswerSheetError(f"{path}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError:
            raise AnswerSheetError(f"{path} is not a UTF-8 text file") from None
        rows = csv.DictReader(text.splitlines())
        missing = [c for c in REQUIRED_COLUMNS if c not in (rows.fieldnames or [])]
        if missing:
            raise AnswerSheetError(f"{path}: missing column(s) {', '.join(missing)} "
                                   f"(expected a header {','.join(REQUIRED_COLUMNS)})")
        n_before = len(answers)
        for line, row in enumerate(rows, start=2):
            where = f"{path}:{line}"
            if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise AnswerSheetError(f"{where}: expected {len(rows.fieldnames)} fields, got another number")
            if row.get("deck") and row["deck"] != key.get("deck"):
                raise AnswerSheetError(f"{where}: answers for deck {row['deck']!r}, but the key is for deck {key.get('deck')!r}")
            rater, item_id, value = row["rater"].strip(), row["item_id"].strip(), row["answer"].strip().lower()
            if not rater:
                raise AnswerSheetError(f"{where}: empty rater name")
            if item_id not in key["truth"]:
                raise AnswerSheetError(f"{where}: unknown item id {item_id!r} (not in the answer key)")
            if value not in TRUTHS:
                raise AnswerSheetError(f"{where}: answer {row['answer']!r} is not one of {TRUTHS}")
            try:
                confidence = int(row["confidence"])
            except ValueError:
                confidence = 0
            if confidence not in CONFIDENCES:
                raise AnswerSheetError(f"{where}: confidence {row['confidence']!r} is not an integer from 1 to 5")
            if (rater, item_id) in seen:
                raise AnswerSheetError(f"{where}: rater {rater!r} answered item {item_id!r} twice "
                                       f"(first at {seen[(rater, item_id)]})")
            seen[(rater, item_id)] = where
            answers.append(Answer(rater, item_id, value, confidence, row["timestamp"].strip(), where))
        if len(answers) == n_before:
            raise AnswerSheetError(f"{path} holds no answers")
    return answers


def binomial_p(correct: int, n: int) -> dict[str, float]:
    """Exact binomial test of ``correct`` of ``n`` against p = 0.5: two-sided and "better than chance"."""
    two = binomtest(correct, n, 0.5, alternative="two-sided")
    ci = two.proportion_ci(confidence_level=0.95, method="exact")
    return {"p_two_sided": float(two.pvalue),
            "p_better_than_chance": float(binomtest(correct, n, 0.5, alternative="greater").pvalue),
            "accuracy_ci95": [float(ci.low), float(ci.high)]}


def confusion(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Scores of ``(truth, answer)`` pairs, positive class synthetic (NaN where a class was never shown)."""
    tp = sum(t == POSITIVE and a == POSITIVE for t, a in pairs)
    fn = sum(t == POSITIVE and a != POSITIVE for t, a in pairs)
    tn = sum(t != POSITIVE and a != POSITIVE for t, a in pairs)
    fp = sum(t != POSITIVE and a == POSITIVE for t, a in pairs)
    n = tp + fn + tn + fp
    ratio = lambda a, b: a / b if b else math.nan  # noqa: E731
    out = {"n": n, "correct": tp + tn, "accuracy": ratio(tp + tn, n), "sensitivity": ratio(tp, tp + fn),
           "specificity": ratio(tn, tn + fp), "tp": tp, "fn": fn, "tn": tn, "fp": fp}
    out.update(binomial_p(tp + tn, n) if n else {"p_two_sided": math.nan, "p_better_than_chance": math.nan,
                                                  "accuracy_ci95": [math.nan, math.nan]})
    return out


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of ``counts [items, categories]`` (how many raters put each item in each category).

    Every item needs the same number of raters m >= 2. P_i = (sum_j n_ij^2 - m) / (m (m - 1)),
    p_j = sum_i n_ij / (N m), kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2); NaN when every rating
    falls in one category (chance agreement 1: kappa undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or len(counts) == 0:
        raise ValueError(f"counts must be [items, categories] with at least one item, got shape {counts.shape}")
    m = counts.sum(axis=1)
    if not np.all(m == m[0]) or m[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    m = m[0]
    p_item = (np.square(counts).sum(axis=1) - m) / (m * (m - 1))
    p_cat = counts.sum(axis=0) / (len(counts) * m)
    p_bar, p_e = p_item.mean(), np.square(p_cat).sum()
    return math.nan if np.isclose(p_e, 1.0) else float((p_bar - p_e) / (1.0 - p_e))


def score(key: str | os.PathLike | dict, csv_paths: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """Score raters' CSVs (exported from the deck page) against the answer key.

    Returns ``{"deck", "n_items", "positive_class": "synthetic", "raters": {name: scores},
    "overall": {pooled scores + "mean_accuracy" over raters}, "fleiss_kappa": {"kappa", "n_items", "n_raters"}}``;
    a rater's ``scores`` are ``confusion``'s plus ``missing`` (items left unanswered) and ``mean_confidence``.
    """
    key = load_key(key)
    answers = read_answers(list(csv_paths), key)
    truth = key["truth"]
    by_rater: dict[str, list[Answer]] = {}
    for a in answers:
        by_rater.setdefault(a.rater, []).append(a)
    raters = {}
    for name in sorted(by_rater):
        rows = by_rater[name]
        r = confusion([(truth[a.item_id], a.answer) for a in rows])
        r["missing"] = len(truth) - len(rows)
        r["mean_confidence"] = float(np.mean([a.confidence for a in rows]))
        raters[name] = r
    overall = confusion([(truth[a.item_id], a.answer) for a in answers])
    overall["mean_accuracy"] = float(np.mean([r["accuracy"] for r in raters.values()]))
    overall["n_raters"] = len(raters)
    answered = [{a.item_id for a in rows} for rows in by_rater.values()]
    common = [i for i in truth if all(i in ids for ids in answered)]
    kappa: dict[str, Any] = {"kappa": math.nan, "n_items": len(common), "n_raters": len(raters)}
    if len(raters) >= 2 and common:
        answer_of = {(a.rater, a.item_id): a.answer for a in answers}
        counts = np.array([[sum(answer_of[(r, i)] == c for r in raters) for c in TRUTHS] for i in common])
        kappa["kappa"] = fleiss_kappa(counts)
    return {"deck": key.get("deck"), "n_items": len(truth), "positive_class": POSITIVE,
            "raters": raters, "overall": overall, "fleiss_kappa": kappa}


def results_frame(results: dict, digits: int = 3):
    """One row per rater and a pooled row: the table a notebook shows (rounded; NaN stays NaN)."""
    import pandas as pd

    def row(r: dict) -> dict:
        lo, hi = r["accuracy_ci95"]
        return {"answered": r["n"], "correct": r["correct"], "accuracy": r["accuracy"],
                "accuracy 95% CI": "n/a" if math.isnan(lo) else f"[{lo:.{digits}f}, {hi:.{digits}f}]",
                "sensitivity": r["sensitivity"], "specificity": r["specificity"],
                "p (two-sided)": r["p_two_sided"], "p (better than chance)": r["p_better_than_chance"]}

    rows = {name: row(r) for name, r in results["raters"].items()}
    rows["all raters (pooled)"] = row(results["overall"])
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "rater"
    for col in ("accuracy", "sensitivity", "specificity"):
        frame[col] = frame[col].astype(float).round(digits)
    for col in ("p (two-sided)", "p (better than chance)"):
        frame[col] = [float(f"{p:.3g}") for p in frame[col]]
    return frame


def results_text(results: dict, digits: int = 3) -> str:
    """The study's numbers as stable, path-free text (what nbval compares)."""
    o, k = results["overall"], results["fleiss_kappa"]
    kappa = "n/a" if k["kappa"] is None or math.isnan(k["kappa"]) else f"{k['kappa']:.{digits}f}"
    lines = [f"{results['n_items']} images, {o['n_raters']} rater(s), positive class: {results['positive_class']}"]
    for name, r in results["raters"].items():
        lines.append(f"{name}: accuracy {r['accuracy']:.{digits}f} ({r['correct']}/{r['n']}), sensitivity "
                     f"{r['sensitivity']:.{digits}f}, specificity {r['specificity']:.{digits}f}, "
                     f"p {r['p_two_sided']:.3g} (two-sided), {r['p_better_than_chance']:.3g} (better than chance)")
    lines.append(f"pooled: accuracy {o['accuracy']:.{digits}f} ({o['correct']}/{o['n']}), mean accuracy over raters "
                 f"{o['mean_accuracy']:.{digits}f}, p {o['p_two_sided']:.3g} (two-sided)")
    lines.append(f"Fleiss' kappa: {kappa} on {k['n_items']} image(s) answered by all {k['n_raters']} rater(s)")
    return "\n".join(lines)
