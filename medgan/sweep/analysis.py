"""Reading a finished sweep: the paper's Fig 3 and Fig 4, every other Table 1 knob, importances, and the best
configuration per GAN that Table 2 trains.

Input is one long table, a row per ended trial: ``trials.csv`` of a sweep folder, a file written by
``medgan sweep export``, or studies read from a storage URL (``collect``). Its columns are those of
``medgan.sweep.study.trials_frame`` (``gan`` and ``data`` make it stand alone), plus ``dataset``: the dataset
the prepared folder holds (``acdc-32`` -> ``acdc``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medgan.config import TABLE1, ConfigError
from medgan.io import jsonable, write_json
from medgan.sweep.status import load_sweep
from medgan.sweep.study import SWEEP_GANS, trials_frame

# The paper's panel order (Fig 3 reads left to right from the smallest dataset to the largest).
DATASET_ORDER = ("idrid", "acdc", "sliver07")
DATASET_LABEL = {"idrid": "IDRiD", "acdc": "ACDC", "sliver07": "SLiver07"}
GAN_LABEL = {"dcgan": "DCGAN", "lsgan": "LSGAN", "wgan": "WGAN", "wgan-gp": "WGAN-GP", "hinge": "HingeGAN"}
# How a trial ended, in the order the status-share bars stack.
STATUSES = ("finished", "diverged", "pruned", "failed", "lost")
BEST_FILE = "sweep-best.json"


def dataset_of(data: str) -> str:
    """``acdc-32`` / ``acdc-paper`` / ``acdc`` -> ``acdc`` (the prepared folder's name without its size)."""
    return re.sub(r"-(\d+|paper)$", "", Path(str(data)).name)


def _with_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("gan", "data", "value", "status") if c not in frame.columns]
    if missing:
        raise ConfigError(f"a sweep trials table needs the columns {missing} (write it with medgan sweep export)")
    return frame.assign(dataset=frame["data"].map(dataset_of))


def read_trials(path: str | Path) -> pd.DataFrame:
    """The trials of a sweep folder (its ``trials.csv``) or of a file from ``medgan sweep export`` (.csv/.parquet)."""
    path = Path(path)
    if path.is_dir():
        path = path / "trials.csv"
    if not path.is_file():
        raise ConfigError(f"no sweep trials at {path} (a sweep folder's trials.csv or a medgan sweep export file)")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False,
                                                                                 na_values=[""])
    if "aug.diffaugment" in frame.columns:  # "" (off) is a value of this knob, not a missing one
        frame["aug.diffaugment"] = frame["aug.diffaugment"].fillna("")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return _with_dataset(frame)


def read_study(storage: str, study: str) -> pd.DataFrame:
    """The trials of one study in a storage (SQLite file or PostgreSQL URL), as ``trials_frame`` makes them."""
    st, cfg = load_sweep(storage, study)
    return _with_dataset(trials_frame(st, cfg))


def collect(*, frames: Iterable[pd.DataFrame] = (), files: Iterable[str | Path] = (), storage: str = "",
            studies: Iterable[str] = ()) -> pd.DataFrame:
    """One long table of every trial of every source (frames already read, files/sweep folders, studies)."""
    parts = [_with_dataset(f) if "dataset" not in f.columns else f for f in frames]
    parts += [read_trials(f) for f in files]
    parts += [read_study(storage, s) for s in studies]
    if not parts:
        raise ConfigError("no sweep to read: give sweep folders, exported files, or --storage with study names")
    return pd.concat(parts, ignore_index=True)


def ordered(values: Iterable[str], order: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + sorted(v for v in present if v not in tuple(order))


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------
def status_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of trials per status (finished / diverged / pruned / failed / lost) for each dataset × GAN; ``n`` = trials."""
    counts = frame.groupby(["dataset", "gan"])["status"].value_counts().unstack(fill_value=0)
    for s in STATUSES:
        if s not in counts.columns:
            counts[s] = 0
    n = counts.sum(axis=1)
    shares = counts[list(STATUSES)].div(n, axis=0)
    shares["n"] = n
    return shares


def spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × GAN over finished trials: n, best (min), median, IQR and std of the metric — the paper's
    "sensitivity" reading of Fig 3 (a GAN whose FID varies little across settings is the stable one)."""
    ok = frame[(frame["status"] == "finished") & np.isfinite(frame["value"])]
    g = ok.groupby(["dataset", "gan"])["value"]
    out = pd.DataFrame({"n": g.size(), "best": g.min(), "median": g.median(),
                        "iqr": g.quantile(0.75) - g.quantile(0.25), "std": g.std(ddof=1)})
    return out


def best_configs(frame: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dataset: {gan: {"trial", "value", "metric", "features", "knobs": {Table 1 knob: value}}}}`` of the finished
    trial with the lowest metric per dataset × GAN (a pair with no finished trial is absent)."""
    ok = frame[(frame["status"] == "finished") & np.isfinite(frame["value"])]
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for (dataset, gan), rows in ok.groupby(["dataset", "gan"]):
        row = rows.loc[rows["value"].idxmin()]
        knobs = {k: _plain(row[k]) for k in TABLE1 if k in row.index and not _missing(row[k])}
        best.setdefault(str(dataset), {})[str(gan)] = {
            "trial": int(row["trial"]), "value": float(row["value"]), "metric": str(row.get("metric", "fid")),
            "features": str(row.get("features", "")), "data": str(row["data"]), "knobs": knobs}
    return best


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v: Any) -> Any:
    """numpy scalars -> Python; the CSV's "True"/"False" strings -> bool."""
    v = jsonable(v)
    return {"True": True, "False": False}.get(v, v) if isinstance(v, str) else v


def write_best(path: str | Path, best: dict, **provenance: Any) -> Path:
    """Write ``best_configs`` with its provenance (profile, source, trials per cell...) for Table 2 to read."""
    path = Path(path)
    write_json(path, {**provenance, "best": best})
    return path


def read_best(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def best_overrides(best_file: str | Path, dataset: str, gan: str) -> list[str]:
    """The ``--set knob=value`` strings of the swept best configuration of ``gan`` on ``dataset`` (``[]`` when the
    file has none for that pair: a GAN the paper did not sweep, e.g. SPADE and StyleGAN2)."""
    entry = read_best(best_file)["best"].get(dataset, {}).get(gan)
    if entry is None:
        return []
    return [f"{k}={_as_text(v)}" for k, v in entry["knobs"].items()]


def _as_text(v: Any) -> str:
    return "" if v is None else str(v)


def importances(frame: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Optuna's hyper-parameter importances (fANOVA) per dataset × GAN, from the finished trials of the table (so an
    exported file and a live study give the same answer); a column per Table 1 knob, NaN where it was not searched.
    A cell needs at least 3 finished trials with 2+ distinct values of some knob, else its row is NaN."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    rows = {}
    for (dataset, gan), cell in frame.groupby(["dataset", "gan"]):
        ok = cell[(cell["status"] == "finished") & np.isfinite(cell["value"])]
        knobs = [k for k in TABLE1 if k in ok.columns and ok[k].map(str).nunique() > 1]
        row = dict.fromkeys(TABLE1, math.nan)
        if len(ok) >= 3 and knobs:
            dists = {k: CategoricalDistribution(sorted(ok[k].map(str).unique())) for k in knobs}
            study = optuna.create_study(direction="minimize")
            for _, r in ok.iterrows():
                study.add_trial(create_trial(params={k: str(r[k]) for k in knobs}, distributions=dists,
                                             value=float(r["value"])))
            row.update(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)))
        rows[(dataset, gan)] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["dataset", "gan"])
    return out[[k for k in TABLE1 if out[k].notna().any()]] if len(out) else out


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _axes_grid(n: int, ncols: int, size=(3.6, 3.0)):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _position(values: list):
    """Knob value (as read from a CSV or a study) -> its x position among ``values`` (Table 1's order)."""
    text = {str(v): i for i, v in enumerate(values)}
    return lambda v: text[str(v)]


def _jitter(n: int, seed: int, width: float = 0.18) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-width, width, n)


def fig3(frame: pd.DataFrame, *, title: str = "", seed: int = 0):
    """Fig 3: the metric of every finished trial per GAN, one panel per dataset (IDRiD, ACDC, SLiver07), a box per
    GAN and its trials as dots; diverged / pruned / failed trials are counted under each GAN's name."""
    datasets = ordered(frame["dataset"], DATASET_ORDER)
    gans = ordered(frame["gan"], SWEEP_GANS)
    fig, axes = _axes_grid(len(datasets), 3, size=(4.2, 3.4))
    metric = str(frame["metric"].iloc[0]).upper() if "metric" in frame.columns and len(frame) else "FID"
    for ax, dataset in zip(axes, datasets, strict=True):
        cell = frame[frame["dataset"] == dataset]
        labels = []
        for i, gan in enumerate(gans):
            rows = cell[cell["gan"] == gan]
            ok = rows[(rows["status"] == "finished") & np.isfinite(rows["value"])]["value"].to_numpy()
            if len(ok):
                ax.boxplot([ok], positions=[i], widths=0.55, showfliers=False, medianprops={"color": "k"})
                ax.scatter(i + _jitter(len(ok), seed + i), ok, s=14, alpha=0.75, zorder=3)
            lost = len(rows) - len(ok)
            labels.append(f"{GAN_LABEL.get(gan, gan)}\n{len(ok)} ok" + (f", {lost} not" if lost else ""))
        ax.set_xticks(range(len(gans)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(gans) - 0.4)
        ax.set_title(DATASET_LABEL.get(dataset, dataset))
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _value_ticks(ax, values: list, *, fontsize: int) -> None:
    """A knob's values as x tick labels ("" reads "off"), slanted when one is long."""
    ax.set_xticks(range(len(values)), [str(v) if v != "" else "off" for v in values], fontsize=fontsize,
                  rotation=30 if max((len(str(v)) for v in values), default=0) > 6 else 0)


def _legend_title_layout(fig, axes: list, title: str, *, loc: str):
    """One figure legend from the first panel's lines, the title, a tight layout; returns ``fig``."""
    if axes:
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc=loc, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def knob_figure(frame: pd.DataFrame, knob: str, *, title: str = "", seed: int = 0):
    """The metric of every finished trial against one Table 1 knob: a panel per GAN, a colour per dataset, the
    median per value joined by a line. ``knob_figure(frame, "model.d_filters")`` is the paper's Fig 4."""
    gans = ordered(frame["gan"], SWEEP_GANS)
    datasets = ordered(frame["dataset"], DATASET_ORDER)
    values = [v for v in TABLE1[knob] if str(v) in set(frame[knob].map(str))] if knob in frame.columns else []
    fig, axes = _axes_grid(len(gans), 5, size=(3.0, 2.8))
    metric = str(frame["metric"].iloc[0]).upper() if "metric" in frame.columns and len(frame) else "FID"
    for ax, gan in zip(axes, gans, strict=True):
        for j, dataset in enumerate(datasets):
            rows = frame[(frame["gan"] == gan) & (frame["dataset"] == dataset) & (frame["status"] == "finished")
                         & np.isfinite(frame["value"])]
            if rows.empty or knob not in rows.columns:
                continue
            pos = rows[knob].map(_position(values)).to_numpy(float)
            color = f"C{j}"
            ax.scatter(pos + _jitter(len(pos), seed + j, 0.12), rows["value"], s=12, alpha=0.6, color=color,
                       label=DATASET_LABEL.get(dataset, dataset))
            med = rows.groupby(pos)["value"].median()
            ax.plot(med.index, med.to_numpy(), color=color, lw=1.2)
        _value_ticks(ax, values, fontsize=7)
        ax.set_title(GAN_LABEL.get(gan, gan), fontsize=9)
        ax.set_xlabel(knob, fontsize=7)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    return _legend_title_layout(fig, axes, title, loc="upper right")


def knobs_overview(frame: pd.DataFrame, *, title: str = ""):
    """Every other Table 1 knob at once: for each knob (a panel) and GAN (a colour), the median metric per value over
    all datasets, relative to that GAN's overall median (so datasets and GANs of different FID levels share an axis)."""
    knobs = [k for k in TABLE1 if k != "model.d_filters" and k in frame.columns]
    gans = ordered(frame["gan"], SWEEP_GANS)
    ok = frame[(frame["status"] == "finished") & np.isfinite(frame["value"])].copy()
    ok["rel"] = ok["value"] / ok.groupby(["dataset", "gan"])["value"].transform("median")
    fig, axes = _axes_grid(len(knobs), 4, size=(3.1, 2.5))
    for ax, knob in zip(axes, knobs, strict=True):
        values = [v for v in TABLE1[knob] if str(v) in set(ok[knob].map(str))]
        for j, gan in enumerate(gans):
            rows = ok[(ok["gan"] == gan) & ok[knob].map(str).isin([str(v) for v in values])]
            if rows.empty:
                continue
            pos = rows[knob].map(_position(values))
            med = rows.groupby(pos)["rel"].median()
            ax.plot(med.index, med.to_numpy(), marker="o", ms=3, lw=1, color=f"C{j}", label=GAN_LABEL.get(gan, gan))
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        _value_ticks(ax, values, fontsize=6)
        ax.set_title(knob, fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    if axes:
        axes[0].set_ylabel("metric / GAN median", fontsize=7)
    return _legend_title_layout(fig, axes, title, loc="lower right")


def shares_figure(shares: pd.DataFrame, *, title: str = ""):
    """Stacked bars: how the trials of each GAN ended (finished / diverged / pruned / failed / lost), per dataset."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(shares) + 1.5), 3.0))
    labels = [f"{DATASET_LABEL.get(d, d)}\n{GAN_LABEL.get(g, g)}" for d, g in shares.index]
    bottom = np.zeros(len(shares))
    colors = {"finished": "#4c9a2a", "diverged": "#d1495b", "pruned": "#edae49", "failed": "#666666", "lost": "#aaaaaa"}
    for s in STATUSES:
        vals = shares[s].to_numpy(float)
        if vals.any():
            ax.bar(range(len(shares)), vals, bottom=bottom, color=colors[s], label=s)
            bottom += vals
    ax.set_xticks(range(len(shares)), labels, fontsize=6)
    ax.set_ylabel("share of trials")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
