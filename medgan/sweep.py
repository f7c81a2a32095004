"""Optuna study over the paper's Table 1 space: ``run_sweep(cfg) -> DataFrame`` and ``medgan sweep``.

Each trial samples every Table 1 knob that applies to ``--gan`` (``search_space``) with
``trial.suggest_categorical``, trains one run with ``run_training`` into ``<out>/trial-<n>`` with the
chosen metric hook evaluated once at the end, and returns that metric (lower is better).

Bad trials never stop the study. A run that diverges (``status.json`` "diverged"), raises (a knob
combination the code refuses, missing VGG weights, ...), or ends with a non-finite metric is recorded with
Optuna state FAIL (the objective returns NaN, which Optuna documents as a failed trial), so TPE samples
only from trials that produced a number and ``best_trial`` is never a broken run; the row keeps
``status`` (finished / diverged / failed) and ``reason`` so the failures are plotted, not lost.

Resuming: the study lives in ``storage`` (default ``sqlite:///<out>/study.db``); running the same sweep
again continues it until ``trials`` trials have ended (complete or failed). Trials left RUNNING by a killed
process are not counted. Every trial uses the same training ``seed``, so trials differ by their knobs only.

Outputs: ``<out>/trials.csv`` (one row per ended trial) and ``<out>/sweep.json`` (the sweep config,
counts per status, the best trial). ``metric_features="inception-random"`` (random-weight Inception, for
machines without the weights) is allowed only when asked for, and then its name is in every row and in
``sweep.json`` so the numbers are never mistaken for a real FID/KID.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medgan.config import TABLE1, ConfigError, TrainConfig, _resolve_key, apply_overrides
from medgan.data.prepared import load_prepared
from medgan.io import atomic_write_text, jsonable, read_jsonl, write_json
from medgan.training import make_config, run_status, run_training

try:
    from optuna.trial import TrialState

    _ENDED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
except ImportError:  # optuna is needed only to run a sweep
    _ENDED = ()

SWEEP_GANS = ("dcgan", "lsgan", "wgan", "wgan-gp", "hinge")
SWEEP_METRICS = ("fid", "kid")
SWEEP_FEATURES = ("inception", "inception-random")
# Table 1 knobs that only some losses admit (medgan.losses.GANLoss.validate raises ConfigError otherwise).
ONLY_FOR = {
    "loss.clip": ("wgan",),
    "loss.gp_weight": ("wgan-gp",),
    "loss.label_smoothing": ("dcgan", "lsgan"),
}
# The sweep's own fields, which a resumed study must share (``trials`` excepted: raising it is the point).
_STUDY_KEYS = ("data", "gan", "kimg", "batch", "seed", "metric", "metric_features", "metric_n", "fixed")


@dataclass(frozen=True)
class SweepConfig:
    """One sweep. ``fixed`` holds ``--set knob=value`` strings applied to every trial; a Table 1 knob
    named there is pinned (not sampled)."""

    data: str
    gan: str
    out: str
    trials: int = 20
    kimg: float = 10.0
    batch: int = 64
    seed: int = 0
    storage: str = ""  # "" = sqlite:///<out>/study.db
    study: str = ""  # "" = "medgan-sweep-<gan>"
    metric: str = "fid"
    metric_features: str = "inception"
    metric_n: int = 0  # 0 = the hook's default (see medgan.metrics.hooks)
    fixed: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.gan not in SWEEP_GANS:
            raise ConfigError(f"sweep gan={self.gan!r} is not one of {list(SWEEP_GANS)}")
        if self.metric not in SWEEP_METRICS:
            raise ConfigError(f"sweep metric={self.metric!r} is not one of {list(SWEEP_METRICS)}")
        if self.metric_features not in SWEEP_FEATURES:
            raise ConfigError(f"sweep metric_features={self.metric_features!r} is not one of {list(SWEEP_FEATURES)}")
        if self.trials < 1 or self.kimg <= 0 or self.batch < 1 or self.metric_n < 0:
            raise ConfigError("sweep needs trials >= 1, kimg > 0, batch >= 1 and metric_n >= 0")
        if not self.data or not self.out:
            raise ConfigError("sweep needs data (a prepared folder) and out (the sweep folder)")
        object.__setattr__(self, "fixed", tuple(self.fixed))

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def study_name(self) -> str:
        return self.study or f"medgan-sweep-{self.gan}"


def search_space(gan: str) -> dict[str, tuple]:
    """The Table 1 knobs (dotted config keys -> values) that apply to ``gan``.

    Drops the knobs its loss refuses: weight clipping (wgan only), the gradient penalty (wgan-gp only) and
    label smoothing (not wgan/wgan-gp/hinge, which have no real-label target).
    """
    if gan not in SWEEP_GANS:
        raise ConfigError(f"sweep gan={gan!r} is not one of {list(SWEEP_GANS)}")
    return {k: v for k, v in TABLE1.items() if gan in ONLY_FOR.get(k, (gan,))}


def _pinned_keys(fixed: tuple[str, ...]) -> set[str]:
    keys = set()
    for a in fixed:
        if "=" not in a:
            raise ConfigError(f"--set expects knob=value, got {a!r}")
        keys.add(".".join(_resolve_key(TrainConfig(), a.split("=", 1)[0].strip())))
    return keys


def _get(d: dict[str, Any], dotted: str) -> Any:
    for p in dotted.split("."):
        d = d[p]
    return d


def trial_config(cfg: SweepConfig, params: dict[str, Any], number: int) -> TrainConfig:
    """The ``TrainConfig`` of trial ``number``: GANS[gan], the sweep settings, the sampled knobs, then ``fixed``."""
    base = make_config(out=Path(cfg.out) / f"trial-{number}", data=cfg.data, gan=cfg.gan, kimg=cfg.kimg,
                       batch=cfg.batch)
    base = apply_overrides(base, {"seed": cfg.seed, "metrics": [cfg.metric], "metric_kimg": 0.0,
                                  "metric_features": cfg.metric_features, "metric_n": cfg.metric_n, **params})
    return apply_overrides(base, list(cfg.fixed)) if cfg.fixed else base


def _last_metric(run_dir: Path, name: str) -> dict[str, Any] | None:
    records = read_jsonl(run_dir / f"metric-{name}.jsonl")
    return records[-1] if records else None


def _objective(cfg: SweepConfig, space: dict[str, tuple], progress: bool | None):
    def objective(trial) -> float:
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in space.items()}
        run_dir = Path(cfg.out) / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        status, reason, value = "failed", "", math.nan
        try:
            tcfg = trial_config(cfg, params, trial.number)
            trial.set_user_attr("knobs", {k: _get(tcfg.to_dict(), k) for k in TABLE1})
            run_training(tcfg, progress=progress)
            st = run_status(run_dir)
            status, reason = st["status"], st.get("reason", "")
            record = _last_metric(run_dir, cfg.metric) if status == "finished" else None
            if status == "finished":
                if record is None:
                    status, reason = "failed", f"no metric-{cfg.metric}.jsonl written"
                else:
                    value = float(record["value"])
                    trial.set_user_attr("features", record.get("features", cfg.metric_features))
                    if not math.isfinite(value):
                        status, reason = "failed", f"{cfg.metric} is {value}"
        except Exception as e:  # noqa: BLE001 - a bad trial is a data point, never the end of the study
            status, reason = "failed", f"{type(e).__name__}: {e}"
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("value", value if math.isfinite(value) else None)
        return value if status == "finished" else math.nan  # NaN -> Optuna records the trial as FAIL

    return objective


def _ended(study) -> int:
    return len(study.get_trials(deepcopy=False, states=_ENDED))


def trials_frame(study, cfg: SweepConfig) -> pd.DataFrame:
    """One row per ended trial: trial, every Table 1 knob of the gan, status, reason, metric, features, value, run_dir."""
    from optuna.trial import TrialState

    space = search_space(cfg.gan)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or t.state == TrialState.WAITING:
            continue
        knobs = t.user_attrs.get("knobs", {})
        row: dict[str, Any] = {"trial": t.number}
        for k in space:
            row[k] = t.params.get(k, knobs.get(k))
        value = t.user_attrs.get("value")
        row.update(status=t.user_attrs.get("status", "failed"), reason=t.user_attrs.get("reason", ""),
                   state=t.state.name, metric=cfg.metric, features=t.user_attrs.get("features", cfg.metric_features),
                   value=math.nan if value is None else float(value), run_dir=t.user_attrs.get("run_dir", ""))
        rows.append(row)
    columns = ["trial", *space, "status", "reason", "state", "metric", "features", "value", "run_dir"]
    return pd.DataFrame(rows, columns=columns)


def run_sweep(cfg: SweepConfig, *, progress: bool | None = None) -> pd.DataFrame:
    """Run (or continue) the study until ``cfg.trials`` trials have ended; write trials.csv and sweep.json."""
    import optuna

    space = search_space(cfg.gan)
    pinned = _pinned_keys(cfg.fixed)
    space = {k: v for k, v in space.items() if k not in pinned}
    # a typo in --set or the data path fails here, once, not as N failed trials
    trial_config(cfg, {}, 0)
    load_prepared(cfg.data)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=cfg.storage_url, study_name=cfg.study_name, direction="minimize",
                                load_if_exists=True, sampler=None)
    settings = _study_settings(cfg)
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", settings)
    elif stored != settings:
        diff = sorted(k for k in settings if stored.get(k) != settings[k])
        raise ConfigError(f"study {cfg.study_name!r} in {cfg.storage_url} was run with other settings ({', '.join(diff)}); "
                          "use another --out/--storage or the same settings")
    done = _ended(study)
    if done < cfg.trials:
        # a fresh sampler seed per resume: the same seed would replay the first random start-up suggestions
        study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(study.trials))
        study.optimize(_objective(cfg, space, progress), n_trials=cfg.trials - done,
                       callbacks=[optuna.study.MaxTrialsCallback(cfg.trials, states=_ENDED)])
    frame = trials_frame(study, cfg)
    atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    write_json(out / "sweep.json", _summary(cfg, frame, space, pinned))
    return frame


def _study_settings(cfg: SweepConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["data"] = str(Path(cfg.data).resolve())
    d["fixed"] = list(cfg.fixed)
    return {k: d[k] for k in _STUDY_KEYS}


def _summary(cfg: SweepConfig, frame: pd.DataFrame, space: dict[str, tuple], pinned: set[str]) -> dict[str, Any]:
    ok = frame[frame["status"] == "finished"].dropna(subset=["value"])
    best = None
    if len(ok):
        row = ok.loc[ok["value"].idxmin()]
        best = {"trial": int(row["trial"]), "value": float(row["value"]), "run_dir": row["run_dir"],
                "knobs": {k: jsonable(row[k]) for k in [*space, *sorted(pinned & set(TABLE1))] if k in row}}
    return {
        "config": {**asdict(cfg), "fixed": list(cfg.fixed)},
        "storage": cfg.storage_url,
        "study": cfg.study_name,
        "metric": cfg.metric,
        "features": cfg.metric_features,
        "search_space": {k: list(v) for k, v in space.items()},
        "pinned": sorted(pinned),
        "n_trials": int(len(frame)),
        "status_counts": {k: int(v) for k, v in frame["status"].value_counts().items()},
        "best": best,
    }


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def sweep(*, data, gan, out, trials, kimg, batch=64, seed=0, metric="fid", features="inception", metric_n=0,
          storage="", study="", overrides=(), progress=None) -> pd.DataFrame:
    """Python twin of ``medgan sweep``."""
    cfg = SweepConfig(data=str(data), gan=gan, out=str(out), trials=trials, kimg=kimg, batch=batch, seed=seed,
                      storage=storage or "", study=study or "", metric=metric, metric_features=features,
                      metric_n=metric_n, fixed=tuple(overrides))
    return run_sweep(cfg, progress=progress)


def add_cli(sub) -> None:
    p = sub.add_parser("sweep", help="Optuna study over the Table 1 space (one training run per trial)",
                       description="Sample the paper's Table 1 knobs for one GAN, train each trial and score it "
                                   "with FID/KID; rerun to continue the study.")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--gan", required=True, choices=SWEEP_GANS)
    p.add_argument("--out", required=True, help="sweep folder (trial-<n>/, trials.csv, sweep.json, study.db)")
    p.add_argument("--trials", type=int, required=True, help="total trials of the study (rerun with more to extend)")
    p.add_argument("--kimg", type=float, required=True, help="training length of each trial")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (and the sampler's)")
    p.add_argument("--metric", choices=SWEEP_METRICS, default="fid")
    p.add_argument("--features", choices=SWEEP_FEATURES, default="inception",
                   help="feature extractor of the metric (inception-random: labelled random weights)")
    p.add_argument("--metric-n", type=int, default=0, help="samples per metric evaluation (0 = hook default)")
    p.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///<out>/study.db)")
    p.add_argument("--study", default="", help="study name (default medgan-sweep-<gan>)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KNOB=VALUE",
                   help="config overrides for every trial; a Table 1 knob set here is not sampled")
    p.add_argument("--progress", action="store_true", help="show each trial's training progress bar")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    frame = sweep(data=args.data, gan=args.gan, out=args.out, trials=args.trials, kimg=args.kimg, batch=args.batch,
                  seed=args.seed, metric=args.metric, features=args.features, metric_n=args.metric_n,
                  storage=args.storage, study=args.study, overrides=args.overrides,
                  progress=True if args.progress else False)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 40):
        shown = frame.drop(columns=["reason", "run_dir", "state"]).replace("", "-")  # "" = off (diffaugment)
        print(shown.to_string(index=False))
    summary = json.loads((Path(args.out) / "sweep.json").read_text())
    best = summary["best"]
    if best is None:
        print(f"no trial finished with a finite {args.metric}; see {Path(args.out) / 'trials.csv'} (reason column)")
        return 1
    print(f"best: trial {best['trial']} {args.metric} ({summary['features']}) = {best['value']:.6g}  {best['run_dir']}")
    for k, v in best["knobs"].items():
        print(f"  {k} = {v if v != '' else '-'}")
    return 0
