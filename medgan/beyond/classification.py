"""Synthetic data for classification (notebook 08): the classification accuracy score (CAS) of a labelled
synthetic set, next to the same classifier trained on the real set and on both.

CAS (Ravuri & Vinyals 2019): train a classifier on generated, labelled samples and measure its accuracy on
real test data. Here the class is the ACDC pathology group, the synthetic set comes from the group-conditional
GAN (``medgan.beyond.conditional.conditional_set``; any prepared set with a ``group`` array will do) and the
test patients are the real set's test split — patients the GAN never saw. Three rows (``medgan.classify.classify``,
seeds and 95 % t-intervals as Table 2): real, synthetic, real + synthetic.

Sizes (``DEMO_CONFIGS``): ``quick`` reads the conditional demo's 32² phantom set, a 3-block, 8-channel CNN on 2×-pooled
inputs for at most 10 epochs and 2 seeds per row (three rows of ~10 s of CPU each once the synthetic set exists);
``paper`` the real 128² set, the default ``ClassifierConfig`` and 3 seeds. Results are reused when current.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medgan.beyond.conditional import conditional_set
from medgan.classify import ClassifierConfig, classify
from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import ConfigError, UserError
from medgan.experiments import expected_source, get_profile, move_aside
from medgan.io import jsonable
from medgan.runtime import code_version

ROWS = ("real", "synthetic", "real+synthetic")
DEMO_CONFIGS = {
    "quick": (ClassifierConfig(depth=3, width=8, pool=2, max_epochs=10, patience=4, batch=32), 2),
    "paper": (ClassifierConfig(), 3),
}


def _config(profile: str) -> tuple[ClassifierConfig, int]:
    get_profile(profile)
    if profile not in DEMO_CONFIGS:
        raise ConfigError(f"the classification demo has no config for profile {profile!r} (known: {sorted(DEMO_CONFIGS)})")
    return DEMO_CONFIGS[profile]


def real_set_of(synthetic: PreparedSet) -> PreparedSet:
    """The real prepared set a generated set's GAN learnt from (``dataset.json``'s ``real_dataset.root``)."""
    root = (synthetic.meta.get("real_dataset") or {}).get("root")
    if not root or not (Path(root) / "dataset.json").is_file():
        raise UserError(f"{synthetic.root} does not record an existing real set it was generated from "
                        f"(real_dataset.root = {root!r}): pass real=")
    return load_prepared(root)


def staleness(out_dir: Path, train: list[PreparedSet], test: PreparedSet, cfg: ClassifierConfig, seeds: int) -> str | None:
    """Why ``out_dir/classify.json`` may not stand for this row now (None: reuse it)."""
    try:
        old = json.loads((out_dir / "classify.json").read_text())
    except (OSError, ValueError):
        return "absent"
    if old.get("code_version") != code_version():
        return f"code version {old.get('code_version')} != {code_version()}"
    if old.get("n_seeds") != seeds or old.get("config") != jsonable(cfg.to_dict()):
        return "another classifier config or seed count"
    if old.get("train_content_sha256") != [ps.content_sha256 for ps in train] or \
            old.get("test_content_sha256") != test.content_sha256:
        return "other training or test sets"
    return None


def cas_row(name: str, train: list[PreparedSet], test: PreparedSet, out_dir: Path, cfg: ClassifierConfig, seeds: int,
            progress: bool | None) -> dict[str, Any]:
    """``classify(train, test)`` into ``out_dir`` unless a current result is there (a stale one is moved aside)."""
    reason = staleness(out_dir, train, test, cfg, seeds)
    if reason is None:
        return json.loads((out_dir / "classify.json").read_text())
    if out_dir.exists():
        dest = move_aside(out_dir, "stale")
        if reason != "absent":
            print(f"{name}: not reused ({reason}); kept as {dest.name}")
    return classify([ps.root for ps in train], test.root, seeds=seeds, cfg=cfg, out_dir=out_dir, progress=progress)


def demo(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
         synthetic: str | os.PathLike | None = None, real: str | os.PathLike | None = None,
         cfg: ClassifierConfig | None = None, seeds: int | None = None, progress: bool | None = False) -> dict:
    """The CAS table: a classifier of the pathology group trained on real, synthetic and real + synthetic slices,
    accuracy on the real test patients (mean ± 95 % CI over seeds).

    ``synthetic``: a labelled generated set (``group`` array); None = ``conditional_set(profile, ...)`` (labels in
    the training set's proportions). ``real``: the real set; None = the one the synthetic set's GAN learnt from.
    Returns ``{"profile", "synthetic", "real", "source", "chance_accuracy", "classes_present", "table": [row,...],
    "results": {row: classify result}}``; a row holds ``training set``, the slice / majority / mean-probability
    accuracies (mean, ci95, per-seed values) and the summed confusion matrices.
    """
    default_cfg, default_seeds = _config(profile)
    cfg = cfg or default_cfg
    seeds = seeds or default_seeds
    if synthetic is None:
        synthetic = conditional_set(profile, data_root=data_root, runs_root=runs_root, seed=seed, progress=progress)
    syn = load_prepared(synthetic)
    if syn.source != "generated":
        raise UserError(f"synthetic={syn.root} is a {syn.source} set, not a generated one")
    real_set = load_prepared(real) if real is not None else real_set_of(syn)
    if real_set.source != expected_source(profile):
        raise UserError(f"{real_set.root} is a {real_set.source} set; the {profile} profile expects {expected_source(profile)}")
    out_root = Path(runs_root) / f"classify-{real_set.root.name}-{syn.root.name}-{profile}"
    trains = {"real": [real_set], "synthetic": [syn], "real+synthetic": [real_set, syn]}
    results = {name: cas_row(name, trains[name], real_set, out_root / name.replace("+", "-plus-"), cfg, seeds, progress)
               for name in ROWS}
    table = []
    for name, r in results.items():
        row = {"training set": name, "n_train_slices": int(sum(r["seeds"][0]["n_train_per_class"].values()))}
        for key in ("slice", "majority", "mean_prob"):
            a = r["accuracy"][key]
            row[key] = {"mean": a["mean"], "ci95": a["ci95"], "values": a["values"]}
        row["confusion"] = r["confusion"]
        table.append(row)
    any_result = results["real"]
    return {"profile": profile, "synthetic": str(syn.root), "real": str(real_set.root), "source": real_set.source,
            "classes": any_result["classes"], "classes_present": any_result["test_classes_present"],
            "chance_accuracy": any_result["chance_accuracy"], "n_test_patients": any_result["n_test_patients"],
            "n_test_slices": any_result["n_test_slices"], "seeds": seeds, "config": cfg.to_dict(),
            "train_seconds": {n: sum(s["train_seconds"] for s in r["seeds"]) for n, r in results.items()},
            "table": table, "results": results}


def cas_frame(result: dict, digits: int = 3):
    """The CAS table as a DataFrame: one row per training set, "mean ± ci95" per accuracy (no paths, no timings)."""
    import pandas as pd

    def fmt(a: dict) -> str:
        mean, ci = a["mean"], a["ci95"]
        if mean is None or not math.isfinite(mean):
            return "n/a"
        return f"{mean:.{digits}f}" if ci is None or not math.isfinite(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"

    rows = [{"training set": r["training set"], "train slices": r["n_train_slices"],
             "accuracy per slice": fmt(r["slice"]), "per patient (majority)": fmt(r["majority"]),
             "per patient (mean prob.)": fmt(r["mean_prob"])} for r in result["table"]]
    return pd.DataFrame(rows).set_index("training set")


def plot_demo(result: dict):
    """Accuracy per training set (bars = mean over seeds, error bars = 95 % CI, dotted line = chance) and the
    per-slice confusion matrix of each row (summed over seeds); returns the Figure."""
    import matplotlib.pyplot as plt

    rows = result["table"]
    fig, axes = plt.subplots(1, 1 + len(rows), figsize=(4.2 * (1 + len(rows)), 3.8),
                             gridspec_kw={"width_ratios": [1.4] + [1] * len(rows)})
    ax = axes[0]
    keys = (("slice", "per slice"), ("majority", "patient, majority"), ("mean_prob", "patient, mean prob."))
    x = np.arange(len(rows))
    for j, (key, label) in enumerate(keys):
        means = [r[key]["mean"] for r in rows]
        cis = [0.0 if r[key]["ci95"] is None or not math.isfinite(r[key]["ci95"]) else r[key]["ci95"] for r in rows]
        ax.bar(x + 0.27 * (j - 1), means, 0.27, yerr=cis, capsize=3, label=label)
    ax.axhline(result["chance_accuracy"], ls=":", color="grey", label="chance")
    ax.set_xticks(x, [r["training set"] for r in rows])
    ax.set(ylim=(0, 1.05), ylabel="accuracy on real test patients", title=f"CAS ({result['seeds']} seeds, 95% CI)")
    ax.legend(fontsize=7)
    classes = result["classes"]
    for ax, r in zip(axes[1:], rows, strict=True):
        cm = np.asarray(r["confusion"]["slice"], float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for k in range(len(classes)):
                if cm[i, k]:
                    ax.text(k, i, int(cm[i, k]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, k] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=f"trained on {r['training set']}")
    src = "PHANTOM data (procedural, not the real dataset)" if result.get("source") == "phantom" else "real data"
    fig.suptitle(f"Pathology-group classifier, tested on real test patients — {src}", fontsize=10)
    fig.tight_layout()
    return fig
