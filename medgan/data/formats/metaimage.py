"""MetaImage (``.mhd`` header + ``.raw`` / ``.zraw`` data) and the SLiver07 layout read through it.

SLiver07: ``liver-orig0NN.mhd/.raw`` (MET_SHORT HU) + ``liver-seg0NN.mhd/.raw`` (MET_UCHAR, 0 / 1 liver).
The header is parsed and checked here, before SimpleITK sees it: its errors on damaged files are terse,
spread over several stderr lines, or absent (a truncated file). Checked: the fields parse, the data file
sits beside the header (``ElementDataFile`` may not leave the folder), its size matches ``DimSize`` x the
element type — for ``CompressedData = True`` after inflating the stream — and the volume fits the memory
limit (``MEDGAN_MAX_ARRAY_GB``).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgan.data.formats.common import (
    _err,
    _need_dir,
    binary_mask,
    captured_stderr,
    check_array_size,
    check_spacing,
    contained_path,
    existing_file,
    last_message,
)

SLIVER_LABELS = {"0": "background", "1": "liver"}
MET_DTYPES = {
    "MET_CHAR": np.int8,
    "MET_UCHAR": np.uint8,
    "MET_SHORT": np.int16,
    "MET_USHORT": np.uint16,
    "MET_INT": np.int32,
    "MET_UINT": np.uint32,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
# What each role may hold: CT in HU needs a signed (or float) type; a segmentation, small integers.
SLIVER_IMAGE_TYPES = ("MET_SHORT", "MET_INT", "MET_FLOAT")
SLIVER_MASK_TYPES = ("MET_UCHAR", "MET_CHAR", "MET_USHORT", "MET_SHORT")
_SLIVER_NAME = re.compile(r"^liver-(orig|seg)(\d+)\.mhd$", re.IGNORECASE)
_MAX_HEADER_BYTES = 1 << 16  # a MetaImage header is a few hundred bytes
_CHUNK = 1 << 20


@dataclass
class MetaHeader:
    """The fields of a MetaImage ``.mhd`` header that decide how (and whether) to read it."""

    path: Path
    dim_size: tuple[int, ...]  # (x, y, z) as written
    element_type: str
    data_file: Path
    spacing: tuple[float, ...]  # (x, y, z) mm
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``[Z, H, W]``."""
        return tuple(reversed(self.dim_size))  # type: ignore[return-value]

    @property
    def compressed(self) -> bool:
        return self.fields.get("CompressedData", "False").lower() == "true"


def _int_field(path: Path, fields: dict[str, str], key: str, default: str) -> int:
    try:
        return int(fields.get(key, default) or default)
    except ValueError:
        raise _err(path, f"malformed {key} {fields[key][:40]!r} (expected an integer)") from None


def _inflated_size(header: Path, data_file: Path, skip: int, limit: int) -> int:
    """Bytes the zlib/gzip stream in ``data_file`` (after ``skip`` bytes) inflates to, stopping past ``limit``.

    Streams in 1 MiB pieces and never holds more than that: a compressed file's size check costs one
    decompression pass, not the memory of the volume.
    """
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header, as MetaIO accepts
    total = 0
    try:
        with open(data_file, "rb") as f:
            f.seek(skip)
            while chunk := f.read(_CHUNK):
                while chunk:
                    total += len(inflater.decompress(chunk, _CHUNK))
                    chunk = inflater.unconsumed_tail
                    if total > limit:
                        return total
                if inflater.eof:
                    break
            total += len(inflater.flush())
            trailing = inflater.unused_data or f.read(1)
    except zlib.error as e:
        raise _err(data_file, f"{header.name} says CompressedData = True, but this is not a zlib/gzip stream ({e})") from None
    except OSError as e:
        raise _err(data_file, f"cannot read the MetaImage data file ({e})") from None
    if not inflater.eof:
        raise _err(data_file, f"truncated: the compressed stream ends early (after inflating to {total} bytes)")
    if trailing:
        raise _err(data_file, "too large: bytes follow the end of the compressed stream")
    return total


def read_mhd_header(path: str | Path, allowed_types: tuple[str, ...]) -> MetaHeader:
    """Parse and validate an ``.mhd`` header and the size of its data file (see the module docstring)."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_HEADER_BYTES:
            raise _err(path, f"{path.stat().st_size} bytes: not a MetaImage header (expected a few short lines)")
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise _err(path, f"cannot read the MetaImage header ({e})") from None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise _err(path, f"MetaImage header lacks the {key} field")
    try:
        ndims = int(fields["NDims"])
        dim_size = tuple(int(v) for v in fields["DimSize"].split())
    except ValueError:
        raise _err(path, f"malformed NDims/DimSize ({fields['NDims'][:40]!r}, {fields['DimSize'][:80]!r})") from None
    if ndims != 3 or len(dim_size) != 3 or min(dim_size) <= 0:
        raise _err(path, f"expected a 3-D volume, header says NDims = {ndims}, DimSize = {fields['DimSize'][:80]}")
    etype = fields["ElementType"]
    if etype not in allowed_types or etype not in MET_DTYPES:
        raise _err(path, f"unsupported ElementType {etype[:40]} (expected one of {', '.join(allowed_types)})")
    channels = _int_field(path, fields, "ElementNumberOfChannels", "1")
    if channels != 1:
        raise _err(path, f"unsupported ElementNumberOfChannels {channels} (expected 1)")
    if fields.get("BinaryData", "True").lower() != "true":
        raise _err(path, f"unsupported BinaryData = {fields['BinaryData'][:20]} (expected binary voxel data)")
    spacing_text = fields.get("ElementSpacing", fields.get("ElementSize", "1 1 1"))
    try:
        spacing = tuple(float(v) for v in spacing_text.split())
    except ValueError:
        raise _err(path, f"malformed ElementSpacing {spacing_text[:80]!r}") from None
    if len(spacing) != 3:
        raise _err(path, f"ElementSpacing {spacing_text[:80]!r} does not give 3 values")
    check_spacing(path, spacing, "ElementSpacing")
    for key in ("Offset", "Position", "Origin", "TransformMatrix", "Rotation", "Orientation"):
        if key in fields:
            try:
                values = [float(v) for v in fields[key].split()]
            except ValueError:
                values = [math.nan]
            if not values or not all(math.isfinite(v) for v in values):
                raise _err(path, f"malformed {key} {fields[key][:80]!r} (expected finite numbers)")
    name = fields["ElementDataFile"]
    if name.upper() in ("LOCAL", "LIST") or "%" in name:
        raise _err(path, f"unsupported ElementDataFile {name[:80]!r} (expected one separate .raw file)")
    data_file = contained_path(path, name, "ElementDataFile")
    if not existing_file(data_file):
        raise _err(path, f"its data file {data_file.name} is missing (expected at {data_file})")
    itemsize = np.dtype(MET_DTYPES[etype]).itemsize
    check_array_size(path, tuple(reversed(dim_size)), itemsize, "this volume")
    nbytes = math.prod(dim_size) * itemsize
    header_size = _int_field(path, fields, "HeaderSize", "0")
    actual = data_file.stat().st_size
    header = MetaHeader(path, dim_size, etype, data_file, spacing, fields)
    expected = f"{path.name} says DimSize {' '.join(map(str, dim_size))} x {etype} = {nbytes} bytes"
    if header.compressed:
        if header_size < 0:
            raise _err(path, "HeaderSize = -1 with CompressedData = True is not supported")
        if "CompressedDataSize" in fields:
            stored = _int_field(path, fields, "CompressedDataSize", "0")
            if stored != actual - header_size:
                raise _err(data_file, f"{actual - header_size} compressed bytes, but {path.name} says CompressedDataSize = {stored}")
        inflated = _inflated_size(path, data_file, header_size, nbytes)
        if inflated != nbytes:
            kind = "truncated" if inflated < nbytes else "too large"
            raise _err(data_file, f"{kind}: inflates to {'more than ' if inflated > nbytes else ''}{inflated} bytes, but {expected}")
        return header
    if header_size == -1:  # data at the end of the file: anything in front is a header
        ok = actual >= nbytes
    elif header_size < 0:
        raise _err(path, f"malformed HeaderSize {header_size} (expected >= 0, or -1)")
    else:
        ok = actual == nbytes + header_size
    if not ok:
        kind = "truncated" if actual < nbytes + max(header_size, 0) else "too large"
        if actual > 2 and _looks_compressed(data_file, header_size):
            kind += " (it looks zlib-compressed: does the header lack CompressedData = True?)"
        raise _err(data_file, f"{kind}: {actual} bytes, but {path.name} says DimSize {' '.join(map(str, dim_size))} "
                              f"x {etype} = {nbytes + max(header_size, 0)} bytes")
    return header


def _looks_compressed(data_file: Path, skip: int) -> bool:
    with open(data_file, "rb") as f:
        f.seek(max(skip, 0))
        head = f.read(2)
    return len(head) == 2 and (head == b"\x1f\x8b" or (head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0))


def read_mhd(header: MetaHeader) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """(array ``[Z, H, W]``, spacing (slice, row, col) mm, direction cosines) via SimpleITK.

    Whatever ITK prints to stderr while reading is captured and folded into the one-line error.
    """
    import SimpleITK as sitk

    try:
        with captured_stderr() as stderr:
            img = sitk.ReadImage(str(header.path))
            array = sitk.GetArrayFromImage(img)
    except RuntimeError as e:
        raise _err(header.path, f"SimpleITK cannot read it ({last_message(str(e), stderr)})") from None
    if array.shape != header.shape:
        raise _err(header.path, f"SimpleITK read shape {array.shape}, header says {header.shape}")
    sx, sy, sz = img.GetSpacing()
    return array, (sz, sy, sx), tuple(img.GetDirection())


@dataclass
class SliverEntry:
    patient: str  # "liver-001"
    image_header: MetaHeader
    mask_header: MetaHeader

    @property
    def n_slices(self) -> int:
        return self.image_header.shape[0]

    def input_files(self) -> list[Path]:
        h = (self.image_header, self.mask_header)
        return [x.path for x in h] + [x.data_file for x in h]


@dataclass
class SliverCase:
    """``image [Z, H, W]`` int16/float HU, ``mask [Z, H, W]`` uint8 (1 = liver)."""

    patient: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]  # (slice, row, col) mm
    direction: tuple[float, ...]


def find_sliver(raw_dir: str | Path) -> tuple[list[SliverEntry], list[Path]]:
    """Pairs of ``liver-origNNN.mhd`` / ``liver-segNNN.mhd`` under ``raw_dir`` (any depth).

    Returns (entries sorted by number, unlabelled ``orig`` volumes skipped — SLiver07's test volumes
    come without public segmentations). A segmentation without its image is an error.
    """
    raw_dir = _need_dir(raw_dir)
    found: dict[str, dict[int, Path]] = {"orig": {}, "seg": {}}
    for p in sorted(raw_dir.rglob("*.mhd")):
        m = _SLIVER_NAME.match(p.name)
        if not m:
            continue
        existing_file(p)  # a dangling / looping link is an error, not a missing case
        role, number = m.group(1).lower(), int(m.group(2))
        if number in found[role]:
            raise _err(p, f"liver-{role}{number:03d} also found at {found[role][number]}")
        found[role][number] = p
    if not found["seg"]:
        raise _err(raw_dir, "no SLiver07 cases found (expected liver-origNNN.mhd + liver-segNNN.mhd with their .raw files)")
    entries = []
    for number, seg in sorted(found["seg"].items()):
        orig = found["orig"].get(number)
        if orig is None:
            raise _err(seg, f"segmentation without its image liver-orig{number:03d}.mhd")
        image_header = read_mhd_header(orig, SLIVER_IMAGE_TYPES)
        mask_header = read_mhd_header(seg, SLIVER_MASK_TYPES)
        if image_header.shape != mask_header.shape:
            raise _err(seg, f"segmentation DimSize {mask_header.dim_size} differs from its image {orig.name} DimSize {image_header.dim_size}")
        entries.append(SliverEntry(f"liver-{number:03d}", image_header, mask_header))
    skipped = [p for n, p in sorted(found["orig"].items()) if n not in found["seg"]]
    return entries, skipped


def read_sliver(entry: SliverEntry) -> SliverCase:
    image, spacing, direction = read_mhd(entry.image_header)
    seg, _, _ = read_mhd(entry.mask_header)
    if image.shape != seg.shape:
        raise _err(entry.mask_header.path, f"segmentation shape {seg.shape} differs from its image shape {image.shape}")
    if seg.min() < 0:
        raise _err(entry.mask_header.data_file, f"negative segmentation value {int(seg.min())} (expected 0 = background, 1 = liver)")
    mask = binary_mask(entry.mask_header.data_file, seg, "segmentation").astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise _err(entry.image_header.data_file, "image holds NaN or infinite values")
    return SliverCase(entry.patient, image, mask, spacing, direction)
