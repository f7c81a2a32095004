"""The run folder: the contract every later tool reads, and the checkpoints in it.

    config.json           {"config": TrainConfig, "config_hash", "dataset": {...}, "torch", "device", ...}
    status.json           {"status": running|finished|diverged|failed, "reason", "kimg"}
    stats.jsonl           one line per tick: kimg, every loss term, D_real/D_fake, grad norms, img/s, memory
    samples-<kimg>.png    G_ema on fixed z: image and coloured mask side by side
    checkpoint-last.pt    G, D, G_ema, optimisers, RNGs, data order, counters (torch.load(weights_only=True))
    metric-<name>.jsonl   one line per evaluation of METRIC_HOOKS[name]
    checkpoint-best-<name>.pt   the checkpoint with the lowest value of that metric so far

A checkpoint stands alone: besides the training state it carries the config (``config``), the data
dimensions G was built for (``dims``) and the dataset description (``dataset``), so a generator can be
rebuilt from the file only (``medgan.generate.load_generator``). Checkpoints written before these keys
existed are read with the run folder's ``config.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from medgan.config import TrainConfig
from medgan.errors import CheckpointError, InputNotFoundError, UserError
from medgan.io import atomic_torch_save, read_jsonl, write_json

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "config_hash", "G", "D", "G_ema", "opt_G", "opt_D", "rng", "data", "step", "nimg")
STATUSES = ("running", "finished", "diverged", "failed")


# ---------------------------------------------------------------------------------------------
# config.json, status.json, stats.jsonl
# ---------------------------------------------------------------------------------------------
def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The whole ``config.json`` of a run (config, hash, dataset, torch version, device)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InputNotFoundError(f"{path} is missing: {run_dir} is not a training run folder")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(info, dict) or "config" not in info:
        raise UserError(f"{path} has no 'config' entry: not written by medgan train")
    return info


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The ``TrainConfig`` stored in ``run_dir/config.json``."""
    return TrainConfig.from_dict(read_run_info(run_dir)["config"])


def write_status(run_dir: Path, status: str, reason: str, kimg: float) -> None:
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    write_json(run_dir / "status.json", {"status": status, "reason": reason, "kimg": round(kimg, 6)})


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``status.json`` of a run as a dict."""
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        raise InputNotFoundError(f"{path} is missing: {run_dir} is not a training run folder")
    return json.loads(path.read_text())


def read_stats(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of ``stats.jsonl`` (``[]`` before the first tick)."""
    return read_jsonl(Path(run_dir) / "stats.jsonl")


def dataset_info(ps, n_train: int) -> dict[str, Any]:
    """What a run records about the prepared set it trains on (``config.json`` and every checkpoint)."""
    m = ps.meta
    return {"root": str(ps.root), "name": m["name"], "modality": m["modality"], "channels": ps.channels,
            "labels": m["labels"], "image_size": ps.image_size, "source": m["source"],
            "normalisation": m["normalisation"], "content_sha256": ps.content_sha256, "n_train": n_train}


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace`` (never a half file)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a run checkpoint with ``weights_only=True``; one ``CheckpointError`` for every way it can be broken."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: nothing to resume from")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the checkpoint is unusable")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors come in many types
        raise CheckpointError(f"{path} is corrupt or not a medgan checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a medgan checkpoint (holds a {type(state).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: not a medgan training checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, this medgan reads {CHECKPOINT_FORMAT}")
    return state


def checkpoint_path(run_dir: str | os.PathLike, checkpoint: str = "last") -> Path:
    """``"last"`` -> checkpoint-last.pt, ``"best-fid"`` -> checkpoint-best-fid.pt, else a path."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / f"checkpoint-{checkpoint}.pt", Path(checkpoint)):
        if candidate.is_file():
            return candidate
    known = sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))
    raise InputNotFoundError(f"no checkpoint {checkpoint!r} in {run_dir} (found: {', '.join(known) or 'none'})")


def checkpoint_run_info(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``config.json``-like dict a checkpoint carries (``config``, ``dataset``, ``config_hash``, ``gan``).

    Checkpoints written before they stood alone lack it: then the run folder's ``config.json`` beside
    the file is read.
    """
    if "config" in state and "dataset" in state:
        return {"config": state["config"], "dataset": state["dataset"], "config_hash": state["config_hash"],
                "gan": state["config"].get("gan", "")}
    return read_run_info(path.parent)
