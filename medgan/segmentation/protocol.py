"""The Table 2 protocol: N seeds of U-Net training on a training set, Dice on the real test split, mean ± 95 % CI.

    result = segment([gen_dir], real_dir, seeds=3)     # one Table 2 row
    print(format_table(result))
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

from medgan.data.prepared import check_compatible, load_prepared
from medgan.errors import OutputExistsError, UserError
from medgan.io import write_json
from medgan.runtime import code_version, progress_bar, resolve_device
from medgan.segmentation.dice import foreground_labels, mean_ci
from medgan.segmentation.evaluate import evaluate_unet, split_arrays
from medgan.segmentation.model import load_unet
from medgan.segmentation.train import UNetConfig, _training_kind, check_no_leak, require_real, train_unet

DICE_DEFINITION = ("per-patient 3-D Dice (TP/FP/FN summed over the patient's test slices), NaN-mean over "
                   "patients per class, 'mean' = mean over foreground classes; mean ± 95% t-interval over seeds")


def segment(
    train_dirs: Sequence[str | os.PathLike],
    test_dir: str | os.PathLike,
    *,
    seeds: int = 3,
    augment: bool = False,
    cfg: UNetConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    val_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``seeds`` U-Nets on ``train_dirs`` and test each on the real ``test_dir`` (Table 2's Dice column).

    ``val_dir`` (default: ``test_dir``) gives the real ``val`` split for early stopping; seed ``s`` uses
    ``cfg.seed + s`` and the run folder ``out_dir/seed-<s>`` (a temporary folder when ``out_dir`` is
    None). Returns a JSON-ready dict (NaN as NaN; ``medgan.io.jsonable`` for files): ``training_set``
    (real, real+aug, generated, real+generated), the sets and their sources, slice counts, ``labels``,
    ``classes``, ``config``, per seed the test report, and ``dice`` = per class and ``mean``:
    mean over seeds ± half-width of the 95 % t-interval (``ci95``), with the per-seed values.
    """
    cfg = cfg or UNetConfig()
    if augment:
        cfg = dataclasses.replace(cfg, augment=True)
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
    n_test = len(split_arrays(test_set, "test")[0])
    n_val = len(split_arrays(val_set, "val")[0])
    n_train = [len(split_arrays(ps, "train")[0]) for ps in train_sets]
    classes = [test_set.labels[str(c)] for c in foreground_labels(test_set.labels)]
    device = resolve_device(cfg.device)

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="medgan-segment-")
        root = Path(tmp.name)
    else:
        root = Path(out_dir)
        if root.exists() and any(root.iterdir()):
            raise OutputExistsError(f"output folder {root} already exists and is not empty (choose a new --out)")
    per_seed = []
    try:
        for s in progress_bar(range(seeds), progress=progress, desc="segment seeds", unit="seed"):
            cfg_s = dataclasses.replace(cfg, seed=cfg.seed + s)
            run_dir = train_unet([ps.root for ps in train_sets], val_set.root, cfg_s, root / f"seed-{s}", progress=progress)
            status = json.loads((run_dir / "status.json").read_text())
            model = load_unet(run_dir, device=device)
            test = evaluate_unet(model, test_set.root, "test", batch=cfg.eval_batch, amp=cfg.amp)
            per_seed.append({
                "seed": cfg_s.seed,
                "run_dir": str(run_dir) if tmp is None else None,
                "best_epoch": status["best_epoch"],
                "epochs": status["epochs"],
                "best_val_dice": status["best_val_dice"],
                "train_seconds": status["seconds"],
                "test": test,
            })
    finally:
        if tmp is not None:
            tmp.cleanup()

    dice = {c: {**mean_ci([r["test"]["dice"][c] for r in per_seed]), "values": [r["test"]["dice"][c] for r in per_seed]}
            for c in classes + ["mean"]}
    result = {
        "kind": "segment",
        "code_version": code_version(),  # medgan.experiments reuses a result only from the same code
        "training_set": _training_kind([ps.source for ps in train_sets], cfg.augment),
        "train_dirs": [str(ps.root) for ps in train_sets],
        "train_sources": [ps.source for ps in train_sets],
        "train_names": [ps.name for ps in train_sets],
        "train_run_ids": [ps.meta.get("run_id") for ps in train_sets],
        "test_dir": str(test_set.root),
        "val_dir": str(val_set.root),
        "dataset": test_set.name,
        "n_train_slices": int(sum(n_train)),
        "n_train_slices_per_set": n_train,
        "n_val_slices": n_val,
        "n_test_slices": n_test,
        "n_test_patients": len(test_set.meta["splits"]["test"]),
        "channels": test_set.channels,
        "image_size": test_set.image_size,
        "labels": test_set.labels,
        "classes": classes,
        "seeds": per_seed,
        "n_seeds": seeds,
        "dice": dice,
        "dice_mean": dice["mean"]["mean"],
        "dice_definition": DICE_DEFINITION,
        "config": cfg.to_dict(),
        "device": str(device),
        "out_dir": str(root) if tmp is None else None,
    }
    if tmp is None:
        write_json(root / "segment.json", result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A readable summary of ``segment``'s result."""
    def fmt(v: float | None) -> str:
        return "  nan " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    cols = result["classes"] + ["mean"]
    lines = [
        f"U-Net Dice on {result['test_dir']} (test split, {result['n_test_slices']} slices, "
        f"{result['n_test_patients']} patients)",
        f"training set: {result['training_set']}  ({result['n_train_slices']} slices from "
        + ", ".join(f"{d} [{s}]" for d, s in zip(result["train_dirs"], result["train_sources"], strict=True)) + ")",
        "",
        f"{'':>10} " + " ".join(f"{c:>15}" for c in cols),
    ]
    for r in result["seeds"]:
        nan = r["test"].get("patient", r["test"]["image"])["nan"]
        row = " ".join(f"{fmt(r['test']['dice'][c]):>15}" for c in cols)
        flagged = any(v for k, v in nan.items() if k != "all_classes")
        lines.append(f"{'seed ' + str(r['seed']):>10} {row}   (best epoch {r['best_epoch']}/{r['epochs']}, "
                     f"{r['train_seconds']:.0f} s" + (f", NaN {nan}" if flagged else "") + ")")
    ci = " ".join(f"{fmt(result['dice'][c]['mean']) + ' ± ' + fmt(result['dice'][c]['ci95']).strip():>15}" for c in cols)
    lines.append(f"{'mean±CI95':>10} {ci}")
    return "\n".join(lines)
