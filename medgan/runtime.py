"""Where and how code runs: device, mixed precision, seeds, determinism, RNG capture, memory, progress.

One helper per job; every layer above uses these instead of its own copy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan import __version__
from medgan.errors import ConfigError


# ---------------------------------------------------------------------------------------------
# device and precision
# ---------------------------------------------------------------------------------------------
def resolve_device(name: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``/None -> CUDA when present, else CPU; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``."""
    if isinstance(name, torch.device):
        device = name
    else:
        if name in (None, "auto"):
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(name)!r} but CUDA is not available on this machine (use device=auto or cpu)")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def device_name(device: torch.device) -> str:
    """The card's name on CUDA; the CPU and its thread count otherwise (recorded in every run)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA for ``auto``; ``bf16`` forces it (CPU too); ``off`` is fp32 (None)."""
    if amp not in ("auto", "bf16", "off"):
        raise ConfigError(f"amp={amp!r} is not one of ['auto', 'bf16', 'off']")
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ---------------------------------------------------------------------------------------------
# seeds, determinism, RNG state
# ---------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA's with torch's)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the duration of a run, restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    bench = torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = bench


def capture_rng() -> dict[str, Any]:
    """Every global RNG state as tensors/primitives (so checkpoints load with ``weights_only=True``)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Side work (sample grids, metric hooks) must not shift the caller's random streams."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) on Linux


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MiB since the last reset, what was measured): CUDA max_memory_allocated, else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    peak = _proc_status_mb("VmHWM")
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak, "cpu_peak_rss"


def rss_mb() -> float:
    """The process' current resident set in MiB (0 where ``/proc`` is absent)."""
    return _proc_status_mb("VmRSS") or 0.0


def _proc_status_mb(field: str) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------
def progress_disabled(progress: bool | None) -> bool | None:
    """The one progress rule, as tqdm's ``disable``: None = auto (a bar only on a terminal), True = on,
    False = off."""
    return None if progress is None else not progress


def progress_bar(iterable=None, *, progress: bool | None = None, **kw):
    """``tqdm`` under the progress rule of ``progress_disabled``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=progress_disabled(progress), **kw)


# ---------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<medgan version>+<12 hex>``: a hash of every source file of the installed package.

    Runs, generated sets and U-Net results record it, so a result made by other code is never reused as
    if it were current (``medgan.experiments``) — the version number alone does not change with an edit.
    """
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"
