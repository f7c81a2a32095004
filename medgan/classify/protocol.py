"""The classification accuracy score (CAS; Ravuri & Vinyals 2019) protocol: N seeds of classifier training on a
training set (real, synthetic, or both), accuracy on the real test patients, mean ± 95 % CI over seeds.

    result = classify([synthetic_dir], real_dir, seeds=3)     # one CAS row
    print(format_table(result))

The structure is Table 2's U-Net protocol (``medgan.segmentation.protocol``): the same leak checks, the
same real-only val/test rule, per-seed run folders and the same Student-t interval (``mean_ci``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgan.classify.evaluate import VOTES, accuracy_report, labelled_split, predict_proba
from medgan.classify.model import load_classifier
from medgan.classify.train import ClassifierConfig, train_classifier
from medgan.data.prepared import check_compatible, load_prepared
from medgan.errors import OutputExistsError, UserError
from medgan.io import write_json
from medgan.runtime import amp_dtype, code_version, progress_bar, resolve_device
from medgan.segmentation.dice import mean_ci
from medgan.segmentation.train import _training_kind, check_no_leak, require_real

ACCURACY_KEYS = ("slice", *VOTES)
CAS_DEFINITION = ("accuracy on the real test split: per slice (argmax), per patient by majority vote and by "
                  "mean-probability vote; mean ± 95% t-interval over seeds")


def classify(
    train_dirs: Sequence[str | os.PathLike],
    test_dir: str | os.PathLike,
    *,
    seeds: int = 3,
    cfg: ClassifierConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    val_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``seeds`` classifiers on ``train_dirs`` and test each on the real ``test_dir``'s test split.

    ``val_dir`` (default ``test_dir``) gives the real ``val`` split for early stopping; seed ``s`` uses
    ``cfg.seed + s`` and the run folder ``out_dir/seed-<s>`` (a temporary folder when ``out_dir`` is None).
    Returns a JSON-ready dict (NaN as NaN): ``training_set`` (real / generated / real+generated), the sets,
    per seed the test report (``medgan.classify.evaluate.accuracy_report``), ``accuracy`` = per key
    (``slice``, ``majority``, ``mean_prob``) mean over seeds ± half-width of the 95 % t-interval (``ci95``)
    with the per-seed values, and ``confusion`` = per key the confusion matrix summed over seeds.
    """
    cfg = cfg or ClassifierConfig()
    if seeds < 1:
        raise UserError(f"seeds must be >= 1, got {seeds}")
    if not train_dirs:
        raise UserError("no training set given (need at least one --train DIR)")
    test_set = load_prepared(test_dir)
    val_set = load_prepared(val_dir) if val_dir is not None else test_set
    require_real(test_set, "test")
    require_real(val_set, "validation")
    train_sets = [load_prepared(d) for d in train_dirs]
    for ps in [*train_sets, val_set]:
        check_compatible(test_set, ps)
    check_no_leak(train_sets, [(test_set, "test"), (val_set, "val")])
    classes = list(cfg.classes)
    x_test, m_test, y_test, p_test = labelled_split(test_set, "test", cfg.label_key, classes)
    device = resolve_device(cfg.device)

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="medgan-classify-")
        root = Path(tmp.name)
    else:
        root = Path(out_dir)
        if root.exists() and any(root.iterdir()):
            raise OutputExistsError(f"output folder {root} already exists and is not empty (choose a new --out)")
    per_seed = []
    try:
        for s in progress_bar(range(seeds), progress=progress, desc="classify seeds", unit="seed"):
            cfg_s = dataclasses.replace(cfg, seed=cfg.seed + s)
            run_dir = train_classifier([ps.root for ps in train_sets], val_set.root, cfg_s, root / f"seed-{s}",
                                       progress=progress)
            status = json.loads((run_dir / "status.json").read_text())
            model = load_classifier(run_dir, device=device)
            probs = predict_proba(model, x_test, m_test, inputs=cfg.inputs, num_labels=test_set.num_labels,
                                  batch=cfg.eval_batch, device=device, amp=amp_dtype(cfg.amp, device))
            per_seed.append({
                "seed": cfg_s.seed,
                "run_dir": str(run_dir) if tmp is None else None,
                "best_epoch": status["best_epoch"],
                "epochs": status["epochs"],
                "best_val_nll": status["best_val_nll"],
                "best_val_accuracy": status["best_val_accuracy"],
                "train_seconds": status["seconds"],
                "n_train_per_class": json.loads((run_dir / "config.json").read_text())["data"]["n_train_per_class"],
                "test": accuracy_report(probs, y_test, p_test, classes, seed=cfg_s.seed),
            })
    finally:
        if tmp is not None:
            tmp.cleanup()

    accuracy = {key: {**mean_ci([r["test"]["accuracy"][key] for r in per_seed]),
                      "values": [r["test"]["accuracy"][key] for r in per_seed]} for key in ACCURACY_KEYS}
    confusion = {key: np.sum([r["test"][key]["confusion"] for r in per_seed], axis=0).tolist() for key in ACCURACY_KEYS}
    test_groups = np.unique(y_test)
    result = {
        "kind": "classify",
        "code_version": code_version(),
        "training_set": _training_kind([ps.source for ps in train_sets], False),
        "train_dirs": [str(ps.root) for ps in train_sets],
        "train_sources": [ps.source for ps in train_sets],
        "train_names": [ps.name for ps in train_sets],
        "train_run_ids": [ps.meta.get("run_id") for ps in train_sets],
        "train_content_sha256": [ps.content_sha256 for ps in train_sets],  # what a cached result is checked against
        "test_content_sha256": test_set.content_sha256,
        "test_dir": str(test_set.root),
        "val_dir": str(val_set.root),
        "dataset": test_set.name,
        "classes": classes,
        "test_classes_present": [classes[i] for i in test_groups],
        "chance_accuracy": 1.0 / len(test_groups),  # a classifier that ignores the image, on the classes present
        "n_test_slices": int(len(y_test)),
        "n_test_patients": int(len(np.unique(p_test))),
        "seeds": per_seed,
        "n_seeds": seeds,
        "accuracy": accuracy,
        "confusion": confusion,
        "cas": accuracy["mean_prob"]["mean"],
        "cas_definition": CAS_DEFINITION,
        "config": cfg.to_dict(),
        "device": str(device),
        "out_dir": str(root) if tmp is None else None,
    }
    if tmp is None:
        write_json(root / "classify.json", result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A readable summary of ``classify``'s result: per-seed accuracies, mean ± CI, summed confusion matrix."""
    def fmt(v: float | None) -> str:
        return " nan " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    classes = result["classes"]
    lines = [
        f"classifier accuracy on {result['test_dir']} (test split, {result['n_test_slices']} slices, "
        f"{result['n_test_patients']} patients; classes present {result['test_classes_present']})",
        f"training set: {result['training_set']}  (" + ", ".join(
            f"{d} [{s}]" for d, s in zip(result["train_dirs"], result["train_sources"], strict=True)) + ")",
        "",
        f"{'':>10} " + " ".join(f"{k:>15}" for k in ACCURACY_KEYS),
    ]
    for r in result["seeds"]:
        row = " ".join(f"{fmt(r['test']['accuracy'][k]):>15}" for k in ACCURACY_KEYS)
        lines.append(f"{'seed ' + str(r['seed']):>10} {row}   (best epoch {r['best_epoch']}/{r['epochs']}, "
                     f"{r['train_seconds']:.0f} s)")
    ci = " ".join(f"{fmt(result['accuracy'][k]['mean']) + ' ± ' + fmt(result['accuracy'][k]['ci95']).strip():>15}"
                  for k in ACCURACY_KEYS)
    lines += [f"{'mean±CI95':>10} {ci}", "", "confusion (per slice, summed over seeds; rows = true, columns = predicted)",
              f"{'':>6} " + " ".join(f"{c:>6}" for c in classes)]
    for c, row in zip(classes, result["confusion"]["slice"], strict=True):
        lines.append(f"{c:>6} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
