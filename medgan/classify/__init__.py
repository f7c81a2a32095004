"""Synthetic data for classification: a small CNN classifies a per-slice label (ACDC: the pathology group),
trained on real, synthetic or mixed sets and tested on real patients — the classification accuracy score
(CAS; Ravuri & Vinyals 2019) with Table 2's seeds and confidence intervals.

    run_dir = train_classifier([real_dir, syn_dir], val_dir=real_dir, cfg=ClassifierConfig(), out_dir="runs/cls")
    classify([syn_dir], real_dir, seeds=3)      # N seeds -> accuracy per slice / per patient, mean ± 95 % CI
    medgan classify --train SYN[,REAL] --test REAL --out DIR --seeds 3

Modules: ``model`` (the CNN, loading), ``evaluate`` (labels, prediction, accuracy and confusion per slice and
per patient), ``train`` (``ClassifierConfig``, ``train_classifier``), ``protocol`` (``classify`` over seeds),
``commands`` (``medgan classify``).
"""

from medgan.classify.evaluate import accuracy_report, class_indices, confusion, patient_votes, predict_proba
from medgan.classify.model import CHECKPOINT, SliceCNN, load_classifier
from medgan.classify.protocol import classify, format_table
from medgan.classify.train import ACDC_GROUPS, ClassifierConfig, class_weights, train_classifier

__all__ = [
    "ACDC_GROUPS",
    "CHECKPOINT",
    "ClassifierConfig",
    "SliceCNN",
    "accuracy_report",
    "class_indices",
    "class_weights",
    "classify",
    "confusion",
    "format_table",
    "load_classifier",
    "patient_votes",
    "predict_proba",
    "train_classifier",
]
