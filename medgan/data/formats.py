"""Readers of the three raw dataset layouts (the real ones; the phantoms are written in them too).

Each dataset has two steps so that ``prepare`` can plan before it reads pixels:

* ``find_<dataset>(raw_dir) -> list[Entry]`` walks the layout, reads only small files and headers
  (``Info.cfg``, NIfTI / MetaImage headers, file sizes) and raises ``RawFormatError`` on anything
  missing or inconsistent — so most bad inputs fail in seconds, before any output is written.
* ``read_<dataset>(entry) -> Case`` loads the pixels into plain numpy arrays and checks the values
  (label set, empty ground truth, image / ground-truth agreement).

Volumes are returned as ``[Z, H, W]`` arrays (slice, row, column) — the order SimpleITK's
``GetArrayFromImage`` gives and the one nnU-Net uses for ACDC: a NIfTI array ``[x, y, z]`` is
transposed to ``[z, y, x]``. Spacings follow the same axis order, in mm.

Raw inputs are only ever opened for reading.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgan.errors import RawFormatError


def _err(path: Path | str, problem: str) -> RawFormatError:
    return RawFormatError(f"{path}: {problem}")


def _need_dir(raw_dir: str | Path) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise _err(raw_dir, "raw dataset folder does not exist")
    return raw_dir


# ============================================================================================
# ACDC: database/{training,testing}/patientNNN/{Info.cfg, patientNNN_frameXX[_gt].nii.gz}
# ============================================================================================
ACDC_LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
ACDC_PHASES = ("ED", "ES")
_PATIENT_DIR = re.compile(r"^patient\d{3}$")


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
            raise _err(path, f"malformed line {line!r} (expected 'Key: value')")
        info[key.strip()] = value.strip()
    for key in ACDC_PHASES:
        if key not in info:
            raise _err(path, f"no '{key}:' line (the {key} frame number is required)")
        try:
            int(info[key])
        except ValueError:
            raise _err(path, f"'{key}: {info[key]}' is not a frame number") from None
    return info


def _nifti_path(folder: Path, stem: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _nifti_shape(path: Path) -> tuple[int, int, int]:
    """``[Z, H, W]`` of a 3-D NIfTI from its header (trailing singleton dims allowed)."""
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path), mmap=False).shape)
    except Exception as e:  # nibabel raises several types for a broken header
        raise _err(path, f"not a readable NIfTI file ({e})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise _err(path, f"expected a 3-D volume, header says shape {shape}")
    x, y, z = shape
    return (z, y, x)


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
            shape, gt_shape = _nifti_shape(image), _nifti_shape(gt)
            if shape != gt_shape:
                raise _err(gt, f"ground-truth shape {gt_shape[::-1]} differs from its image {image.name} shape {shape[::-1]}")
            files[phase], shapes[phase] = (image, gt), shape
        group = info.get("Group", "unknown") or "unknown"
        entries.append(AcdcEntry(patient, subset, group, folder, info, frames, files, shapes))
    entries.sort(key=lambda e: (e.subset != "training", e.patient))
    return entries


def _load_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """NIfTI -> (array ``[Z, H, W]``, spacing (slice, row, col) mm, axcodes)."""
    import nibabel as nib

    try:
        img = nib.load(str(path), mmap=False)
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        axcodes = "".join(c or "?" for c in nib.aff2axcodes(img.affine))
    except Exception as e:
        raise _err(path, f"not a readable NIfTI file ({e})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _err(path, f"expected a 3-D volume, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (zooms[2], zooms[1], zooms[0]), axcodes


def check_labels(path: Path, mask: np.ndarray, labels: dict[str, str]) -> np.ndarray:
    """Integer-valued labels inside the dataset's set and at least one foreground voxel -> uint8."""
    allowed = sorted(int(k) for k in labels)
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask)):
            raise _err(path, "ground truth holds non-integer values (expected integer labels)")
    values = np.unique(mask).astype(np.int64)
    bad = sorted(set(values.tolist()) - set(allowed))
    if bad:
        raise _err(path, f"labels {bad[:10]} are outside the dataset's label set {allowed}")
    if not (values > 0).any():
        raise _err(path, "ground truth is empty (no labelled voxel)")
    return mask.astype(np.uint8)


def read_acdc(entry: AcdcEntry) -> AcdcCase:
    """Load the ED and ES frames of one patient (image + ground truth), validating the labels."""
    volumes = {}
    for phase, (image_path, gt_path) in entry.files.items():
        image, spacing, axcodes = _load_nifti(image_path)
        gt, gt_spacing, _ = _load_nifti(gt_path)
        if image.shape != gt.shape:
            raise _err(gt_path, f"ground-truth shape {gt.shape[::-1]} differs from its image shape {image.shape[::-1]}")
        if not np.isfinite(image).all():
            raise _err(image_path, "image holds NaN or infinite values")
        mask = check_labels(gt_path, gt, ACDC_LABELS)
        volumes[phase] = CardiacVolume(phase, entry.frames[phase], image.astype(np.float32), mask, spacing, axcodes)
    return AcdcCase(entry.patient, entry.subset, entry.group, volumes)


# ============================================================================================
# SLiver07: liver-orig0NN.mhd/.raw (MET_SHORT HU) + liver-seg0NN.mhd/.raw (MET_UCHAR, > 0 liver)
# ============================================================================================
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


def read_mhd_header(path: str | Path, allowed_types: tuple[str, ...]) -> MetaHeader:
    """Parse and validate an ``.mhd`` header and the size of its data file.

    Checked here rather than left to SimpleITK, whose errors on these cases are terse or (for a
    truncated file) missing: the data file exists, its size is ``prod(DimSize) * itemsize``
    (+ ``HeaderSize``), the element type is one ``allowed_types`` holds.
    """
    path = Path(path)
    try:
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
        raise _err(path, f"malformed NDims/DimSize ({fields['NDims']!r}, {fields['DimSize']!r})") from None
    if ndims != 3 or len(dim_size) != 3 or min(dim_size) <= 0:
        raise _err(path, f"expected a 3-D volume, header says NDims = {ndims}, DimSize = {fields['DimSize']}")
    etype = fields["ElementType"]
    if etype not in allowed_types or etype not in MET_DTYPES:
        raise _err(path, f"unsupported ElementType {etype} (expected one of {', '.join(allowed_types)})")
    if int(fields.get("ElementNumberOfChannels", "1")) != 1:
        raise _err(path, f"unsupported ElementNumberOfChannels {fields['ElementNumberOfChannels']} (expected 1)")
    spacing_text = fields.get("ElementSpacing", fields.get("ElementSize", "1 1 1"))
    try:
        spacing = tuple(float(v) for v in spacing_text.split())
    except ValueError:
        raise _err(path, f"malformed ElementSpacing {spacing_text!r}") from None
    name = fields["ElementDataFile"]
    if name.upper() in ("LOCAL", "LIST") or "%" in name:
        raise _err(path, f"unsupported ElementDataFile {name!r} (expected one separate .raw file)")
    data_file = path.parent / name
    if not data_file.is_file():
        raise _err(path, f"its data file {data_file.name} is missing (expected at {data_file})")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if not compressed:
        nbytes = int(np.prod(dim_size)) * np.dtype(MET_DTYPES[etype]).itemsize
        header_size = int(fields.get("HeaderSize", "0") or 0)
        actual = data_file.stat().st_size
        if header_size == -1:  # data at the end of the file: anything in front is a header
            ok = actual >= nbytes
        else:
            ok = actual == nbytes + header_size
        if not ok:
            kind = "truncated" if actual < nbytes + max(header_size, 0) else "too large"
            raise _err(
                data_file,
                f"{kind}: {actual} bytes, but {path.name} says DimSize {' '.join(map(str, dim_size))} "
                f"x {etype} = {nbytes + max(header_size, 0)} bytes",
            )
    return MetaHeader(path, dim_size, etype, data_file, spacing, fields)


def _read_mhd(header: MetaHeader) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """(array ``[Z, H, W]``, spacing (slice, row, col) mm, direction cosines) via SimpleITK."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(header.path))
    except RuntimeError as e:
        raise _err(header.path, f"SimpleITK cannot read it ({str(e).strip().splitlines()[-1]})") from None
    array = sitk.GetArrayFromImage(img)
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
    image, spacing, direction = _read_mhd(entry.image_header)
    seg, _, _ = _read_mhd(entry.mask_header)
    if image.shape != seg.shape:
        raise _err(entry.mask_header.path, f"segmentation shape {seg.shape} differs from its image shape {image.shape}")
    if seg.min() < 0:
        raise _err(entry.mask_header.data_file, f"negative segmentation value {int(seg.min())} (expected 0 = background, > 0 = liver)")
    mask = (seg > 0).astype(np.uint8)
    if not mask.any():
        raise _err(entry.mask_header.data_file, "ground truth is empty (no liver voxel)")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise _err(entry.image_header.data_file, "image holds NaN or infinite values")
    return SliverCase(entry.patient, image, mask, spacing, direction)


# ============================================================================================
# IDRiD: A. Segmentation/1. Original Images/{a. Training Set,b. Testing Set}/IDRiD_NN.jpg
#        A. Segmentation/2. All Segmentation Groundtruths/<same>/5. Optic Disc/IDRiD_NN_OD.tif
# ============================================================================================
IDRID_LABELS = {"0": "background", "1": "optic disc"}
_IDRID_IMAGE = re.compile(r"^(IDRiD_\d+)\.jpe?g$", re.IGNORECASE)
_IDRID_MASK = re.compile(r"^(IDRiD_\d+)_OD\.tiff?$", re.IGNORECASE)


def _idrid_subset(path: Path, root: Path) -> str:
    for part in path.relative_to(root).parts[:-1]:
        low = part.lower()
        if "testing" in low or low.startswith("b. test"):
            return "testing"
        if "training" in low or low.startswith("a. train"):
            return "training"
    return "training"


@dataclass
class IdridEntry:
    patient: str  # "IDRiD_01"
    subset: str  # "training" | "testing"
    image_path: Path
    mask_path: Path
    n_slices: int = 1

    def input_files(self) -> list[Path]:
        return [self.image_path, self.mask_path]


@dataclass
class IdridCase:
    """``image [H, W, 3]`` uint8 RGB, ``mask [H, W]`` uint8 (1 = optic disc)."""

    patient: str
    subset: str
    image: np.ndarray
    mask: np.ndarray


def find_idrid(raw_dir: str | Path) -> list[IdridEntry]:
    """Every ``IDRiD_NN.jpg`` under ``raw_dir`` with its ``IDRiD_NN_OD.tif`` optic-disc mask."""
    raw_dir = _need_dir(raw_dir)
    images: dict[tuple[str, str], Path] = {}
    masks: dict[tuple[str, str], Path] = {}
    for p in sorted(raw_dir.rglob("IDRiD_*")):
        if not p.is_file():
            continue
        for pattern, table in ((_IDRID_IMAGE, images), (_IDRID_MASK, masks)):
            m = pattern.match(p.name)
            if m:
                key = (_idrid_subset(p, raw_dir), m.group(1))
                if key in table:
                    raise _err(p, f"{m.group(1)} ({key[0]}) also found at {table[key]}")
                table[key] = p
    if not images:
        raise _err(raw_dir, "no IDRiD images found (expected A. Segmentation/1. Original Images/a. Training Set/IDRiD_NN.jpg)")
    entries = []
    for (subset, stem), image in sorted(images.items()):
        mask = masks.get((subset, stem))
        if mask is None:
            subset_dir = "a. Training Set" if subset == "training" else "b. Testing Set"
            raise _err(image, f"no optic-disc mask {stem}_OD.tif (expected under "
                              f"'2. All Segmentation Groundtruths/{subset_dir}/5. Optic Disc/')")
        entries.append(IdridEntry(stem, subset, image, mask))
    # The real set numbers testing images on from the training ones; keep ids unique regardless.
    stems = [e.patient for e in entries]
    for e in entries:
        if stems.count(e.patient) > 1 and e.subset == "testing":
            e.patient = f"test-{e.patient}"
    return entries


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns before it fails on a cut-off file; the error says it all
            img = Image.open(f)
            img.load()
        return img
    except UnidentifiedImageError:
        raise _err(path, "unreadable image file (Pillow does not recognise it as an image)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise _err(path, f"unreadable image file ({e})") from None


def read_idrid(entry: IdridEntry) -> IdridCase:
    """The RGB fundus and its optic-disc mask (red channel > 0), checked to have the same size."""
    img = _open_image(entry.image_path)
    mask_img = _open_image(entry.mask_path)
    if mask_img.size != img.size:
        raise _err(entry.mask_path, f"mask size {mask_img.size[0]}x{mask_img.size[1]} differs from its image "
                                    f"{entry.image_path.name} size {img.size[0]}x{img.size[1]}")
    image = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mask_img.mode in ("1", "L", "I", "I;16", "F"):
        disc = np.asarray(mask_img) > 0
    else:  # RGB(A) / palette: the disc is drawn in the red channel
        disc = np.asarray(mask_img.convert("RGB"))[..., 0] > 0
    if not disc.any():
        raise _err(entry.mask_path, "ground truth is empty (no optic-disc pixel)")
    return IdridCase(entry.patient, entry.subset, image, disc.astype(np.uint8))
