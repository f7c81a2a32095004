"""Files medgan writes: atomic (temp file + ``os.replace``, whole or absent) and strict JSON.

``jsonable`` is the one JSON sanitiser: numpy scalars/arrays become Python values, non-finite floats
become ``None`` (strict JSON has no NaN), paths become strings, tuples lists.

Every file medgan writes under its final name goes through ``atomic_write`` (or one of its wrappers) or
``append_jsonl``; ``tests/test_atomic_writes.py`` walks the package and fails on any other write. A temp
file is called ``.<final name>.<random>.tmp`` in the same folder; it never outlives a failed write, and
after a SIGKILL a run folder's owner removes it (``remove_temp_files``).

A full disk (``ENOSPC``, or ``EDQUOT`` for a quota) raises ``DiskFullError``: the temp file is removed,
the file under the final name is the previous version, an append is cut back to its last whole line.

Fault injection (tests): ``$MEDGAN_FAULT`` = comma-separated rules ``POINT[@GLOB]:N[:ACTION]``: the N-th
time this process reaches ``POINT`` (for a file whose name matches ``GLOB``, when given) it SIGKILLs
itself (``kill``, the default) or raises ``OSError(ENOSPC)`` (``enospc``). The points (``FAULT_POINTS``):

    write.partial      inside an atomic write: the temp file holds part of the new bytes
    write.complete     the temp file is complete (fsynced for checkpoints), not yet renamed
    checkpoint.rotated a checkpoint's previous version is linked to its -prev name, the new one not renamed
    append.partial     half of a JSON line has been appended (stats.jsonl, metric-*.jsonl)
    append.complete    the line is appended
    step               between two training steps (medgan.training.loop)
    metric             inside a metric evaluation, when the hook draws its samples (medgan.training.loop)

e.g. ``MEDGAN_FAULT=write.partial@checkpoint-last.pt:2`` or ``MEDGAN_FAULT=append.partial@stats.jsonl:1:enospc``.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import io
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from medgan.errors import DiskFullError, UserError

FAULT_ENV = "MEDGAN_FAULT"
FAULT_POINTS = ("write.partial", "write.complete", "checkpoint.rotated", "append.partial", "append.complete",
                "step", "metric")
FAULT_ACTIONS = ("kill", "enospc")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
TEMP_SUFFIX = ".tmp"
_CHUNK = 1 << 24  # checkpoint bytes are written in 16 MiB pieces


# ---------------------------------------------------------------------------------------------
# fault injection
# ---------------------------------------------------------------------------------------------
_faults: dict[str, Any] = {"spec": None, "rules": [], "counts": []}


def _parse_faults(spec: str) -> list[tuple[str, str | None, int, str]]:
    rules = []
    for text in filter(None, (s.strip() for s in spec.split(","))):
        parts = text.split(":")
        point, _, glob = parts[0].partition("@")
        ok = len(parts) in (2, 3) and point in FAULT_POINTS and parts[1].isdigit() and int(parts[1]) > 0
        action = parts[2] if len(parts) == 3 else "kill"
        if not ok or action not in FAULT_ACTIONS:
            raise UserError(f"{FAULT_ENV}={spec!r}: {text!r} is not POINT[@GLOB]:N[:ACTION] with POINT one of "
                            f"{list(FAULT_POINTS)}, N >= 1 and ACTION one of {list(FAULT_ACTIONS)}")
        rules.append((point, glob or None, int(parts[1]), action))
    return rules


def fault_point(point: str, path: str | os.PathLike | None = None) -> None:
    """Count a pass through ``point`` (for the file ``path``); SIGKILL or raise when ``$MEDGAN_FAULT`` says so.

    Costs one environment lookup when nothing is armed.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        _faults["spec"] = None  # disarmed: a later spec, even the same text, counts from zero
        return
    if spec != _faults["spec"]:  # a new spec (tests re-arm in-process) starts the counts again
        rules = _parse_faults(spec)
        _faults.update(spec=spec, rules=rules, counts=[0] * len(rules))
    name = Path(path).name if path is not None else ""
    for i, (rule_point, glob, n, action) in enumerate(_faults["rules"]):
        if rule_point != point or (glob is not None and not fnmatch.fnmatchcase(name, glob)):
            continue
        _faults["counts"][i] += 1
        if _faults["counts"][i] == n:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected by {FAULT_ENV})", os.fspath(path or point))


def reset_faults() -> None:
    """Start every count of ``$MEDGAN_FAULT`` from zero again (tests that arm the same spec twice)."""
    _faults.update(spec=None, rules=[], counts=[])


def fault_armed(point: str, path: str | os.PathLike | None = None) -> bool:
    """Whether the next pass through ``point`` for ``path`` fires (lets a writer leave a partial file first)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return False
    rules = _parse_faults(spec) if spec != _faults["spec"] else _faults["rules"]
    counts = [0] * len(rules) if spec != _faults["spec"] else _faults["counts"]
    name = Path(path).name if path is not None else ""
    return any(p == point and (g is None or fnmatch.fnmatchcase(name, g)) and counts[i] + 1 == n
               for i, (p, g, n, _a) in enumerate(rules))


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------
def disk_full(e: OSError, path: str | os.PathLike, kept: str) -> DiskFullError:
    """The one-line ``DiskFullError`` for an ``ENOSPC``/``EDQUOT`` ``e`` while writing ``path``."""
    err = DiskFullError(f"disk full while writing {path} ({e.strerror or e}); {kept}; medgan deleted nothing "
                        "to make room")
    err.errno = e.errno
    return err


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, previous: str | os.PathLike | None = None,
                 durable: bool = False, streams: bool = False) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    ``previous``: first give the current ``path`` (if any) this second name too (a hard link, a copy where
    links are not supported), so a reader always finds a whole file under both names. ``durable``: fsync the
    file and the folder (a checkpoint must survive a power cut, not only a killed process). ``streams``:
    ``write`` passes the ``write.partial`` point itself, in the middle of its bytes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if not streams:
            if fault_armed("write.partial", path):  # what a kill in the middle of write() leaves behind
                os.truncate(tmp, os.path.getsize(tmp) // 2)
            fault_point("write.partial", path)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        fault_point("write.complete", path)
        if previous is not None and path.is_file():
            _link_over(path, Path(previous))
            fault_point("checkpoint.rotated", path)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            kept = f"the previous {path.name} is kept" if path.is_file() else f"no {path.name} was written"
            raise disk_full(e, path, kept) from None
        raise
    return path


def _link_over(src: Path, dest: Path) -> None:
    """``dest`` becomes another name of ``src``'s bytes, atomically (readers see the old or the new ``dest``)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TEMP_SUFFIX, dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise
            shutil.copyfile(src, tmp)  # a filesystem without hard links: a copy keeps the guarantee
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview, *, previous=None, durable: bool = False) -> Path:
    """``data`` to ``path`` in 16 MiB pieces (so ``write.partial`` stops it in the middle) through a temp file."""

    def write(tmp: str) -> None:
        view = memoryview(data)
        with open(tmp, "wb") as f:
            for start in range(0, max(len(view), 1), _CHUNK):
                piece = view[start : start + _CHUNK]
                if start == 0:
                    if fault_armed("write.partial", path):
                        f.write(piece[: len(piece) // 2])
                        f.flush()
                    fault_point("write.partial", path)
                f.write(piece)

    return atomic_write(path, write, previous=previous, durable=durable, streams=True)


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, previous=None, durable: bool = False) -> Path:
    """``torch.save`` that never leaves a half-written checkpoint (readers use ``weights_only=True``).

    The checkpoint is serialised in memory first: torch's own file writer turns a full disk into a
    RuntimeError without its errno, and a write of our own reports ``ENOSPC`` as itself.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer(), previous=previous, durable=durable)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` (parents created) through a temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike):
    """Build a folder in a hidden temporary sibling of ``target`` (yielded), then swap it in whole: readers see the
    old folder or the new one, never half of it. On any exception the temporary folder is removed and ``target`` is
    left as it was. The new folder is ``0o755`` (``mkdtemp`` makes it private to this user)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_temp_files(folder: str | os.PathLike) -> list[str]:
    """Delete the temp files ``atomic_write`` left in ``folder`` when its process was killed; their names.

    Only the folder's single writer may call it (a live writer's temp file would vanish under it).
    """
    removed = []
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


def jsonable(obj: Any) -> Any:
    """A strict-JSON copy of ``obj``: NaN/inf -> None, numpy -> Python, Path -> str, tuple -> list."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)) or type(obj).__module__ == "torch":
        obj = obj.tolist()  # arrays, numpy scalars and torch tensors alike
        if isinstance(obj, list):
            return jsonable(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (``jsonable``), indented, written atomically."""
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one strict-JSON line; a torn line a killed writer left at the end is cut off first.

    On a full disk the file is cut back to its previous length (whole lines only) and ``DiskFullError`` raised.
    """
    path = Path(path)
    line = (json.dumps(jsonable(record), allow_nan=False) + "\n").encode()
    with open(path, "ab", buffering=0) as f:
        start = _cut_torn_tail(f)
        try:
            if fault_armed("append.partial", path):
                f.write(line[: len(line) // 2])
            fault_point("append.partial", path)
            view = memoryview(line)
            while view:
                view = view[f.write(view) :]
        except OSError as e:
            if e.errno not in DISK_FULL_ERRNOS:
                raise
            f.truncate(start)
            raise disk_full(e, path, f"{path.name} keeps its previous lines") from None
    fault_point("append.complete", path)


def _cut_torn_tail(f) -> int:
    """Truncate an append-mode file after its last newline (a kill mid-append leaves a line without one)."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return 0
    with open(f.name, "rb") as r:
        r.seek(end - 1)
        if r.read(1) == b"\n":
            return end
        r.seek(0)
        cut = r.read().rfind(b"\n") + 1
    f.truncate(cut)
    return cut


def read_json_dict(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing, unreadable or not an object: for optional
    records (a run's ``config.json``, a result a step may reuse) whose absence is an answer, not an error."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; ``[]`` when it does not exist. A torn last line (no newline: its
    writer was killed mid-append) is left out; any other bad line raises."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sha256_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """One hash over the names (relative to ``root``) and bytes of ``paths``, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        name = str(p.relative_to(root)) if root is not None else p.name
        h.update(name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
