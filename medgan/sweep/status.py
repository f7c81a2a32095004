"""Looking at a study in a shared storage without running it: ``study_status`` and ``export_trials``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from medgan.config import ConfigError
from medgan.io import atomic_write
from medgan.sweep.study import SweepConfig, counted_trials, search_space, trials_frame


def load_sweep(storage: str, study: str):
    """``(study, SweepConfig)`` of an existing study (its settings come from the study's ``sweep`` user attr)."""
    import optuna

    if not storage:
        raise ConfigError("--storage URL is needed to find the study (e.g. sqlite:///SWEEP_DIR/study.db)")
    try:
        st = optuna.load_study(study_name=study, storage=storage)
    except KeyError as e:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {study!r} in {storage}; it holds {names}") from e
    s = st.user_attrs.get("sweep")
    if not s:
        raise ConfigError(f"study {study!r} in {storage} was not made by medgan sweep (no 'sweep' settings)")
    cfg = SweepConfig(data=s["data"], gan=s["gan"], out="-", kimg=s["kimg"], batch=s["batch"], seed=s["seed"],
                      storage=storage, study=study, metric=s["metric"], metric_features=s["metric_features"],
                      metric_n=s["metric_n"], fixed=tuple(s["fixed"]),
                      restrict=tuple(s.get("restrict", ())))
    return st, cfg


def study_status(storage: str, study: str, *, top: int = 5) -> dict[str, Any]:
    """Counts per Optuna state and per medgan status, the ``top`` best finished trials, the divergence share."""
    st, cfg = load_sweep(storage, study)
    trials = st.get_trials(deepcopy=False)
    counted = counted_trials(trials)
    frame = trials_frame(st, cfg)
    ended = frame[frame["status"] != "lost"]
    ok = ended[ended["status"] == "finished"].dropna(subset=["value"]).sort_values("value").head(top)
    knobs = list(search_space(cfg.gan))
    best = [{"trial": int(r["trial"]), "value": float(r["value"]), "run_dir": r["run_dir"],
             "knobs": {k: r[k] for k in knobs}} for _, r in ok.iterrows()]
    states: dict[str, int] = {}
    for t in counted:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return {
        "study": study, "storage": storage, "gan": cfg.gan, "metric": cfg.metric, "features": cfg.metric_features,
        "counted": len(counted), "states": states,
        "status_counts": {k: int(v) for k, v in frame["status"].value_counts().items()},
        "surplus": sum(1 for t in trials if t.user_attrs.get("surplus")),
        "diverged_share": float((ended["status"] == "diverged").mean()) if len(ended) else math.nan,
        "best": best,
    }


def format_status(s: dict[str, Any]) -> str:
    lines = [f"study {s['study']} ({s['gan']}, {s['metric']} with {s['features']} features) in {s['storage']}",
             f"trials counted: {s['counted']}  " + "  ".join(f"{k}={v}" for k, v in sorted(s["states"].items())),
             "status: " + "  ".join(f"{k}={v}" for k, v in sorted(s["status_counts"].items())),
             f"diverged share: {s['diverged_share']:.1%}" if not math.isnan(s["diverged_share"]) else
             "diverged share: - (no ended trial)"]
    for i, b in enumerate(s["best"]):
        lines.append(f"best #{i + 1}: trial {b['trial']} {s['metric']} = {b['value']:.6g}  {b['run_dir']}")
    return "\n".join(lines)


def export_trials(storage: str, study: str, out: str | Path) -> Path:
    """Write the study's trials (``trials_frame``) to ``out``: Parquet when ``out`` ends in .parquet and pyarrow is
    installed, else CSV (a .parquet name becomes .csv when pyarrow is missing). Returns the path written."""
    st, cfg = load_sweep(storage, study)
    frame: pd.DataFrame = trials_frame(st, cfg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            out = out.with_suffix(".csv")
        else:
            atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
            return out
    atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
    return out
