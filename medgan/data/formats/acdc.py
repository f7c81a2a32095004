"""ACDC: ``database/{training,testing}/patientNNN/{Info.cfg, patientNNN_frameXX[_gt].nii.gz}``.

Volumes are returned as ``[Z, H, W]``: a NIfTI array ``[x, y, z]`` is transposed to ``[z, y, x]`` (the
order nnU-Net uses for ACDC), spacings follow, in mm — converted from the header's unit (``xyzt_units``:
metres and micrometres are legal NIfTI; read as mm they would resample a volume a thousand-fold).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medgan.data.formats.common import (
    _err,
    _need_dir,
    check_array_size,
    check_labels,
    check_spacing,
    existing_file,
)

ACDC_LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
ACDC_PHASES = ("ED", "ES")
_PATIENT_DIR = re.compile(r"^patient\d{3}$")
_UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}  # ACDC writes mm or "unknown"
_MAX_FRAME = 999


@dataclass
class AcdcEntry:
    """One ACDC patient found on disk: paths, ``Info.cfg`` contents and slice counts (from headers)."""

    patient: str
    subset: str  # "training" | "testing" (the official separation)
    group: str  # NOR, MINF, DCM, HCM, RV ("unknown" when Info.cfg has no Group line)
    folder: Path
    info: dict[str, str]
    frames: dict[str, int]  # phase -> frame number
    files: dict[str, tuple[Path, Path]]  # phase -> (image, ground truth)
    shapes: dict[str, tuple[int, int, int]]  # phase -> [Z, H, W]

    @property
    def n_slices(self) -> int:
        return sum(s[0] for s in self.shapes.values())

    def input_files(self) -> list[Path]:
        return [self.folder / "Info.cfg"] + [p for pair in self.files.values() for p in pair]


@dataclass
class CardiacVolume:
    """One ED or ES frame: ``image [Z, H, W]`` float32 (scanner units), ``mask [Z, H, W]`` uint8 in 0..3."""

    phase: str
    frame: int
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]  # (slice, row, column) mm
    axcodes: str  # NIfTI orientation of the (x, y, z) voxel axes, e.g. "RAS"


@dataclass
class AcdcCase:
    patient: str
    subset: str
    group: str
    volumes: dict[str, CardiacVolume]  # "ED" / "ES"


def parse_info_cfg(path: Path) -> dict[str, str]:
    """``Info.cfg`` ("ED: 1" lines) -> dict; raises naming the file on an unreadable or malformed one."""
    try:
        if not existing_file(path):
            raise FileNotFoundError(path)
        if path.stat().st_size > 1 << 16:
            raise _err(path, f"{path.stat().st_size} bytes: not an Info.cfg (a few short 'Key: value' lines)")
        text = path.read_text()
    except FileNotFoundError:
        raise _err(path, "missing Info.cfg (every ACDC patient folder has one with its ED/ES frames)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _err(path, f"cannot read Info.cfg ({e})") from None
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise _err(path, f"malformed line {line[:80]!r} (expected 'Key: value')")
        info[key.strip()] = value.strip()
    for key in ACDC_PHASES:
        if key not in info:
            raise _err(path, f"no '{key}:' line (the {key} frame number is required)")
        try:
            frame = int(info[key])
        except ValueError:
            raise _err(path, f"'{key}: {info[key][:40]}' is not a frame number") from None
        if not 1 <= frame <= _MAX_FRAME:
            raise _err(path, f"'{key}: {frame}' is not a frame number (frames count from 1)")
    return info


def _nifti_path(folder: Path, stem: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{stem}{ext}"
        if existing_file(p):
            return p
    return None


def _open_nifti(path: Path):
    try:
        return nib.load(str(path), mmap=False)
    except Exception as e:  # nibabel raises several types for a broken header
        raise _err(path, f"not a readable NIfTI file ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _header_shape(path: Path, img) -> tuple[int, int, int]:
    """``[Z, H, W]`` of a 3-D NIfTI from its header (trailing singleton dims allowed), checked to fit memory."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise _err(path, f"expected a 3-D volume, header says shape {shape}")
    if min(shape) <= 0:
        raise _err(path, f"empty volume: header says shape {shape}")
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise _err(path, f"unsupported voxel data type {dtype} (expected integers or floats)")
    check_array_size(path, shape, 8, "reading this volume")  # scaled NIfTI data arrive as float64
    x, y, z = shape
    return (z, y, x)


def _nifti_shape(path: Path) -> tuple[int, int, int]:
    return _header_shape(path, _open_nifti(path))


def nifti_spacing_mm(path: Path, header) -> tuple[float, float, float]:
    """The (x, y, z) voxel size in mm, converted from the header's spatial unit."""
    try:
        unit = header.get_xyzt_units()[0]
        zooms = tuple(float(z) for z in header.get_zooms()[:3])
    except Exception as e:  # noqa: BLE001 - a damaged header may fail in several ways
        raise _err(path, f"unreadable voxel size or unit in the NIfTI header ({e})") from None
    if len(zooms) != 3:
        raise _err(path, f"header gives {len(zooms)} voxel sizes for a 3-D volume")
    scale = _UNIT_TO_MM.get(unit)
    if scale is None:
        raise _err(path, f"spatial unit {unit!r} in the header is not a length")
    spacing = tuple(z * scale for z in zooms)
    check_spacing(path, spacing)
    return spacing  # type: ignore[return-value]


def find_acdc(raw_dir: str | Path) -> list[AcdcEntry]:
    """All ``patientNNN`` folders under ``raw_dir`` (any depth), sorted by (subset, patient)."""
    raw_dir = _need_dir(raw_dir)
    folders = sorted(p for p in raw_dir.rglob("patient*") if p.is_dir() and _PATIENT_DIR.match(p.name))
    if not folders:
        raise _err(raw_dir, "no ACDC patient folders found (expected database/training/patientNNN/ with Info.cfg and frames)")
    entries = []
    seen: dict[str, Path] = {}
    for folder in folders:
        patient = folder.name
        if patient in seen:
            raise _err(folder, f"patient {patient} also found at {seen[patient]}")
        seen[patient] = folder
        subset = "testing" if folder.parent.name.lower().startswith("test") else "training"
        info = parse_info_cfg(folder / "Info.cfg")
        frames = {ph: int(info[ph]) for ph in ACDC_PHASES}
        files, shapes = {}, {}
        for phase, frame in frames.items():
            stem = f"{patient}_frame{frame:02d}"
            image, gt = _nifti_path(folder, stem), _nifti_path(folder, stem + "_gt")
            if image is None:
                raise _err(folder / f"{stem}.nii.gz", f"missing {phase} frame (Info.cfg says {phase}: {frame})")
            if gt is None:
                raise _err(folder / f"{stem}_gt.nii.gz", f"missing {phase} ground truth (Info.cfg says {phase}: {frame})")
            image_nii = _open_nifti(image)
            shape, gt_shape = _header_shape(image, image_nii), _nifti_shape(gt)
            if shape != gt_shape:
                raise _err(gt, f"ground-truth shape {gt_shape[::-1]} differs from its image {image.name} shape {shape[::-1]}")
            nifti_spacing_mm(image, image_nii.header)
            files[phase], shapes[phase] = (image, gt), shape
        group = info.get("Group", "unknown") or "unknown"
        entries.append(AcdcEntry(patient, subset, group, folder, info, frames, files, shapes))
    entries.sort(key=lambda e: (e.subset != "training", e.patient))
    return entries


def _load_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """NIfTI -> (array ``[Z, H, W]``, spacing (slice, row, col) mm, axcodes)."""
    img = _open_nifti(path)
    _header_shape(path, img)
    sx, sy, sz = nifti_spacing_mm(path, img.header)
    try:
        data = np.asanyarray(img.dataobj)
        axcodes = "".join(c or "?" for c in nib.aff2axcodes(img.affine))
    except Exception as e:  # noqa: BLE001 - truncated gzip, bad scaling, singular affine...
        raise _err(path, f"not a readable NIfTI file ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _err(path, f"expected a 3-D volume, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (sz, sy, sx), axcodes


def read_acdc(entry: AcdcEntry) -> AcdcCase:
    """Load the ED and ES frames of one patient (image + ground truth), validating the labels."""
    volumes = {}
    for phase, (image_path, gt_path) in entry.files.items():
        image, spacing, axcodes = _load_nifti(image_path)
        gt, gt_spacing, _ = _load_nifti(gt_path)
        if image.shape != gt.shape:
            raise _err(gt_path, f"ground-truth shape {gt.shape[::-1]} differs from its image shape {image.shape[::-1]}")
        if image.shape != entry.shapes[phase]:
            raise _err(image_path, f"shape {image.shape[::-1]} changed since its header was read as {entry.shapes[phase][::-1]}")
        if not np.isfinite(image).all():
            raise _err(image_path, "image holds NaN or infinite values")
        mask = check_labels(gt_path, gt, ACDC_LABELS)
        volumes[phase] = CardiacVolume(phase, entry.frames[phase], image.astype(np.float32), mask, spacing, axcodes)
    return AcdcCase(entry.patient, entry.subset, entry.group, volumes)
