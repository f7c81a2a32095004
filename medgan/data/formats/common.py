"""What every raw reader shares: the one-line error, the memory limit, label checks, safe paths, quiet C++.

Every check here runs before the pixels it guards are allocated or read, so a damaged or hostile file
fails in one line naming it instead of a traceback, an out-of-memory kill or a read outside the raw folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from medgan.errors import ConfigError, InputTooLargeError, RawFormatError

# The largest single array a conversion may allocate (GiB). The real datasets need < 1 GiB per array
# (a SLiver07 volume: 512 x 512 x 394 int16 = 0.2 GiB); a header that asks for more is far more often
# damaged (a NIfTI in micrometres read as mm, a JPEG header claiming 65000 x 65000 pixels) than real.
MAX_ARRAY_ENV = "MEDGAN_MAX_ARRAY_GB"
DEFAULT_MAX_ARRAY_GB = 4.0


def _err(path: Path | str, problem: str) -> RawFormatError:
    return RawFormatError(f"{path}: {problem}")


def _need_dir(raw_dir: str | Path) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise _err(raw_dir, "raw dataset folder does not exist")
    return raw_dir


def max_array_bytes() -> int:
    """``$MEDGAN_MAX_ARRAY_GB`` (default 4) in bytes: the most one array of a conversion may take."""
    text = os.environ.get(MAX_ARRAY_ENV, "")
    if not text.strip():
        return int(DEFAULT_MAX_ARRAY_GB * 2**30)
    try:
        gb = float(text)
    except ValueError:
        gb = math.nan
    if not math.isfinite(gb) or gb <= 0:
        raise ConfigError(f"{MAX_ARRAY_ENV}={text!r} is not a positive number of GiB")
    return int(gb * 2**30)


def check_array_size(path: Path | str, shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """Refuse (one line naming ``path``) an array of ``shape`` x ``itemsize`` bytes over ``max_array_bytes``.

    Called before the array exists: the limit is for the memory a header asks for, not what it got.
    """
    need = math.prod(int(s) for s in shape) * int(itemsize)
    limit = max_array_bytes()
    if need > limit:
        dims = " x ".join(str(int(s)) for s in shape)
        raise InputTooLargeError(
            f"{path}: {what} would need {need / 2**30:.3g} GiB ({dims} x {itemsize} bytes), over the "
            f"{limit / 2**30:.3g} GiB limit (set {MAX_ARRAY_ENV} to raise it if the file is right)")


def check_spacing(path: Path | str, spacing: tuple[float, ...], what: str = "voxel spacing") -> None:
    """Positive, finite spacings (mm) or one line naming the file."""
    if len(spacing) == 0 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise _err(path, f"{what} {tuple(float(s) for s in spacing)} is not positive and finite")


def check_labels(path: Path, mask: np.ndarray, labels: dict[str, str]) -> np.ndarray:
    """Integer-valued labels inside the dataset's set and at least one foreground voxel -> uint8."""
    allowed = sorted(int(k) for k in labels)
    if mask.dtype.kind not in "biuf":
        raise _err(path, f"ground truth has data type {mask.dtype} (expected integer labels)")
    values = np.unique(mask)
    if mask.dtype.kind == "f" and not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
        raise _err(path, "ground truth holds non-integer values (expected integer labels)")
    # compared as Python numbers, never cast: a float label of 1e30 must be reported, not wrapped around
    bad = [v for v in values.tolist() if v not in set(allowed)]
    if bad:
        shown = [int(v) for v in bad[:10]]
        raise _err(path, f"labels {shown} are outside the dataset's label set {allowed}")
    if not (values > 0).any():
        raise _err(path, "ground truth is empty (no labelled voxel)")
    return mask.astype(np.uint8)


def binary_mask(path: Path, values: np.ndarray, what: str = "mask") -> np.ndarray:
    """A two-label ground truth stored as 0 / 1 or 0 / 255 (both conventions occur) -> bool foreground.

    Anything else (a noisy or resampled mask whose background is 0-6, a third label) is refused with the
    values found: thresholding it at > 0 would silently turn the noise into foreground.
    """
    if values.dtype.kind not in "biu":
        raise _err(path, f"{what} has data type {values.dtype} (expected integer labels 0 and 1 or 255)")
    present = set(np.unique(values).tolist())
    foreground = present - {0}
    codes = [{255}, {1}] + ([{2**16 - 1}] if values.dtype == np.uint16 else [])  # ties: 255 (the larger)
    best = max(codes, key=lambda code: len(foreground & code))
    if not foreground <= best:
        bad = sorted(foreground - best)
        raise _err(path, f"{what} values {bad[:10]}{' ...' if len(bad) > 10 else ''} are outside the label set "
                         f"(expected 0 = background and one foreground value, 1 or 255)")
    if not foreground:
        raise _err(path, "ground truth is empty (no labelled voxel)")
    return values > 0


def existing_file(path: Path) -> bool:
    """``path.is_file()``, except that a dangling or self-referencing symbolic link is an error, not a miss."""
    if path.is_file():
        return True
    if path.is_symlink():
        raise _err(path, "is a broken or looping symbolic link (it points to nothing readable)")
    return False


def contained_path(header: Path, name: str, field: str) -> Path:
    """``header.parent / name``, refusing a ``name`` that leaves that folder (absolute, ``..``, a drive).

    A file's own metadata must not make a reader open files outside the dataset folder.
    """
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if not name or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts \
            or ".." in windows.parts or "\x00" in name:
        raise _err(header, f"{field} {name!r} points outside its folder (only a file name beside the header is read)")
    return header.parent / name


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what C/C++ libraries (ITK) print on file descriptor 2; yields a list filled with its lines.

    SimpleITK prints its own multi-line reports there, spreading one error over several lines; the
    reader turns them into part of one ``RawFormatError`` line instead.
    """
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (embedded interpreter): nothing to capture
            yield lines
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(ln.strip() for ln in sink.read().decode(errors="replace").splitlines() if ln.strip())


def last_message(text: str, stderr: list[str]) -> str:
    """One line for an error from a C++ library: what it printed (the real reason, e.g. MetaIO's "data not
    read completely"), else the last line of its exception (ITK's own often says a misleading "No such file")."""
    if stderr:
        return " ".join(stderr)[:300]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


@contextlib.contextmanager
def quiet_readers() -> Iterator[None]:
    """Silence the Python warnings and library log records (nibabel's header fix-ups) of a conversion.

    Each would be one more stderr line beside the one-line error (or a success); what matters about a
    damaged file is in the ``RawFormatError`` the checks raise.
    """
    loggers = [logging.getLogger(name) for name in ("nibabel", "PIL")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
