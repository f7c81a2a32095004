"""Simulated raters: answer a deck page from its pixels alone, to show the scoring when no clinician is at hand.

They read the page exactly as a browser shows it (``read_page``), never the key, and write the CSV the
page's "Export CSV" button writes. Their results say nothing about how realistic the images are to a
human: they are labelled *simulated* wherever they are shown.

Rules (``RATER_RULES``; each gets the deck's pixels, a random generator and the reference pixels):
- ``random``: a coin flip per image, confidence 1 (the chance level the binomial test is against);
- ``typicality``: a rater who has seen real scans. ``reference`` holds real images from patients that are
  not in the deck (e.g. the test split, through the deck's window); each deck image gets three features
  (mean grey level, grey-level spread, high-frequency energy = mean absolute Laplacian), z-scored against
  the reference; the half of the deck least typical (largest max |z|) is called synthetic (the rater knows
  the deck is 50/50); confidence grows with the distance from the deck's median.
``flip`` turns a fraction of a rule's answers around at random (a noisier rater of the same kind).
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import ConfigError
from medgan.io import atomic_write_text
from medgan.registry import Registry
from medgan.turing.deck import read_page, to_uint8
from medgan.turing.page import CSV_COLUMNS
from medgan.turing.score import load_key

RATER_RULES: Registry = Registry("simulated rater rule")


@RATER_RULES.register("random")
def random_rule(images: list[np.ndarray], rng: np.random.Generator, reference=None) -> tuple[list[str], list[int]]:
    answers = ["synthetic" if rng.random() < 0.5 else "real" for _ in images]
    return answers, [1] * len(images)


def high_frequency_energy(pixels: np.ndarray) -> float:
    """Mean absolute 4-neighbour Laplacian of an 8-bit image (grey, or the mean of its RGB channels)."""
    x = np.asarray(pixels, np.float32)
    x = x.mean(axis=-1) if x.ndim == 3 else x
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float(np.abs(lap).mean())


def image_features(pixels: np.ndarray) -> np.ndarray:
    """``[mean grey level, grey-level spread, high-frequency energy]`` of one displayed image."""
    x = np.asarray(pixels, np.float32)
    return np.array([x.mean(), x.std(), high_frequency_energy(x)])


@RATER_RULES.register("typicality")
def typicality_rule(images: list[np.ndarray], rng: np.random.Generator, reference=None) -> tuple[list[str], list[int]]:
    if reference is None or len(reference) < 2:
        raise ConfigError("the typicality rater needs reference= real images (at least 2) it has seen before")
    ref = np.stack([image_features(x) for x in reference])
    mu, sd = ref.mean(axis=0), ref.std(axis=0) + 1e-6
    atypical = np.abs((np.stack([image_features(x) for x in images]) - mu) / sd).max(axis=1)
    order = np.argsort(atypical, kind="stable")
    answers = ["real"] * len(images)
    for i in order[len(images) // 2:]:
        answers[i] = "synthetic"
    median = np.median(atypical)
    spread = np.abs(atypical - median) / (np.abs(atypical - median).max() or 1.0)
    return answers, [int(1 + round(4 * s)) for s in spread]


def simulate_rater(page: str | os.PathLike, out_csv: str | os.PathLike, *, rater: str, rule: str = "random",
                   seed: int = 0, flip: float = 0.0, reference: list[np.ndarray] | None = None) -> Path:
    """Answer every image of ``page`` by ``rule`` and write the page's export CSV to ``out_csv``.

    ``reference``: displayed real images the rater has seen before (``reference_pixels``), for ``typicality``.
    """
    if not 0.0 <= flip <= 1.0:
        raise ConfigError(f"flip must be in [0, 1], got {flip}")
    deck_id, items = read_page(page)
    rng = np.random.default_rng(seed)
    answers, confidence = RATER_RULES[rule]([pixels for _, pixels in items], rng, reference)
    flipped = rng.random(len(items)) < flip
    answers = [({"real": "synthetic", "synthetic": "real"}[a] if f else a) for a, f in zip(answers, flipped, strict=True)]
    start = datetime(2000, 1, 1, tzinfo=timezone.utc)  # fixed: a simulated sheet is reproducible byte for byte
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for i, ((item_id, _), a, c) in enumerate(zip(items, answers, confidence, strict=True)):
        stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        writer.writerow([rater, item_id, a, c, stamp, deck_id])
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out_csv, buf.getvalue())


def reference_pixels(real_set, split: str, key: str | os.PathLike | dict | None = None, *, limit: int = 200,
                     seed: int = 0) -> list[np.ndarray]:
    """Up to ``limit`` real images of ``split`` as a deck shows them (the window recorded in the deck's ``key``,
    else the full prepared range): what a simulated rater "has seen before". Pick a split the deck does not
    draw from (the deck's default is train+val, so ``test``)."""
    lo, hi = (load_key(key)["display"]["window"] if key is not None else (-1.0, 1.0))
    real = real_set if isinstance(real_set, PreparedSet) else load_prepared(real_set)
    idx = real.indices(split)
    idx = np.sort(np.random.default_rng(seed).choice(idx, min(limit, len(idx)), replace=False))
    return [to_uint8(np.asarray(real.images[i], np.float32), lo, hi) for i in idx]
