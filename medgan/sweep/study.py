"""The study itself: ``SweepConfig``, the Table 1 ``search_space``, the objective and ``run_sweep``.

A worker (``run_sweep``) loops: fail stale trials, then run one trial at a time with ``study.optimize(n_trials=1)``
until the study holds ``cfg.trials`` counted trials and none is still running anywhere. Any number of workers,
on one machine or many, may share one storage; see the package docstring for the counting rules.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medgan.config import TABLE1, ConfigError, TrainConfig, _resolve_key, apply_overrides
from medgan.data.prepared import load_prepared
from medgan.io import atomic_write_text, jsonable, read_jsonl, write_json
from medgan.runtime import code_version
from medgan.training import make_config, run_status, run_training

SWEEP_GANS = ("dcgan", "lsgan", "wgan", "wgan-gp", "hinge")
SWEEP_METRICS = ("fid", "kid")
SWEEP_FEATURES = ("inception", "inception-random", "inception-random:128")  # :128 = the quick profile's
SWEEP_PRUNERS = ("none", "median", "halving")
# Table 1 knobs that only some losses admit (medgan.losses.GANLoss.validate raises ConfigError otherwise).
ONLY_FOR = {
    "loss.clip": ("wgan",),
    "loss.gp_weight": ("wgan-gp",),
    "loss.label_smoothing": ("dcgan", "lsgan"),
}
# The sweep's own fields, which a resumed study must share (``trials`` excepted: raising it is the point).
_STUDY_KEYS = ("data", "gan", "kimg", "batch", "seed", "metric", "metric_features", "metric_n", "fixed", "restrict")
MAX_RETRY = 2  # a trial whose worker died is re-queued at most this many times
MEDIAN_STARTUP = 4  # MedianPruner: no pruning before this many trials have reported


@dataclass(frozen=True)
class SweepConfig:
    """One sweep. ``fixed`` holds ``--set knob=value`` strings applied to every trial; a Table 1 knob
    named there is pinned (not sampled). ``pruner`` stops hopeless trials at the reports made every
    ``report_kimg`` (0 = kimg/4 with a pruner, one report at the end without). ``heartbeat``/``grace``
    (seconds) are Optuna's RDBStorage heartbeat: a RUNNING trial silent for ``grace`` s is failed and re-queued."""

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
    # "knob=v1|v2" strings: sample that Table 1 knob from a subset of its values (the quick profile's CPU budget);
    # empty = the paper's space, exact
    restrict: tuple[str, ...] = field(default_factory=tuple)
    pruner: str = "none"
    report_kimg: float = 0.0
    heartbeat: int = 10
    grace: int = 60

    def __post_init__(self) -> None:
        if self.gan not in SWEEP_GANS:
            raise ConfigError(f"sweep gan={self.gan!r} is not one of {list(SWEEP_GANS)}")
        if self.metric not in SWEEP_METRICS:
            raise ConfigError(f"sweep metric={self.metric!r} is not one of {list(SWEEP_METRICS)}")
        if self.metric_features not in SWEEP_FEATURES:
            raise ConfigError(f"sweep metric_features={self.metric_features!r} is not one of {list(SWEEP_FEATURES)}")
        if self.pruner not in SWEEP_PRUNERS:
            raise ConfigError(f"sweep pruner={self.pruner!r} is not one of {list(SWEEP_PRUNERS)}")
        if self.trials < 1 or self.kimg <= 0 or self.batch < 1 or self.metric_n < 0 or self.report_kimg < 0:
            raise ConfigError("sweep needs trials >= 1, kimg > 0, batch >= 1, metric_n >= 0 and report_kimg >= 0")
        if self.heartbeat < 1 or self.grace <= self.heartbeat:
            raise ConfigError("sweep needs heartbeat >= 1 s and grace > heartbeat")
        if not self.data or not self.out:
            raise ConfigError("sweep needs data (a prepared folder) and out (the sweep folder)")
        object.__setattr__(self, "fixed", tuple(self.fixed))
        object.__setattr__(self, "restrict", tuple(self.restrict))
        restrict_space(search_space(self.gan), self.restrict)  # a bad --restrict fails here, once

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"

    @property
    def study_name(self) -> str:
        return self.study or f"medgan-sweep-{self.gan}"

    def report_points(self) -> list[float]:
        """The cumulative kimg after which the metric is reported (the last is ``kimg``)."""
        step = self.report_kimg or (self.kimg / 4 if self.pruner != "none" else self.kimg)
        n = max(1, math.ceil(self.kimg / step - 1e-9))
        return [round(min(self.kimg, step * (i + 1)), 6) for i in range(n)]


def search_space(gan: str) -> dict[str, tuple]:
    """The Table 1 knobs (dotted config keys -> values) that apply to ``gan``.

    Drops the knobs its loss refuses: weight clipping (wgan only), the gradient penalty (wgan-gp only) and
    label smoothing (not wgan/wgan-gp/hinge, which have no real-label target).
    """
    if gan not in SWEEP_GANS:
        raise ConfigError(f"sweep gan={gan!r} is not one of {list(SWEEP_GANS)}")
    return {k: v for k, v in TABLE1.items() if gan in ONLY_FOR.get(k, (gan,))}


def restrict_space(space: dict[str, tuple], restrict: tuple[str, ...]) -> dict[str, tuple]:
    """``space`` with each ``"knob=v1|v2"`` of ``restrict`` narrowed to those values (a subset of Table 1's)."""
    out = dict(space)
    for r in restrict:
        key, sep, values = r.partition("=")
        key = key.strip()
        if not sep or key not in TABLE1:
            raise ConfigError(f"--restrict expects knob=v1|v2 with a Table 1 knob, got {r!r}; knobs: {sorted(TABLE1)}")
        if key not in space:
            raise ConfigError(f"--restrict {key}: not searched for this GAN (its loss does not admit it)")
        by_text = {str(v): v for v in TABLE1[key]}
        wanted = [v.strip() for v in values.split("|")]
        bad = [v for v in wanted if v not in by_text]
        if bad or not wanted:
            raise ConfigError(f"--restrict {key}: {bad or values!r} not among Table 1's values {list(TABLE1[key])}")
        out[key] = tuple(by_text[v] for v in dict.fromkeys(wanted))
    return out


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


def trial_config(cfg: SweepConfig, params: dict[str, Any], number: int, *, kimg: float | None = None) -> TrainConfig:
    """The ``TrainConfig`` of trial ``number``: GANS[gan], the sweep settings, the sampled knobs, then ``fixed``.
    ``kimg`` (default ``cfg.kimg``) is the length of one chunk's run when the trial reports along the way."""
    base = make_config(out=Path(cfg.out) / f"trial-{number}", data=cfg.data, gan=cfg.gan,
                       kimg=cfg.kimg if kimg is None else kimg, batch=cfg.batch)
    base = apply_overrides(base, {"seed": cfg.seed, "metrics": [cfg.metric], "metric_kimg": 0.0,
                                  "metric_features": cfg.metric_features, "metric_n": cfg.metric_n, **params})
    return apply_overrides(base, list(cfg.fixed)) if cfg.fixed else base


def _last_metric(run_dir: Path, name: str) -> dict[str, Any] | None:
    records = read_jsonl(run_dir / f"metric-{name}.jsonl")
    return records[-1] if records else None


# ---------------------------------------------------------------------------------------------
# counting: exact whatever the number of workers
# ---------------------------------------------------------------------------------------------
def replaced_numbers(trials) -> dict[int, int]:
    """``{number of a trial whose worker died: number of the trial that re-runs it}`` (RetryHeartbeatStaleTrialCallback
    copies the lineage into ``system_attrs["retry_history"]`` of the re-queued trial)."""
    out: dict[int, int] = {}
    for t in trials:
        for n in t.system_attrs.get("retry_history", []):
            out[int(n)] = t.number
    return out


def counted_trials(trials) -> list:
    """The trials that use up the study's budget: all but the surplus ones (asked by a worker after the budget
    was full, never trained) and those replaced by a retry (their re-run counts instead)."""
    replaced = replaced_numbers(trials)
    return [t for t in trials if t.number not in replaced and not t.user_attrs.get("surplus")]


def is_surplus(trials, number: int, budget: int) -> bool:
    """Whether trial ``number`` is over the budget: ``budget`` counted trials have a smaller number.

    Exact under races: numbers are unique, and if a smaller-numbered trial is itself surplus then so is this
    one (it sees at least as many counted trials below it), so a not-yet-marked surplus trial changes nothing."""
    return sum(1 for t in counted_trials(trials) if t.number < number) >= budget


# ---------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------
def _objective(cfg: SweepConfig, space: dict[str, tuple], progress: bool | None):
    import optuna

    points = cfg.report_points()
    pruning = cfg.pruner != "none"

    def objective(trial) -> float:
        if is_surplus(trial.study.get_trials(deepcopy=False), trial.number, cfg.trials):
            trial.set_user_attr("surplus", True)  # the budget filled while this worker asked: train nothing
            return math.nan
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in space.items()}
        run_dir = Path(cfg.out) / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        status, reason, value, pruned = "failed", "", math.nan, False
        try:
            for step, kimg in enumerate(points):
                tcfg = trial_config(cfg, params, trial.number, kimg=kimg)
                if step == 0:
                    trial.set_user_attr("knobs", {k: _get(tcfg.to_dict(), k) for k in TABLE1})
                # each chunk continues the last from checkpoint-last.pt: bit-identical to one run of cfg.kimg
                run_training(tcfg, resume=step > 0, progress=progress)
                st = run_status(run_dir)
                status, reason = st["status"], st.get("reason", "")
                if status != "finished":
                    break
                record = _last_metric(run_dir, cfg.metric)
                if record is None:
                    status, reason = "failed", f"no metric-{cfg.metric}.jsonl written"
                    break
                value = float(record["value"])
                trial.set_user_attr("features", record.get("features", cfg.metric_features))
                trial.set_user_attr("kimg_done", kimg)
                if not math.isfinite(value):
                    status, reason = "failed", f"{cfg.metric} is {value}"
                    break
                if pruning and step < len(points) - 1:
                    trial.report(value, step)
                    if trial.should_prune():
                        status, reason, pruned = "pruned", f"pruned by {cfg.pruner} at {kimg} kimg", True
                        break
        except Exception as e:  # noqa: BLE001 - a bad trial is a data point, never the end of the study
            status, reason = "failed", f"{type(e).__name__}: {e}"
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("value", value if math.isfinite(value) else None)
        if pruned:
            raise optuna.TrialPruned(reason)  # the run folder and its last metric line stay
        return value if status == "finished" else math.nan  # NaN -> Optuna records the trial as FAIL

    return objective


# ---------------------------------------------------------------------------------------------
# storage and the worker loop
# ---------------------------------------------------------------------------------------------
def make_storage(url: str, *, heartbeat: int = 10, grace: int = 60):
    """An ``RDBStorage`` with Optuna's heartbeat: a trial whose worker stops beating for ``grace`` s is failed and
    re-queued (``RetryHeartbeatStaleTrialCallback``, formerly RetryFailedTrialCallback, at most ``MAX_RETRY`` times) by the next worker that looks."""
    import optuna
    import sqlalchemy.exc

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}  # several local workers: wait for the file lock
    for attempt in range(8):
        try:
            with warnings.catch_warnings():  # heartbeat and its retry callback are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat), grace_period=int(grace),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # workers started together on an empty database race to create Optuna's tables: the loser retries
            if attempt == 7:
                raise
            time.sleep(0.5 + random.random())


def make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.pruners.NopPruner()


def _work(study, cfg: SweepConfig, objective) -> None:
    import optuna
    from optuna.trial import TrialState

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        counted = counted_trials(trials)
        if len(counted) < cfg.trials or any(t.state == TrialState.WAITING for t in counted):
            study.optimize(objective, n_trials=1, gc_after_trial=False)
            continue
        if not any(t.state == TrialState.RUNNING for t in counted):
            return
        time.sleep(min(cfg.heartbeat, 5))  # another worker's trial runs (or died: wait for its retry)


def trial_seeded_sampler(seed: int):
    """TPE whose random state is a function of ``(seed, trial number)`` alone.

    Trial numbers are unique across workers, so workers asking at once never draw the same knobs (the reason the
    seed once mixed in the worker's pid), and a sweep rerun with the same seed draws the same knobs trial for trial
    (which the pid made a matter of chance). TPE itself is stateless apart from its random state; it is rebuilt per
    trial in ``before_trial``, which ``optuna.Trial`` calls once the number is known and before any ``suggest_*``."""
    import optuna

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.seed = int(seed)
            self._tpe = optuna.samplers.TPESampler(seed=self.seed)

        def before_trial(self, study, trial) -> None:
            self._tpe = optuna.samplers.TPESampler(seed=self.seed + trial.number)
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:  # optuna calls this for n_jobs > 1 only; our workers are processes
            self._tpe.reseed_rng()

    return TrialSeededTPE()


def open_study(cfg: SweepConfig):
    import optuna

    return optuna.create_study(storage=make_storage(cfg.storage_url, heartbeat=cfg.heartbeat, grace=cfg.grace),
                               study_name=cfg.study_name, direction="minimize", load_if_exists=True,
                               sampler=trial_seeded_sampler(cfg.seed), pruner=make_pruner(cfg.pruner))


def run_sweep(cfg: SweepConfig, *, progress: bool | None = None) -> pd.DataFrame:
    """Work on the study until it holds ``cfg.trials`` counted trials, all ended; write trials.csv and sweep.json."""
    space = restrict_space(search_space(cfg.gan), cfg.restrict)
    pinned = _pinned_keys(cfg.fixed)
    space = {k: v for k, v in space.items() if k not in pinned}
    # a typo in --set or the data path fails here, once, not as N failed trials
    trial_config(cfg, {}, 0)
    load_prepared(cfg.data)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(cfg)
    settings = study_settings(cfg)
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", settings)
    elif stored != settings:
        diff = sorted(k for k in settings if stored.get(k) != settings[k])
        raise ConfigError(f"study {cfg.study_name!r} in {cfg.storage_url} was run with other settings ({', '.join(diff)}); "
                          "use another --out/--storage or the same settings")
    _work(study, cfg, _objective(cfg, space, progress))
    frame = trials_frame(study, cfg)
    atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    write_json(out / "sweep.json", _summary(cfg, frame, space, pinned))
    return frame


def study_settings(cfg: SweepConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["data"] = str(Path(cfg.data).resolve())
    d["fixed"] = list(cfg.fixed)
    d["restrict"] = list(cfg.restrict)
    return {k: d[k] for k in _STUDY_KEYS}


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
def trials_frame(study, cfg: SweepConfig) -> pd.DataFrame:
    """One row per ended trial (surplus ones left out): trial, every Table 1 knob of the gan, status (finished /
    diverged / failed / pruned / lost = its worker died, re-run as ``retried_as``), reason, state, metric,
    features, value (a pruned trial's last reported one), run_dir."""
    from optuna.trial import TrialState

    space = search_space(cfg.gan)
    trials = study.get_trials(deepcopy=False)
    replaced = replaced_numbers(trials)
    rows = []
    for t in trials:
        if t.state in (TrialState.RUNNING, TrialState.WAITING) or t.user_attrs.get("surplus"):
            continue
        knobs = t.user_attrs.get("knobs", {})
        row: dict[str, Any] = {"trial": t.number}
        for k in space:
            row[k] = t.params.get(k, knobs.get(k))
        value = t.user_attrs.get("value")
        status, reason = t.user_attrs.get("status", "failed"), t.user_attrs.get("reason", "")
        if t.number in replaced:
            status, reason = "lost", f"worker stopped beating; re-run as trial {replaced[t.number]}"
        row.update(status=status, reason=reason, state=t.state.name, metric=cfg.metric,
                   features=t.user_attrs.get("features", cfg.metric_features),
                   value=math.nan if value is None else float(value), run_dir=t.user_attrs.get("run_dir", ""),
                   gan=cfg.gan, data=Path(cfg.data).name)
        rows.append(row)
    # gan and data (the prepared folder's name) make an exported file stand alone (medgan.sweep.analysis)
    columns = ["trial", *space, "status", "reason", "state", "metric", "features", "value", "run_dir", "gan", "data"]
    return pd.DataFrame(rows, columns=columns)


def _summary(cfg: SweepConfig, frame: pd.DataFrame, space: dict[str, tuple], pinned: set[str]) -> dict[str, Any]:
    ok = frame[frame["status"] == "finished"].dropna(subset=["value"])
    best = None
    if len(ok):
        row = ok.loc[ok["value"].idxmin()]
        best = {"trial": int(row["trial"]), "value": float(row["value"]), "run_dir": row["run_dir"],
                "knobs": {k: jsonable(row[k]) for k in [*space, *sorted(pinned & set(TABLE1))] if k in row}}
    return {
        "config": {**asdict(cfg), "fixed": list(cfg.fixed), "restrict": list(cfg.restrict)},
        "code_version": code_version(),
        "storage": cfg.storage_url,
        "study": cfg.study_name,
        "metric": cfg.metric,
        "features": cfg.metric_features,
        "search_space": {k: list(v) for k, v in space.items()},
        "pinned": sorted(pinned),
        "n_trials": int((frame["status"] != "lost").sum()),
        "status_counts": {k: int(v) for k, v in frame["status"].value_counts().items()},
        "best": best,
    }
