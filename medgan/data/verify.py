"""Checks a prepared (or generated) set must pass before anything uses it, and the hashes that prove it.

``load_prepared`` calls ``check_meta`` (types and names in ``dataset.json``; array names may not leave
the folder), ``check_arrays`` (shapes, dtypes, patients in the splits) on every load, and ``verify_content``
(the arrays' sha256 against ``dataset.json``, mask labels within the label set, images finite and in
[-1, 1]) only when the files changed since they last passed: a sidecar under
``$MEDGAN_CACHE/verified/`` (default ``~/.cache/medgan``) records each folder's (size, mtime, inode)
stamp at its last passing check, and a per-process memo spares even that read. So a set is re-hashed
once after it changes, not on every load, and a damaged set fails in one line naming the file before its
features are cached (the feature cache is keyed on ``content_sha256``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgan.errors import PreparedFormatError
from medgan.io import write_json

CONTENT_FILES = ("images.npy", "masks.npy")  # what ``content_sha256`` covers, in its hashing order
IMAGE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
SIDECAR_VERSION = 1
_ARRAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_CHUNK_BYTES = 1 << 24
_VERIFIED: dict[str, tuple] = {}  # resolved root -> stamp that passed in this process

# |x| <= 1 (+ float16 rounding) as an integer compare on the bit pattern: NaN and inf have larger
# magnitude bits than any finite number, so one max() checks range and finiteness without float maths.
_MAGNITUDE = {
    np.dtype(np.float16): (np.uint16, 0x7FFF, int(np.array(1.001, np.float16).view(np.uint16))),
    np.dtype(np.float32): (np.uint32, 0x7FFFFFFF, int(np.array(1.001, np.float32).view(np.uint32))),
}


def hash_content(root: Path) -> tuple[str, dict[str, str]]:
    """(``content_sha256``, per-file sha256) of ``images.npy`` + ``masks.npy`` in one read.

    The combined hash equals ``medgan.io.sha256_files`` of the two files (name + bytes, sorted), the key
    the feature cache has always used; the per-file hashes let a mismatch name the damaged file.
    """
    combined = hashlib.sha256()
    per_file = {}
    for name in CONTENT_FILES:
        own = hashlib.sha256()
        combined.update(name.encode())
        with open(root / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                combined.update(chunk)
                own.update(chunk)
        per_file[name] = own.hexdigest()
    return combined.hexdigest(), per_file


def _bad(path: Path, problem: str) -> PreparedFormatError:
    return PreparedFormatError(f"{path}: {problem}")


def check_meta(meta_path: Path, meta: Any, required: Sequence[str], sources: Sequence[str],
               splits: Sequence[str]) -> list[str]:
    """Types of the ``dataset.json`` fields the readers rely on; returns the array names (safe file stems)."""
    if not isinstance(meta, dict):
        raise _bad(meta_path, f"holds a {type(meta).__name__}, expected a JSON object")
    missing = [k for k in required if k not in meta]
    if missing:
        raise _bad(meta_path, f"lacks required keys {missing}")
    for key in ("channels", "image_size"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 1:
            raise _bad(meta_path, f"{key} = {meta[key]!r} is not a positive integer")
    labels = meta["labels"]
    if not isinstance(labels, dict) or sorted(labels) != [str(i) for i in range(len(labels))] or len(labels) < 2:
        raise _bad(meta_path, f"labels {str(labels)[:80]} are not the keys '0'..'K-1' (K >= 2)")
    if meta["source"] not in sources:
        raise _bad(meta_path, f"source {str(meta['source'])[:40]!r} is not one of {list(sources)}")
    split_map = meta["splits"]
    if not isinstance(split_map, dict) or not set(split_map) <= set(splits) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in split_map.values()):
        raise _bad(meta_path, f"splits must map {list(splits)} to lists of patient ids")
    for key in ("content_sha256", "inputs_sha256"):
        if key in meta and not isinstance(meta[key], str):
            raise _bad(meta_path, f"{key} is not a string")
    names = meta.get("arrays", ["images", "masks", "patients", "slices"])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _bad(meta_path, "arrays must be a list of array names")
    for name in names:
        # a name is a file stem inside the folder: '../x', '/abs' or 'a/b' would read files elsewhere
        if not _ARRAY_NAME.match(name):
            raise _bad(meta_path, f"array name {name[:80]!r} is not a plain file name inside {meta_path.parent}")
    lost = [n for n in ("images", "masks", "patients", "slices") if n not in names]
    if lost:
        raise _bad(meta_path, f"arrays lacks {lost}")
    return names


def check_arrays(root: Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Shapes, dtypes and patient ids of the loaded (memory-mapped) arrays, without reading their pixels."""
    images, masks = arrays["images"], arrays["masks"]
    if images.dtype not in IMAGE_DTYPES or images.ndim != 4:
        raise _bad(root / "images.npy", f"is {images.dtype} with {images.ndim} dims, expected float16/32 [N, C, H, W]")
    if masks.dtype != np.uint8 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise _bad(root / "masks.npy", f"is {masks.dtype} {masks.shape}, expected uint8 {(images.shape[0], *images.shape[2:])}")
    patients, slices = arrays["patients"], arrays["slices"]
    if patients.ndim != 1 or patients.dtype.kind != "U":
        raise _bad(root / "patients.npy", f"is {patients.dtype} with {patients.ndim} dims, expected a 1-D str array")
    if slices.ndim != 1 or slices.dtype.kind not in "iu":
        raise _bad(root / "slices.npy", f"is {slices.dtype} with {slices.ndim} dims, expected a 1-D integer array")
    for name, arr in arrays.items():
        if arr.ndim < 1:
            raise _bad(root / f"{name}.npy", "is a scalar, expected one row per slice")
    assigned = set().union(*map(set, meta["splits"].values())) if meta["splits"] else set()
    unassigned = sorted(set(np.unique(patients).tolist()) - assigned)
    if unassigned:
        raise _bad(root / "dataset.json", f"patients {unassigned[:5]} of patients.npy are in no split")


def _stamp(root: Path) -> tuple:
    out = []
    for name in (*CONTENT_FILES, "dataset.json"):
        st = (root / name).stat()
        out.append([name, st.st_size, st.st_mtime_ns, st.st_ino])
    return tuple(tuple(x) for x in out)


def _sidecar(root: Path) -> Path:
    cache = Path(os.environ.get("MEDGAN_CACHE") or Path.home() / ".cache" / "medgan")
    return cache / "verified" / (hashlib.sha256(str(root).encode()).hexdigest()[:32] + ".json")


def _recorded(root: Path, stamp: tuple, content: str | None) -> bool:
    try:
        record = json.loads(_sidecar(root).read_text())
        return (record.get("version") == SIDECAR_VERSION and record.get("root") == str(root)
                and record.get("content_sha256") == content and tuple(map(tuple, record["stamp"])) == stamp)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _scan(root: Path, images: np.ndarray, masks: np.ndarray, num_labels: int) -> None:
    """Every mask label < ``num_labels``; every image value finite and within [-1, 1]."""
    view_dtype, magnitude, limit = _MAGNITUDE[images.dtype]
    rows = max(1, _CHUNK_BYTES // max(1, images[0].nbytes))
    for s in range(0, len(images), rows):
        top = int(masks[s: s + rows].max())
        if top >= num_labels:
            bad = sorted(set(np.unique(masks[s: s + rows]).tolist()) - set(range(num_labels)))
            raise _bad(root / "masks.npy", f"mask labels {bad[:10]} in slices {s}.. are outside the dataset's "
                                           f"labels 0..{num_labels - 1}")
        bits = np.asarray(images[s: s + rows]).view(view_dtype)
        if int((bits & magnitude).max()) > limit:
            raise _bad(root / "images.npy", f"non-finite values or values outside [-1, 1] in slices {s}..")


def verify_content(root: Path, meta: dict[str, Any], images: np.ndarray, masks: np.ndarray) -> None:
    """Re-hash and scan the arrays unless this exact folder state already passed (this process or the sidecar).

    Fills ``meta["content_sha256"]`` for sets written before it existed.
    """
    root = root.resolve()
    stamp = _stamp(root)
    content = meta.get("content_sha256")
    if _VERIFIED.get(str(root)) == stamp or (content and _recorded(root, stamp, content)):
        _VERIFIED[str(root)] = stamp
        return
    combined, per_file = hash_content(root)
    if content is None:
        meta["content_sha256"] = combined
    elif combined != content:
        recorded = meta.get("files_sha256") if isinstance(meta.get("files_sha256"), dict) else {}
        damaged = [n for n in CONTENT_FILES if recorded.get(n) not in (None, per_file[n])] or list(CONTENT_FILES)
        raise _bad(root / damaged[0] if len(damaged) == 1 else root,
                   f"content sha256 {combined[:12]}… differs from {content[:12]}… recorded in dataset.json"
                   f" ({' and '.join(damaged)} changed or damaged since the set was written)")
    _scan(root, images, masks, len(meta["labels"]))
    _VERIFIED[str(root)] = stamp
    try:
        sidecar = _sidecar(root)
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        write_json(sidecar, {"version": SIDECAR_VERSION, "root": str(root), "stamp": stamp,
                             "content_sha256": meta["content_sha256"]})
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
