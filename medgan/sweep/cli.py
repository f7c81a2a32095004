"""``medgan sweep``: run a worker (``--data … --gan/--gans …``), ``medgan sweep status STUDY`` and
``medgan sweep export STUDY``."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pandas as pd

from medgan.config import ConfigError
from medgan.sweep.status import export_trials, format_status, study_status
from medgan.sweep.study import (
    SWEEP_FEATURES,
    SWEEP_GANS,
    SWEEP_METRICS,
    SWEEP_PRUNERS,
    SweepConfig,
    run_sweep,
)
from medgan.training import METRIC_HOOKS

# Test-only: "name=module:function" registers that function as METRIC_HOOKS[name] in a `medgan sweep` process
# (a subprocess worker cannot be monkeypatched). Never set it for a real sweep: the metric is no longer FID/KID.
TEST_HOOK_ENV = "MEDGAN_SWEEP_TEST_HOOK"


def sweep(*, data, gan, out, trials, kimg, batch=64, seed=0, metric="fid", features="inception", metric_n=0,
          storage="", study="", overrides=(), progress=None, pruner="none", report_kimg=0.0, heartbeat=10,
          grace=60, restrict=()) -> pd.DataFrame:
    """Python twin of ``medgan sweep`` (one GAN)."""
    cfg = SweepConfig(data=str(data), gan=gan, out=str(out), trials=trials, kimg=kimg, batch=batch, seed=seed,
                      storage=storage or "", study=study or "", metric=metric, metric_features=features,
                      metric_n=metric_n, fixed=tuple(overrides), restrict=tuple(restrict), pruner=pruner, report_kimg=report_kimg,
                      heartbeat=heartbeat, grace=grace)
    return run_sweep(cfg, progress=progress)


def gans_plan(gans: str, *, data: str, out: str, study: str = "") -> list[tuple[str, str, str]]:
    """``--gans a,b``: ``[(gan, sweep folder <out>/<gan>, study name <dataset>-<gan>)]``; ``dataset`` is the prepared
    folder's name, or ``--study`` when given (then a prefix)."""
    names = [g.strip() for g in gans.split(",") if g.strip()]
    bad = [g for g in names if g not in SWEEP_GANS]
    if bad or not names or len(set(names)) != len(names):
        raise ConfigError(f"--gans {gans!r}: give distinct names from {list(SWEEP_GANS)}, comma-separated")
    prefix = study or Path(data).resolve().name
    return [(g, str(Path(out) / g), f"{prefix}-{g}") for g in names]


def add_cli(sub) -> None:
    p = sub.add_parser("sweep", help="Optuna study over the Table 1 space (one training run per trial)",
                       description="Sample the paper's Table 1 knobs for one GAN (or --gans), train each trial and "
                                   "score it with FID/KID; rerun to continue the study. Many processes given one "
                                   "--storage share one study. `medgan sweep status STUDY --storage URL` and "
                                   "`medgan sweep export STUDY --storage URL --out FILE` look at a study.")
    p.add_argument("action", nargs="?", default="run", metavar="{status,export}",
                   help="status/export an existing study instead of running a worker")
    p.add_argument("name", nargs="?", default="", metavar="STUDY", help="study name (status/export)")
    p.add_argument("--data", help="prepared dataset folder")
    p.add_argument("--gan", choices=SWEEP_GANS)
    p.add_argument("--gans", help="comma-separated GANs, one study each named <dataset>-<gan> in <out>/<gan>")
    p.add_argument("--out", help="sweep folder (trial-<n>/, trials.csv, sweep.json, study.db); export: the file")
    p.add_argument("--trials", type=int, help="total trials of the study, all workers together (rerun with more "
                                              "to extend)")
    p.add_argument("--kimg", type=float, help="training length of each trial")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (and the sampler's)")
    p.add_argument("--metric", choices=SWEEP_METRICS, default="fid")
    p.add_argument("--features", choices=SWEEP_FEATURES, default="inception",
                   help="feature extractor of the metric (inception-random: labelled random weights)")
    p.add_argument("--metric-n", type=int, default=0, help="samples per metric evaluation (0 = hook default)")
    p.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///<out>/study.db), e.g. "
                                                 "postgresql://user@host:5432/db")
    p.add_argument("--study", default="", help="study name (default medgan-sweep-<gan>; with --gans a prefix)")
    p.add_argument("--pruner", choices=SWEEP_PRUNERS, default="none",
                   help="stop hopeless trials at the metric reports (median: MedianPruner, halving: ASHA)")
    p.add_argument("--report-kimg", type=float, default=0.0,
                   help="report the metric every this many kimg (0 = kimg/4 with a pruner)")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace", type=int, default=60,
                   help="seconds without heartbeat after which a trial's worker counts as dead (trial re-queued)")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KNOB=VALUE",
                   help="config overrides for every trial; a Table 1 knob set here is not sampled")
    p.add_argument("--restrict", action="extend", nargs="+", default=[], metavar="KNOB=V1|V2",
                   help="sample a Table 1 knob from a subset of its values (e.g. 'model.g_filters=16|32' for a "
                        "CPU-sized sweep); default: the paper's space, exact")
    p.add_argument("--progress", action="store_true", help="show each trial's training progress bar")
    p.set_defaults(func=lambda args: _cmd_sweep(args, p))


def _install_test_hook() -> None:
    spec = os.environ.get(TEST_HOOK_ENV, "")
    if spec:
        name, _, path = spec.partition("=")
        module, _, func = path.partition(":")
        METRIC_HOOKS._items[name] = getattr(importlib.import_module(module), func)


def _cmd_sweep(args, parser) -> int:
    if args.action == "status":
        if not args.name:
            parser.error("sweep status needs STUDY (and --storage URL)")
        s = study_status(args.storage, args.name)
        print(json.dumps(s, indent=1, default=str) if args.json else format_status(s))
        return 0
    if args.action == "export":
        if not args.name or not args.out:
            parser.error("sweep export needs STUDY, --storage URL and --out FILE")
        path = export_trials(args.storage, args.name, args.out)
        note = " (pyarrow is not installed: CSV instead of Parquet)" if Path(args.out).suffix != path.suffix else ""
        print(f"wrote {path}{note}")
        return 0
    if args.action != "run" or args.name:
        parser.error(f"unknown sweep action {args.action!r}: status, export, or none to run a worker")
    missing = [f for f in ("data", "out", "trials", "kimg") if getattr(args, f) is None]
    if (args.gan is None) == (args.gans is None):
        missing.append("exactly one of --gan/--gans")
    if missing:
        parser.error("the following arguments are required: " + ", ".join(f if " " in f else f"--{f}" for f in missing))
    _install_test_hook()
    plan = (gans_plan(args.gans, data=args.data, out=args.out, study=args.study) if args.gans
            else [(args.gan, args.out, args.study)])
    rc = 0
    for gan, out, study in plan:
        frame = sweep(data=args.data, gan=gan, out=out, trials=args.trials, kimg=args.kimg, batch=args.batch,
                      seed=args.seed, metric=args.metric, features=args.features, metric_n=args.metric_n,
                      storage=args.storage, study=study, overrides=args.overrides,
                      progress=True if args.progress else False, pruner=args.pruner, report_kimg=args.report_kimg,
                      heartbeat=args.heartbeat, grace=args.grace, restrict=args.restrict)
        rc = max(rc, _print_result(frame, Path(out), args.metric))
    return rc


def _print_result(frame: pd.DataFrame, out: Path, metric: str) -> int:
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 40):
        shown = frame.drop(columns=["reason", "run_dir", "state"]).replace("", "-")  # "" = off (diffaugment)
        print(shown.to_string(index=False))
    summary = json.loads((out / "sweep.json").read_text())
    best = summary["best"]
    if best is None:
        print(f"no trial finished with a finite {metric}; see {out / 'trials.csv'} (reason column)")
        return 1
    print(f"best: trial {best['trial']} {metric} ({summary['features']}) = {best['value']:.6g}  {best['run_dir']}")
    for k, v in best["knobs"].items():
        print(f"  {k} = {v if v != '' else '-'}")
    return 0
