"""The visual Turing test of the paper (§4.3: four experts, 100 images, 50/50 real/synthetic, ~60 % accuracy).

- ``build_deck(real, generated, out_dir)`` (``ensure_deck``: unless that very deck is there already) -> ``out_dir/deck.html`` (one offline page a clinician opens in a
  browser: one image at a time, real/synthetic, confidence 1-5, keyboard shortcuts, answers kept in the
  browser, CSV export) and ``out_dir/answer-key.json`` (kept apart; the page never holds it);
- ``score(key, csv_paths)`` -> per rater and overall accuracy, sensitivity, specificity (positive class:
  synthetic), exact binomial tests against chance, Fleiss' kappa across raters;
- ``simulate_rater`` writes the CSV of a simulated rater (the notebook's stand-in for clinicians);
- ``medgan turing deck|score`` (``add_cli``) are the CLI twins.
"""

from __future__ import annotations

from medgan.turing.commands import add_cli
from medgan.turing.deck import KEY_NAME, PAGE_NAME, TRUTHS, Deck, build_deck, ensure_deck, read_page
from medgan.turing.page import CSV_COLUMNS
from medgan.turing.score import (
    POSITIVE,
    binomial_p,
    confusion,
    fleiss_kappa,
    load_key,
    read_answers,
    results_frame,
    results_text,
    score,
)
from medgan.turing.simulate import RATER_RULES, reference_pixels, simulate_rater

__all__ = [
    "CSV_COLUMNS", "KEY_NAME", "PAGE_NAME", "POSITIVE", "RATER_RULES", "TRUTHS", "Deck", "add_cli", "binomial_p",
    "build_deck", "confusion", "ensure_deck", "fleiss_kappa", "load_key", "read_answers", "read_page", "reference_pixels", "results_frame",
    "results_text", "score", "simulate_rater",
]
