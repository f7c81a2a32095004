"""The experiment recipes the notebooks share: profiles, and "make it unless it is already there" steps.

A notebook says *what* (dataset, GAN, profile); this module turns that into the folders the data flow uses:

    {data_root}/raw/<dataset>                         raw layout (phantoms written on demand in `quick`)
    {data_root}/prepared/<dataset>-<size>             prepared set
    {runs_root}/<dataset>-<size>-<gan>-<profile>      GAN run folder
    {data_root}/generated/<run name>                  generated prepared set

Each step reuses a result only when it is *current*: made by this very code (``medgan.runtime.code_version``)
from this very config and inputs (see ``run_staleness``, ``generated_staleness``, ``segmentation_staleness``).
A stale result is never deleted: it is renamed ``<name>.stale-<its code version or hash>`` next to where it
was, and the step is redone into the original name. So rebuilding the book does not retrain, and a code or
config change is never hidden by an old artefact.

The second half holds what the notebooks print: short, rounded, path-free text that nbval compares.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from medgan.config import PROFILES, Profile, get_profile  # noqa: F401  (the notebooks read profiles here)
from medgan.data import ensure_prepared
from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import RunLockedError
from medgan.generate import generate
from medgan.io import jsonable, read_json_dict, sha256_files, write_json
from medgan.runtime import code_version
from medgan.segmentation import UNetConfig, segment
from medgan.sweep.analysis import BEST_FILE, best_overrides
from medgan.sweep.study import SweepConfig, run_sweep
from medgan.training import make_config, run_training
from medgan.training import run_status as read_status
from medgan.training.runs import lock_holder

REUSABLE_RUN_STATUS = ("finished", "diverged")  # a diverged run is a result too (status.json says why)
INPUTS_FILE = "inputs.json"  # next to segment.json: content hashes of the sets that U-Net result used


def prepared_set(dataset: str, profile: str, *, data_root="data", raw_root=None, size=None, seed: int = 0) -> PreparedSet:
    """The prepared set of ``dataset`` at the profile's size (phantoms written first in ``quick``)."""
    p = get_profile(profile)
    size = size or p.size
    raw = Path(raw_root or Path(data_root) / "raw") / dataset
    out = Path(data_root) / "prepared" / f"{dataset}-{size or 'paper'}"
    return ensure_prepared(dataset, raw, out, profile=profile, seed=seed, size=size)


def study_set(dataset: str, profile: str, *, data_root="data", raw_root=None, seed: int = 0) -> PreparedSet:
    """The prepared set Table 2 and the notebooks that draw on its runs (04 Fig 5, 06 Fig 6) use: the profile's
    ``table2_size`` (quick: 32², the size of its sweep), else its ``size``."""
    p = get_profile(profile)
    return prepared_set(dataset, profile, data_root=data_root, raw_root=raw_root, size=p.table2_size or p.size,
                        seed=seed)


def expected_source(profile: str) -> str:
    """The ``source`` every prepared set of ``profile`` must record: ``phantom`` (quick) or ``raw`` (paper)."""
    return "phantom" if get_profile(profile).phantoms else "raw"


def run_status(run_dir) -> dict:
    """``medgan.training.run_status``, but ``{"status": "absent"}`` for a run not started yet."""
    return read_status(run_dir) if (Path(run_dir) / "status.json").is_file() else {"status": "absent"}


# ---------------------------------------------------------------------------------------------
# reuse: a result is reused only when current; a stale one is moved aside, never deleted
# ---------------------------------------------------------------------------------------------
def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def move_aside(path, tag: str | None) -> Path:
    """Rename ``path`` to ``<name>.stale-<tag>`` (``-2``, ``-3``... when taken); returns the new path."""
    path = Path(path)
    tag = "".join(c if c.isalnum() or c in ".+-_" else "_" for c in str(tag or "unknown"))
    dest = path.with_name(f"{path.name}.stale-{tag}")
    i = 2
    while dest.exists():
        dest = path.with_name(f"{path.name}.stale-{tag}-{i}")
        i += 1
    path.rename(dest)
    return dest


def _stale_tag(recorded: dict) -> str:
    """What names a stale folder: the code version that made it when that is not this one ("unknown" when
    it recorded none), else the config hash it recorded (else that same code version)."""
    old = recorded.get("code_version")
    if old != code_version():
        return old or "unknown"
    return recorded.get("config_hash") or old


def _set_aside(path: Path, reason: str, tag: str) -> None:
    if not _is_empty(path):
        dest = move_aside(path, tag)
        where = f"{path.parent.name}/{path.name}"
        print(f"{where}: not reused ({reason}); kept as {path.parent.name}/{dest.name}")


def run_staleness(run_dir, cfg, real: PreparedSet | None = None) -> str | None:
    """Why the run in ``run_dir`` may not stand for training ``cfg`` now (None: reuse it).

    Current = status finished (or diverged), ``config.json``'s ``config_hash`` == ``cfg.hash()`` and its
    ``code_version`` == ``code_version()``, trained for ``cfg.kimg`` (left out of the hash, as a resume may
    raise it) and on the prepared set ``real`` (its content hash; ``data`` is a path, left out of the hash).
    """
    run_dir = Path(run_dir)
    status = run_status(run_dir)["status"]
    if status not in REUSABLE_RUN_STATUS:
        return f"status {status}"
    info = read_json_dict(run_dir / "config.json")
    if info is None:
        return "no readable config.json"
    if info.get("config_hash") != cfg.hash():
        return f"config hash {info.get('config_hash')} != {cfg.hash()}"
    if info.get("code_version") != code_version():
        return f"code version {info.get('code_version')} != {code_version()}"
    kimg = (info.get("config") or {}).get("kimg")
    if kimg != cfg.kimg:
        return f"kimg {kimg} != {cfg.kimg}"
    recorded = (info.get("dataset") or {}).get("content_sha256")
    if real is not None and recorded != real.content_sha256:
        return f"trained on other data (content {str(recorded)[:12]} != {real.content_sha256[:12]})"
    return None


def trained_run(real: PreparedSet, gan: str, profile: str, *, runs_root="runs", seed: int = 0,
                kimg: float | None = None, batch: int | None = None, overrides=(), progress: bool | None = None,
                suffix: str = "") -> Path:
    """Train ``gan`` on ``real`` unless a current run of that name exists (``run_staleness``); returns the folder.

    A stale run is renamed ``<name>.stale-<its code version or config hash>`` and the run is trained anew;
    an interrupted one (its process killed) of this code and config is resumed; a live one raises.
    """
    p = get_profile(profile)
    run_dir = Path(runs_root) / f"{real.root.name}-{gan}-{profile}{suffix}"
    knobs = list(p.train_knobs) + list(p.gan_knobs.get(gan, ())) + list(overrides) + [f"seed={seed}"]
    cfg = make_config(out=run_dir, data=real.root, gan=gan, kimg=kimg or p.kimg, batch=batch or p.batch, overrides=knobs)
    # the sample grid draws distinct training masks for a conditional G: no more cells than the set has slices
    # (IDRiD's quick split holds 6); grid is resume-free, so this never changes which run is reused
    cfg = dataclasses.replace(cfg, grid=min(cfg.grid, len(real.indices(cfg.split))))
    reason = run_staleness(run_dir, cfg, real)
    if reason is None:
        return run_dir
    if reason == "status running":  # a live process trains it: never move its folder away under it
        raise RunLockedError(f"{run_dir} is being trained by {lock_holder(run_dir)}: wait for it or stop it")
    if reason == "status interrupted" and _resumable(run_dir, cfg, real):
        return run_training(cfg, resume=True, progress=progress)  # a killed run continues where it stopped
    _set_aside(run_dir, reason, _stale_tag(read_json_dict(run_dir / "config.json") or {}))
    return run_training(cfg, progress=progress)


def _resumable(run_dir: Path, cfg, real: PreparedSet) -> bool:
    """An interrupted run continues (rather than starting over) when this code made it from ``cfg`` on
    ``real`` and it has not gone past ``cfg.kimg``."""
    info = read_json_dict(run_dir / "config.json") or {}
    return (info.get("config_hash") == cfg.hash() and info.get("code_version") == code_version()
            and (info.get("dataset") or {}).get("content_sha256") == real.content_sha256
            and float(run_status(run_dir).get("kimg") or 0.0) <= cfg.kimg)


def generated_staleness(out_dir, run_dir, *, n: int, seed: int) -> str | None:
    """Why the generated set in ``out_dir`` may not stand for sampling ``n`` pairs from ``run_dir`` now.

    Current = its ``dataset.json`` records the run's current ``config_hash`` and this ``code_version()``,
    the same ``n`` and ``seed``, and the hash of the checkpoint it was sampled from still matches that file.
    """
    meta = read_json_dict(Path(out_dir) / "dataset.json")
    if meta is None:
        return "absent"
    run_hash = (read_json_dict(Path(run_dir) / "config.json") or {}).get("config_hash")
    if run_hash is None or meta.get("config_hash") != run_hash:
        return f"config hash {meta.get('config_hash')} != the run's {run_hash}"
    if meta.get("code_version") != code_version():
        return f"code version {meta.get('code_version')} != {code_version()}"
    if (meta.get("counts") or {}).get("train") != n or meta.get("seed") != seed:
        return f"{(meta.get('counts') or {}).get('train')} pairs with seed {meta.get('seed')}, not {n} with seed {seed}"
    ckpt = Path(run_dir) / str(meta.get("checkpoint"))
    if not ckpt.is_file() or sha256_files([ckpt]) != meta.get("inputs_sha256"):
        return f"{ckpt.name} of the run is not the checkpoint it was sampled from"
    return None


def generated_set(run_dir, profile: str, *, data_root="data", n: int | None = None, seed: int = 0,
                  progress: bool | None = None) -> PreparedSet:
    """Sample the profile's number of pairs from a run's ``G_ema`` unless that set exists and is current."""
    out = Path(data_root) / "generated" / Path(run_dir).name
    n = n or get_profile(profile).n_generate
    reason = generated_staleness(out, run_dir, n=n, seed=seed)
    if reason is not None:
        _set_aside(out, reason, _stale_tag(read_json_dict(out / "dataset.json") or {}))
        generate(run_dir, n, out, seed=seed, progress=progress)
    return load_prepared(out)


def _segment_inputs(train_dirs, test: PreparedSet) -> dict:
    return {"code_version": code_version(),
            "train_content_sha256": [load_prepared(d).content_sha256 for d in train_dirs],
            "test_content_sha256": test.content_sha256}


def segmentation_staleness(out_dir, train_dirs, test: PreparedSet, *, seeds: int, cfg: UNetConfig) -> str | None:
    """Why ``out_dir/segment.json`` may not stand for ``segment(train_dirs, test, seeds, cfg)`` now.

    Current = its top-level ``code_version`` (missing: stale) is this ``code_version()``, it was made with
    ``seeds`` seeds and the U-Net config ``cfg``, and ``inputs.json`` next to it records the content hashes
    of the same training and test sets (a regenerated set changes them).
    """
    out_dir = Path(out_dir)
    result = read_json_dict(out_dir / "segment.json")
    if result is None:
        return "absent"
    if result.get("code_version") != code_version():
        return f"code version {result.get('code_version')} != {code_version()}"
    if result.get("n_seeds") != seeds:
        return f"{result.get('n_seeds')} seed(s), not {seeds}"
    if result.get("config") != jsonable(cfg.to_dict()):  # segment.json holds the config as write_json wrote it
        return "another U-Net config"
    if read_json_dict(out_dir / INPUTS_FILE) != _segment_inputs(train_dirs, test):
        return "other training or test sets"
    return None


def segmentation(train_dirs, test: PreparedSet, out_dir, *, seeds: int, augment: bool = False, cfg=None,
                 progress: bool | None = None) -> dict:
    """``medgan.segmentation.segment`` unless ``out_dir/segment.json`` is current (then that result is returned)."""
    train_dirs, out_dir = list(train_dirs), Path(out_dir)
    cfg = cfg or UNetConfig()
    if augment:
        cfg = dataclasses.replace(cfg, augment=True)
    reason = segmentation_staleness(out_dir, train_dirs, test, seeds=seeds, cfg=cfg)
    if reason is None:
        return json.loads((out_dir / "segment.json").read_text())
    _set_aside(out_dir, reason, _stale_tag(read_json_dict(out_dir / "segment.json") or {}))
    result = segment(train_dirs, test.root, seeds=seeds, augment=augment, cfg=cfg, out_dir=out_dir, progress=progress)
    write_json(out_dir / INPUTS_FILE, _segment_inputs(train_dirs, test))
    return result


def swept(real: PreparedSet, gan: str, profile: str, *, runs_root="runs", seed: int = 0, trials: int | None = None,
          storage: str = "", progress: bool | None = None):
    """The profile's Table 1 sweep of ``gan`` on ``real`` (``medgan.sweep``), run or continued until it holds its
    trials; returns its trials table. The folder is ``{runs_root}/sweep-<prepared set>-<profile>/<gan>`` (its SQLite
    study unless ``storage`` is given). A finished sweep made by other code or settings is moved aside (stale) and
    run anew; an unfinished one (a killed notebook) is continued: Optuna re-queues the trial that was running."""
    p = get_profile(profile)
    out = Path(runs_root) / f"sweep-{real.root.name}-{profile}" / gan
    cfg = SweepConfig(data=str(real.root), gan=gan, out=str(out), trials=trials or p.sweep_trials, kimg=p.sweep_kimg,
                      batch=p.sweep_batch, seed=seed, storage=storage, study=f"{real.root.name}-{gan}",
                      metric="fid", metric_features=p.features, metric_n=p.sweep_metric_n, fixed=p.sweep_knobs,
                      restrict=p.sweep_restrict, pruner=p.sweep_pruner)
    done = read_json_dict(out / "sweep.json")
    if done is not None and not storage:
        stale = done.get("code_version") != code_version() or done.get("config") != jsonable(
            {**dataclasses.asdict(cfg), "fixed": list(cfg.fixed), "restrict": list(cfg.restrict)})
        if stale:
            _set_aside(out, "made by other code or settings", done.get("code_version") or "unknown")
    return run_sweep(cfg, progress=progress)


def sweep_best_file(profile: str, *, runs_root="runs") -> Path:
    """Where notebook 03 writes the best configuration per dataset × GAN and notebook 05 reads it."""
    return Path(runs_root) / f"{profile}-{BEST_FILE}"


def table2_kimg(profile: str, gan: str) -> float:
    """How long Table 2 trains ``gan`` in ``profile``: its ``table2_gan_kimg`` entry, else ``table2_kimg``, else
    ``kimg``."""
    p = get_profile(profile)
    return float(p.table2_gan_kimg.get(gan, p.table2_kimg or p.kimg))


def table2_run(real: PreparedSet, gan: str, profile: str, *, runs_root="runs", seed: int = 0,
               progress: bool | None = None) -> tuple[Path, list[str]]:
    """The run Table 2 (and Figs 5/6) use for ``gan``: trained with its swept best configuration from notebook 03
    (``<name>-swept``) when the profile says so (``table2_swept``) and the sweep holds one for this dataset, else with
    the GAN's defaults (SPADE and StyleGAN2, which the paper did not sweep either, no sweep yet, or the quick profile).
    Returns (run folder, the knobs applied)."""
    p = get_profile(profile)
    best_file = sweep_best_file(profile, runs_root=runs_root)
    knobs = best_overrides(best_file, real.name, gan) if p.table2_swept and best_file.is_file() else []
    run_dir = trained_run(real, gan, profile, runs_root=runs_root, seed=seed, kimg=table2_kimg(profile, gan),
                          batch=p.table2_batch or p.batch, overrides=knobs, progress=progress,
                          suffix="-swept" if knobs else "")
    return run_dir, knobs


# ---------------------------------------------------------------------------------------------
# what the notebooks print (nbval compares it): rounded, no paths, no timings
# ---------------------------------------------------------------------------------------------
def _num(x: Any, fmt: str = ".4g") -> str:
    """A number as stable text: ``fmt`` (4 significant digits by default), ``n/a`` for None/NaN/inf."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, fmt) if isinstance(x, float) else str(x)


def run_summary(run_dir) -> str:
    """``hinge on acdc (phantom data, 64², 116 training slices): finished at kimg 8.000, batch 32, seed 0``."""
    info = read_json_dict(Path(run_dir) / "config.json") or {}
    status, cfg, ds = run_status(run_dir), info.get("config") or {}, info.get("dataset") or {}
    reason = f" ({status['reason']})" if status.get("reason") else ""
    return (f"{info.get('gan')} on {ds.get('name')} ({ds.get('source')} data, {ds.get('image_size')}², "
            f"{ds.get('n_train')} training slices): {status['status']} at kimg {_num(status.get('kimg'), '.3f')}"
            f"{reason}, batch {cfg.get('batch')}, seed {cfg.get('seed')}")


METRIC_KEYS = ("features", "n_real", "n_gen", "fid", "fid_ci95", "rank_deficient", "floor.fid", "kid_mean", "kid_std",
               "floor.kid_mean", "precision", "recall", "density", "coverage", "memorisation.near_copy_fraction",
               "memorisation.p_value", "memorisation.memorised")


def metrics_summary(result: dict, keys=METRIC_KEYS) -> str:
    """The entries ``keys`` (dotted = nested) of a ``medgan.metrics.evaluate`` result, one a line, numbers to
    4 significant digits (no paths, no timings: what nbval compares)."""
    lines = []
    for key in keys:
        v: Any = result
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = "[" + ", ".join(_num(float(x)) for x in v) + "]"
        lines.append(f"{key:<34} {_num(v)}")
    return "\n".join(lines)


def features_summary(feats: dict) -> str:
    """``inception-random / hinge: real 116 × 2048, generated 96 × 2048`` (the U-Net's path left out)."""
    lines = []
    for (ext, gan), (a, b) in feats.items():
        name = "unet (real-data U-Net)" if ext.startswith("unet:") else ext
        lines.append(f"{name} / {gan}: real {a.shape[0]} × {a.shape[1]}, generated {b.shape[0]} × {b.shape[1]}")
    return "\n".join(lines)
