"""The run folder: the contract every later tool reads, and the checkpoints in it.

    config.json           {"config": TrainConfig, "config_hash", "dataset": {...}, "torch", "device", ...}
    status.json           {"status": running|finished|diverged|failed, "reason", "kimg"}; read back as
                          "interrupted" when it says running but no process holds train.lock
    train.lock            fcntl.flock'ed by the one process writing the folder; holds its pid, host, start
    stats.jsonl           one line per tick: kimg, every loss term, D_real/D_fake, grad norms, img/s, memory
    samples-<kimg>.png    G_ema on fixed z: image and coloured mask side by side
    checkpoint-last.pt    G, D, G_ema, optimisers, RNGs, data order, counters (torch.load(weights_only=True))
    checkpoint-prev.pt    the snapshot before it (a resume falls back to it when the newest is damaged)
    metric-<name>.jsonl   one line per evaluation of METRIC_HOOKS[name]
    checkpoint-best-<name>.pt   the checkpoint with the lowest value of that metric so far

A checkpoint stands alone: besides the training state it carries the config (``config``), the data
dimensions G was built for (``dims``) and the dataset description (``dataset``), so a generator can be
rebuilt from the file only (``medgan.generate.load_generator``). Checkpoints written before these keys
existed are read with the run folder's ``config.json``.

Kill anywhere, lose nothing: every file is written atomically (``medgan.io``), ``checkpoint-last.pt`` is
replaced only after its predecessor got the second name ``checkpoint-prev.pt``, and a resume cuts
``stats.jsonl``/``metric-*.jsonl`` back to the step of the checkpoint it starts from
(``trim_run_logs``), so the lines of the steps it redoes are neither duplicated nor lost.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medgan.config import TrainConfig
from medgan.errors import CheckpointError, InputNotFoundError, RunLockedError, UserError
from medgan.io import TEMP_SUFFIX, atomic_torch_save, atomic_write_text, read_jsonl, write_json

try:
    import fcntl
except ImportError:  # not POSIX: no lock (a second writer is not detected there)
    fcntl = None

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "config_hash", "G", "D", "G_ema", "opt_G", "opt_D", "rng", "data", "step", "nimg")
STATUSES = ("running", "finished", "diverged", "failed")  # what status.json holds
RUN_STATES = (*STATUSES, "interrupted")  # what run_status reports
LAST_CHECKPOINT, PREVIOUS_CHECKPOINT = "checkpoint-last.pt", "checkpoint-prev.pt"
LOCK_NAME = "train.lock"
LOG_GLOBS = ("stats.jsonl", "metric-*.jsonl")  # the per-tick logs a resume cuts back to its checkpoint


def warn(message: str) -> None:
    """One line on stderr: what a resume found and did about it (a damaged checkpoint, lines redone)."""
    print(f"medgan: warning: {message}", file=sys.stderr, flush=True)


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
    """``status.json`` of a run as a dict; ``"interrupted"`` when it says running but its process is gone."""
    path = Path(run_dir) / "status.json"
    if not path.is_file():
        raise InputNotFoundError(f"{path} is missing: {run_dir} is not a training run folder")
    status = json.loads(path.read_text())
    if status.get("status") == "running" and lock_held(run_dir) is False:
        status = {**status, "status": "interrupted",
                  "reason": f"no process holds {LOCK_NAME} (last holder: {lock_holder(run_dir)}); continue it with "
                            f"medgan train --out {run_dir} --resume"}
    return status


# ---------------------------------------------------------------------------------------------
# one writer per run folder
# ---------------------------------------------------------------------------------------------
def lock_holder(run_dir: str | os.PathLike) -> str:
    """``pid 123 on host h since 2026-01-01T12:00:00`` from ``train.lock`` (what its last holder wrote)."""
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text())
        return f"pid {info['pid']} on host {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


def lock_held(run_dir: str | os.PathLike) -> bool | None:
    """Whether a live process holds the run's lock (None: no locking on this platform)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared probe: conflicts only with a writer's LOCK_EX
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


class RunLock:
    """``fcntl.flock(LOCK_EX)`` on ``run_dir/train.lock``, held by the one process that writes the folder.

    The kernel drops the lock when its process dies, however it dies (SIGKILL, OOM, a lost node's NFS
    client aside), so a status.json that says ``running`` with nobody holding the lock is an interrupted run.
    The file is never deleted (deleting it would let two processes lock two different files).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, tries: int = 5) -> None:
        """Take the lock or raise ``RunLockedError`` naming the holder (a few short retries let a
        ``run_status`` probe pass)."""
        if fcntl is None or self.fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return
            except BlockingIOError:
                time.sleep(0.05 * (attempt + 1))
        os.close(fd)
        raise RunLockedError(f"{self.run_dir} is being written by {lock_holder(self.run_dir)} ({LOCK_NAME}): "
                             "one writer per run folder; wait for it to end or stop it first")

    def announce(self) -> None:
        """Write who holds the lock into the lock file (read by ``lock_holder``)."""
        if self.fd is None:
            return
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
        try:  # the lock file is not a result: a full disk must not stop a run here
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, info.encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closes the file description: the lock goes with it
            self.fd = None


def only_debris(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds nothing but a lock file and temp files (a run killed before config.json)."""
    return all(p.name == LOCK_NAME or (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))
               for p in Path(run_dir).iterdir())


def trim_run_logs(run_dir: str | os.PathLike, step: int) -> list[str]:
    """Cut ``stats.jsonl`` and ``metric-*.jsonl`` back to the lines of steps <= ``step`` (and drop a torn last
    line): the steps after ``step`` are redone by the resume and log their lines again. Returns what was cut."""
    cut = []
    for pattern in LOG_GLOBS:
        for path in sorted(Path(run_dir).glob(pattern)):
            text = path.read_text()
            lines = text.splitlines(keepends=True)
            keep = []
            for line in lines:
                try:
                    if line.endswith("\n") and int(json.loads(line).get("step", 0)) <= step:
                        keep.append(line)
                except (ValueError, AttributeError, TypeError):
                    pass
            if len(keep) != len(lines):
                atomic_write_text(path, "".join(keep))
                cut.append(f"{path.name}: {len(lines) - len(keep)} line(s)")
    return cut


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
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], *, previous: str | os.PathLike | None = None) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace`` (never a half file).

    ``previous``: the file now at ``path`` gets this name too before it is replaced (the last two are kept).
    """
    atomic_torch_save(state, path, previous=previous, durable=True)


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


def load_resume_checkpoint(run_dir: str | os.PathLike, *, none_ok: bool = False) -> tuple[dict[str, Any] | None, Path | None]:
    """(state, path) of the newest loadable checkpoint: ``checkpoint-last.pt``, else ``checkpoint-prev.pt``
    (the damaged newest is named in a one-line warning). Both broken: one ``CheckpointError`` naming both.
    Neither present: ``(None, None)`` if ``none_ok`` (a run killed before its first snapshot), else the error.
    """
    run_dir = Path(run_dir)
    last, prev = run_dir / LAST_CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    try:
        return load_checkpoint(last), last
    except CheckpointError as e:
        last_error = e
    if not prev.exists():
        if none_ok and not last.exists():
            warn(f"{run_dir} holds no checkpoint yet (its process was stopped before the first snapshot): "
                 "training restarts from kimg 0")
            return None, None
        raise last_error
    try:
        state = load_checkpoint(prev)
    except CheckpointError as e:
        raise CheckpointError(f"cannot resume {run_dir}: {last_error}; and {e}") from None
    warn(f"{last_error}: resuming from {PREVIOUS_CHECKPOINT} (kimg {state['nimg'] / 1000:.3f}) instead")
    return state, prev


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
