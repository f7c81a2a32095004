"""The experiment recipes the notebooks share: profiles, and "make it unless it is already there" steps.

A notebook says *what* (dataset, GAN, profile); this module turns that into the folders the data flow uses:

    {data_root}/raw/<dataset>                         raw layout (phantoms written on demand in `quick`)
    {data_root}/prepared/<dataset>-<size>             prepared set
    {runs_root}/<dataset>-<size>-<gan>-<profile>      GAN run folder
    {data_root}/generated/<run name>                  generated prepared set

Each step reuses a finished result (so rebuilding the book does not retrain) and never deletes anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medgan.data.prepared import PreparedSet, load_prepared


@dataclass(frozen=True)
class Profile:
    """Sizes of one way of running the study. ``quick``: phantoms on CPU; ``paper``: real data on a GPU."""

    name: str
    size: int | None  # prepared image size; None = the paper's size per dataset
    kimg: float  # GAN training length
    batch: int
    n_generate: int  # generated pairs per GAN
    features: str  # FID feature extractor
    train_knobs: tuple[str, ...] = ()  # extra --set knobs for GAN training
    unet_seeds: int = 3
    unet_knobs: dict = field(default_factory=dict)  # UNetConfig fields


PROFILES = {
    "quick": Profile(
        name="quick", size=64, kimg=8.0, batch=32, n_generate=96, features="inception-random",
        train_knobs=("g_filters=32", "d_filters=32", "tick_kimg=0.5", "snapshot_kimg=4.0"),
        unet_seeds=1, unet_knobs={"depth": 3, "width": 16, "max_epochs": 8, "patience": 3},
    ),
    "paper": Profile(
        name="paper", size=None, kimg=1000, batch=64, n_generate=10000, features="inception",
        unet_seeds=3, unet_knobs={},
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; use one of {sorted(PROFILES)}") from None


def prepared_set(dataset: str, profile: str, *, data_root="data", raw_root=None, size=None, seed: int = 0) -> PreparedSet:
    """The prepared set of ``dataset`` at the profile's size (phantoms written first in ``quick``)."""
    from medgan.data import ensure_prepared

    p = get_profile(profile)
    size = size or p.size
    raw = Path(raw_root or Path(data_root) / "raw") / dataset
    out = Path(data_root) / "prepared" / f"{dataset}-{size or 'paper'}"
    return ensure_prepared(dataset, raw, out, profile=profile, seed=seed, size=size)


def run_status(run_dir) -> dict:
    """``medgan.train.run_status``, but ``{"status": "absent"}`` for a run not started yet."""
    from medgan.train import run_status as read_status

    return read_status(run_dir) if (Path(run_dir) / "status.json").is_file() else {"status": "absent"}


def trained_run(real: PreparedSet, gan: str, profile: str, *, runs_root="runs", seed: int = 0,
                kimg: float | None = None, batch: int | None = None, overrides=()) -> Path:
    """Train ``gan`` on ``real`` unless a finished run of that name exists; returns the run folder."""
    from medgan.train import make_config, run_training

    p = get_profile(profile)
    run_dir = Path(runs_root) / f"{real.root.name}-{gan}-{profile}"
    if run_status(run_dir)["status"] == "finished":
        return run_dir
    knobs = list(p.train_knobs) + list(overrides) + [f"seed={seed}"]
    cfg = make_config(out=run_dir, data=real.root, gan=gan, kimg=kimg or p.kimg, batch=batch or p.batch, overrides=knobs)
    return run_training(cfg)


def generated_set(run_dir, profile: str, *, data_root="data", n: int | None = None, seed: int = 0) -> PreparedSet:
    """Sample the profile's number of pairs from a run's ``G_ema`` unless that set exists."""
    from medgan.generate import generate

    out = Path(data_root) / "generated" / Path(run_dir).name
    if not (out / "dataset.json").is_file():
        generate(run_dir, n or get_profile(profile).n_generate, out, seed=seed)
    return load_prepared(out)


def segmentation(train_dirs, test: PreparedSet, out_dir, *, seeds: int, augment: bool = False, cfg=None) -> dict:
    """``medgan.unet.segment`` unless ``out_dir/segment.json`` exists (then that result is returned)."""
    from medgan.unet import segment

    done = Path(out_dir) / "segment.json"
    if done.is_file():
        return json.loads(done.read_text())
    return segment(list(train_dirs), test.root, seeds=seeds, augment=augment, cfg=cfg, out_dir=out_dir)


def table2_frame(dice: dict, fid: dict, domain: dict, *, features: str):
    """Table 2 as a DataFrame: one row per training set (real, real+aug, each GAN, real + each GAN).

    ``dice[name]`` are ``medgan.unet.segment`` results; ``fid[gan]`` / ``domain[gan]`` are
    ``medgan.metrics.evaluate`` results for the GAN rows (the paper reports FID for generated sets only).
    """
    import pandas as pd

    def fmt(mean, ci):
        if mean is None or mean != mean:
            return "n/a"
        return f"{mean:.3f}" if ci is None or ci != ci else f"{mean:.3f} ± {ci:.3f}"

    rows = []
    for name, d in dice.items():
        r, dom = fid.get(name), domain.get(name)
        seeds = len(d["dice"]["mean"].get("values", [])) or "?"
        rows.append({
            "training set": name,
            "kind": d["training_set"],
            f"FID ({features})": round(r["fid"], 2) if r else "",
            "FID 95% CI": f"[{r['fid_ci95'][0]:.1f}, {r['fid_ci95'][1]:.1f}]" if r and r.get("fid_ci95") else "",
            "KID": round(r["kid_mean"], 4) if r and "kid_mean" in r else "",
            "near-copies": r.get("memorisation", {}).get("near_copy_fraction", "") if r else "",
            "domain FID": round(dom["fid"], 2) if dom else "",
            f"Dice (mean of {seeds} seed(s) ± CI95)": fmt(d["dice"]["mean"]["mean"], d["dice"]["mean"].get("ci95")),
        })
    return pd.DataFrame(rows).set_index("training set")
