"""The prepared format: the one on-disk format every tool downstream of ``prepare`` reads.

A prepared set is a folder::

    dataset.json    provenance + layout (see ``REQUIRED_KEYS``)
    images.npy      float16 [N, C, H, W] in [-1, 1]   (memory-mapped on load)
    masks.npy       uint8   [N, H, W] integer labels   (keys of ``dataset.json["labels"]``)
    patients.npy    str     [N] patient / case id of each slice
    slices.npy      int32   [N] slice index inside its volume (0 for 2-D images)
    extra arrays    optional, listed in ``dataset.json["arrays"]`` (e.g. ``phase.npy`` ED/ES for ACDC)

Real, phantom and generated sets share it (``source`` says which), so FID, U-Net and the
notebooks never know where a set came from. Splits are by patient and stored as patient lists;
the per-slice split is derived on load.

Writes go to a temporary sibling folder that is renamed into place at the end, so a failed
conversion never leaves a half-written set behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medgan.data.verify import check_arrays, check_meta, hash_content, verify_content
from medgan.errors import IncompatibleSetsError, OutputExistsError, PreparedFormatError
from medgan.io import sha256_files, write_json  # noqa: F401 - sha256_files re-exported for callers

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
# The patients a GAN learns from: every training patient of the paper (ACDC's 100 exams, IDRiD's 54
# images, SLiver07's segmented volumes less our held-out test volumes). ``val`` is carved from those
# patients only for the U-Net's early stopping, so the GAN sees it too (book/deviations.md, "Splits").
GAN_SPLIT = "train+val"
SPLIT_NAMES = (*SPLITS, GAN_SPLIT, "all")  # what ``indices``/``load`` accept by name ("a+b" joins splits)
SOURCES = ("raw", "phantom", "generated")
REQUIRED_KEYS = (
    "name",
    "modality",
    "channels",
    "image_size",
    "labels",
    "source",
    "splits",
    "counts",
    "normalisation",
    "inputs_sha256",
)
CORE_ARRAYS = ("images", "masks", "patients", "slices")


# --------------------------------------------------------------------------------------------
# joint image + mask encoding (the GANs model the joint distribution by channel concatenation)
# --------------------------------------------------------------------------------------------
def mask_to_onehot(mask, num_labels: int):
    """``mask [N, H, W]`` int -> ``[N, K, H, W]`` float with +1 for the label and -1 elsewhere.

    The {-1, +1} one-hot lives in the same range as the tanh image channels; ``onehot_to_mask``
    (argmax) inverts it exactly, so a generated mask channel always maps back to valid labels.
    """
    import torch

    mask = torch.as_tensor(mask).long()
    onehot = torch.nn.functional.one_hot(mask, num_labels).permute(0, 3, 1, 2)
    return onehot.float() * 2.0 - 1.0


def onehot_to_mask(mask_channels):
    """``[N, K, H, W]`` scores (one per label) -> ``[N, H, W]`` long labels by argmax."""
    return mask_channels.argmax(dim=1)


def to_joint(image, mask, num_labels: int):
    """``image [N, C, H, W]`` + ``mask [N, H, W]`` -> joint tensor ``[N, C + K, H, W]``."""
    import torch

    image = torch.as_tensor(image).float()
    return torch.cat([image, mask_to_onehot(mask, num_labels).to(image.device)], dim=1)


def split_joint(joint, channels: int):
    """Joint ``[N, C + K, H, W]`` -> (``image [N, C, H, W]``, ``mask [N, H, W]`` long)."""
    return joint[:, :channels], onehot_to_mask(joint[:, channels:])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def check_disjoint_splits(splits: Mapping[str, Sequence[str]]) -> None:
    """Raise when a patient sits in two splits (the leak the study must never have)."""
    seen: dict[str, str] = {}
    for split, patients in splits.items():
        for p in patients:
            if p in seen and seen[p] != split:
                raise PreparedFormatError(f"patient {p!r} is in both the {seen[p]!r} and {split!r} splits")
            seen[p] = split


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
class PreparedWriter:
    """Stream N slices into a new prepared folder without holding them in memory.

    >>> with PreparedWriter(out, n=N, channels=1, size=128, meta=meta) as w:   # doctest: +SKIP
    ...     w.write(i, image, mask, patient, slice_index)

    ``meta`` holds the ``dataset.json`` keys except ``counts`` (derived) and may hold extra keys.
    On success the temp folder is renamed to ``out``; on any exception it is deleted.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        n: int,
        channels: int,
        size: int,
        meta: Mapping[str, Any],
        overwrite: bool = False,
        extra_arrays: Mapping[str, np.dtype | str] | None = None,
    ):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise OutputExistsError(f"output directory {self.out_dir} already exists (pass --overwrite to replace it)")
        if n <= 0:
            raise PreparedFormatError(f"refusing to write an empty prepared set to {self.out_dir}")
        self.n, self.channels, self.size = int(n), int(channels), int(size)
        self.meta = dict(meta)
        self.overwrite = overwrite
        # parents this writer creates are removed again if it fails: a failure leaves the tree as it was
        self._made = [p for p in (self.out_dir.parent, *self.out_dir.parent.parents) if not p.exists()]
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        fmt = np.lib.format
        self.images = fmt.open_memmap(self.tmp_dir / "images.npy", "w+", np.float16, (n, channels, size, size))
        self.masks = fmt.open_memmap(self.tmp_dir / "masks.npy", "w+", np.uint8, (n, size, size))
        self.patients: list[str] = [""] * n
        self.slices = np.zeros(n, np.int32)
        self.extra = {k: np.zeros(n, dtype=np.dtype(v)) for k, v in (extra_arrays or {}).items()}
        self._written = np.zeros(n, bool)

    def write(self, i: int, image: np.ndarray, mask: np.ndarray, patient: str, slice_index: int = 0, **extra) -> None:
        """Store slice ``i``: ``image [C, H, W]`` in [-1, 1], ``mask [H, W]`` integer labels."""
        image = np.asarray(image)
        mask = np.asarray(mask)
        if image.shape != (self.channels, self.size, self.size):
            raise PreparedFormatError(f"slice {i} of {patient}: image shape {image.shape} != {(self.channels, self.size, self.size)}")
        if mask.shape != (self.size, self.size):
            raise PreparedFormatError(f"slice {i} of {patient}: mask shape {mask.shape} != {(self.size, self.size)}")
        self.images[i] = image
        self.masks[i] = mask
        self.patients[i] = str(patient)
        self.slices[i] = int(slice_index)
        for k, v in extra.items():
            self.extra[k][i] = v
        self._written[i] = True

    def write_batch(self, start: int, images: np.ndarray, masks: np.ndarray, patients: Sequence[str], slices: Sequence[int]) -> None:
        """Store ``len(images)`` consecutive slices from ``start`` (fast path for generated sets)."""
        stop = start + len(images)
        self.images[start:stop] = images
        self.masks[start:stop] = masks
        self.patients[start:stop] = [str(p) for p in patients]
        self.slices[start:stop] = slices
        self._written[start:stop] = True

    def close(self) -> Path:
        if not self._written.all():
            missing = int((~self._written).sum())
            raise PreparedFormatError(f"{missing} of {self.n} slices were never written to {self.out_dir}")
        images, masks = self.images, self.masks
        self._validate(images, masks)
        images.flush()
        masks.flush()
        del self.images, self.masks
        width = max(1, max(len(p) for p in self.patients))
        np.save(self.tmp_dir / "patients.npy", np.asarray(self.patients, dtype=f"<U{width}"))
        np.save(self.tmp_dir / "slices.npy", self.slices)
        for k, v in self.extra.items():
            np.save(self.tmp_dir / f"{k}.npy", v)
        meta = self._finish_meta()
        meta["content_sha256"], meta["files_sha256"] = hash_content(self.tmp_dir)
        write_json(self.tmp_dir / "dataset.json", meta)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp_dir, self.out_dir)
        return self.out_dir

    def abort(self) -> None:
        for name in ("images", "masks"):
            if hasattr(self, name):
                delattr(self, name)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        for parent in self._made:  # innermost first; stops at the first one something else has filled
            try:
                parent.rmdir()
            except OSError:
                break

    def __enter__(self) -> PreparedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:  # a failed validation must not leave the temp folder behind either
                self.abort()
                raise
        else:
            self.abort()

    # ---------------------------------------------------------------- internals
    def _validate(self, images: np.ndarray, masks: np.ndarray) -> None:
        labels = {int(k) for k in self.meta["labels"]}
        chunk = 4096
        for s in range(0, self.n, chunk):
            im = images[s : s + chunk]
            if not np.isfinite(im).all():
                raise PreparedFormatError(f"non-finite image values in slices {s}..{s + len(im) - 1}")
            lo, hi = float(im.min()), float(im.max())
            if lo < -1.001 or hi > 1.001:
                raise PreparedFormatError(f"image values [{lo:.3f}, {hi:.3f}] outside [-1, 1] in slices {s}..")
            present = set(np.unique(masks[s : s + chunk]).tolist())
            if not present <= labels:
                raise PreparedFormatError(f"mask labels {sorted(present - labels)} are not in the dataset's labels {sorted(labels)}")

    def _finish_meta(self) -> dict[str, Any]:
        meta = dict(self.meta)
        meta.setdefault("format_version", FORMAT_VERSION)
        meta["channels"] = self.channels
        meta["image_size"] = self.size
        if meta.get("source") not in SOURCES:
            raise PreparedFormatError(f"source must be one of {SOURCES}, got {meta.get('source')!r}")
        patients_present = set(self.patients)
        splits = {s: list(meta.get("splits", {}).get(s, [])) for s in SPLITS}
        check_disjoint_splits(splits)
        unassigned = patients_present - set().union(*map(set, splits.values()))
        if unassigned:
            raise PreparedFormatError(f"patients {sorted(unassigned)[:5]} are in no split")
        meta["splits"] = splits
        counts = {s: 0 for s in SPLITS}
        split_of = {p: s for s, ps in splits.items() for p in ps}
        for p in self.patients:
            counts[split_of[p]] += 1
        meta["counts"] = counts
        meta["arrays"] = list(CORE_ARRAYS) + sorted(self.extra)
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise PreparedFormatError(f"dataset.json would lack required keys {missing}")
        return meta


def write_prepared(
    out_dir: str | os.PathLike,
    *,
    images: np.ndarray,
    masks: np.ndarray,
    patients: Sequence[str],
    slices: Sequence[int] | None = None,
    meta: Mapping[str, Any],
    overwrite: bool = False,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write in-memory arrays (``images [N, C, H, W]``, ``masks [N, H, W]``) as a prepared set."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    if h != w:
        raise PreparedFormatError(f"images must be square, got {h}x{w}")
    slices = np.zeros(n, np.int32) if slices is None else np.asarray(slices)
    extra = dict(extra or {})
    with PreparedWriter(out_dir, n=n, channels=c, size=h, meta=meta, overwrite=overwrite,
                        extra_arrays={k: np.asarray(v).dtype for k, v in extra.items()}) as w:
        w.write_batch(0, images, masks, patients, slices)
        for k, v in extra.items():
            w.extra[k][:] = v
    return Path(out_dir)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
@dataclass
class PreparedSet:
    """A loaded prepared folder. Arrays are memory-mapped; nothing is copied until indexed."""

    root: Path
    meta: dict[str, Any]
    images: np.ndarray  # float16 [N, C, H, W]
    masks: np.ndarray  # uint8 [N, H, W]
    patients: np.ndarray  # str [N]
    slices: np.ndarray  # int32 [N]
    extra: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def num_labels(self) -> int:
        return len(self.meta["labels"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.meta["labels"])

    @property
    def source(self) -> str:
        return self.meta["source"]

    @property
    def content_sha256(self) -> str:
        """Hash of the arrays' bytes (cache key for features); computed once, stored in dataset.json."""
        return self.meta["content_sha256"]

    def split_of(self) -> np.ndarray:
        """``[N]`` str: the split of every slice, derived from the patient lists."""
        split_of = {p: s for s, ps in self.meta["splits"].items() for p in ps}
        return np.asarray([split_of[p] for p in self.patients])

    def indices(self, split: str | Sequence[str] | None = None) -> np.ndarray:
        """Slice indices of one split (``"train"``), a union (``"train+val"`` or ``["train", "val"]``),
        or all (``None`` / ``"all"``), in slice order."""
        if split is None or split == "all":
            return np.arange(len(self))
        wanted = parse_split(split)
        patients = set().union(*(set(self.meta["splits"][s]) for s in wanted))
        return np.flatnonzero(np.isin(self.patients, sorted(patients)))

    def load(self, split: str | Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(``images [n, C, H, W]`` float32, ``masks [n, H, W]`` int64) of a split, in memory."""
        idx = self.indices(split)
        return np.asarray(self.images[idx], np.float32), np.asarray(self.masks[idx], np.int64)


def parse_split(split: str | Sequence[str]) -> set[str]:
    """``"train+val"`` -> ``{"train", "val"}``; a ``ValueError`` naming the accepted names otherwise."""
    parts = split.split("+") if isinstance(split, str) else list(split)
    wanted = {p.strip() for p in parts}
    bad = wanted - set(SPLITS)
    if bad or not wanted:
        raise ValueError(f"unknown split(s) {sorted(bad) or [split]}; use one of {list(SPLIT_NAMES)} "
                         f"(or splits joined by '+')")
    return wanted


def load_prepared(root: str | os.PathLike, mmap: bool = True, *, verify: bool = True) -> PreparedSet:
    """Open a prepared folder; raise ``PreparedFormatError`` naming the file when it is broken.

    Every load checks ``dataset.json`` and the arrays' shapes and dtypes; ``verify`` (default) also
    checks the content hash, mask labels and image range, once per change of the files
    (``medgan.data.verify``). Names in ``dataset.json`` never reach outside ``root``.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not root.is_dir():
        raise PreparedFormatError(f"{root} is not a prepared dataset folder (it does not exist)")
    if not meta_path.is_file():
        raise PreparedFormatError(f"{meta_path} is missing: {root} is not a prepared dataset (run `medgan data prepare`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PreparedFormatError(f"{meta_path} is not valid JSON: {e}") from None
    names = check_meta(meta_path, meta, REQUIRED_KEYS, SOURCES, SPLITS)
    arrays = {}
    for name in names:
        path = root / f"{name}.npy"
        if not path.is_file():
            raise PreparedFormatError(f"{path} is missing")
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap and name in ("images", "masks") else None)
        except (ValueError, OSError, EOFError, MemoryError) as e:
            raise PreparedFormatError(f"{path} is not a readable .npy array: {str(e)[:200]}") from None
    n = len(arrays["images"]) if arrays["images"].ndim else 0
    for name, arr in arrays.items():
        if arr.ndim < 1 or len(arr) != n:
            raise PreparedFormatError(f"{root / (name + '.npy')} has {len(arr) if arr.ndim else 0} rows, images.npy has {n}")
    if n == 0:
        raise PreparedFormatError(f"{root} holds no slices")
    if arrays["images"].shape[1:] != (meta["channels"], meta["image_size"], meta["image_size"]):
        raise PreparedFormatError(
            f"{root / 'images.npy'} has shape {arrays['images'].shape}, dataset.json says "
            f"{meta['channels']} channels at {meta['image_size']}²"
        )
    check_arrays(root, meta, arrays)
    if verify or "content_sha256" not in meta:
        verify_content(root, meta, arrays["images"], arrays["masks"])
    extra = {k: v for k, v in arrays.items() if k not in CORE_ARRAYS}
    return PreparedSet(root, meta, arrays["images"], arrays["masks"], arrays["patients"], arrays["slices"], extra)


def check_compatible(reference: PreparedSet, other: PreparedSet) -> None:
    """Raise ``IncompatibleSetsError`` (one line naming both folders) unless ``other`` has the channels,
    image size and labels of ``reference``: the sets could not be compared (FID) or mixed (U-Net) otherwise."""
    what = f"{other.root} ({other.source} set)"
    if other.channels != reference.channels:
        raise IncompatibleSetsError(
            f"{what} has {other.channels} image channel(s) but {reference.root} has {reference.channels}: "
            f"the sets are not the same modality"
        )
    if other.image_size != reference.image_size:
        raise IncompatibleSetsError(
            f"{what} holds {other.image_size}² images but {reference.root} holds {reference.image_size}²: "
            f"use sets of one image size"
        )
    ref_labels = {str(k): str(v) for k, v in reference.labels.items()}
    other_labels = {str(k): str(v) for k, v in other.labels.items()}
    if other_labels != ref_labels:
        raise IncompatibleSetsError(
            f"{other.root} is a {other.source} set whose labels {other_labels} are not the labels {ref_labels} "
            f"of {reference.root}: it was not made from this dataset"
        )


def describe(ps: PreparedSet) -> str:
    """Human-readable summary used by ``medgan data info``."""
    m = ps.meta
    lines = [
        f"{ps.root}",
        f"  name        {m['name']}  ({m['modality']}, source: {m['source']}"
        + (f", run {m['run_id']}" if m.get("run_id") else "")
        + ")",
        f"  images      {len(ps)} x {m['channels']} x {m['image_size']} x {m['image_size']} ({ps.images.dtype})",
        "  labels      " + ", ".join(f"{k}={v}" for k, v in m["labels"].items()),
        "  splits      " + ", ".join(f"{s}: {len(m['splits'][s])} patients / {m['counts'][s]} slices" for s in SPLITS),
        f"  normalise   {m['normalisation']}",
        f"  inputs      sha256 {m['inputs_sha256'][:16]}…",
    ]
    present = np.unique(ps.masks[: min(len(ps), 20000)])
    lines.append(f"  mask labels present: {present.tolist()}")
    return "\n".join(lines)
