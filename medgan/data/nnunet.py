"""Read a dataset in nnU-Net v2's raw layout: ``medgan data prepare nnunet --raw nnUNet_raw/Dataset500_Name``.

The layout (nnU-Net's ``documentation/dataset_format.md``)::

    DatasetXXX_Name/
        dataset.json    channel_names {"0": ...}, labels {"background": 0, ...}, numTraining, file_ending
        imagesTr/       <case>_0000.nii.gz, <case>_0001.nii.gz ... (one file per input channel)
        labelsTr/       <case>.nii.gz (integer labels, same geometry)
        imagesTs/ labelsTs/   optional; cases with a label here become the test split

Two kinds of folder are read:

* one ``medgan export --format nnunet`` wrote: its ``medgan_provenance.json`` lists every case's patient,
  slice, split and per-slice extras in the exported set's row order, and the images are already in
  [-1, 1] (float32 copies of the float16 arrays), so prepare gives back the exported set exactly;
* any other nnU-Net dataset: each case is a patient, its volume's slices are its rows, intensities are
  mapped per volume (1st–99th percentile -> [-1, 1]) and slices padded to a square and resized.

NIfTI axes: a file's voxel array is ``[x, y, z]`` = ``[W, H, Z]``; the prepared arrays are ``[Z, H, W]``
(as SimpleITK and nnU-Net's readers order them), so reading transposes ``(2, 1, 0)`` and writing undoes it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medgan.data.prepare import PREPARERS, Converted, Preparer, pad_to_square, percentile_normalise, resize2d
from medgan.data.splits import split_official
from medgan.errors import RawFormatError

PROVENANCE_FILE = "medgan_provenance.json"  # written beside every export (nnunet, nifti, png)
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
FILE_ENDINGS = (".nii.gz", ".nii")  # what nibabel reads; nnU-Net's other endings are not read here
MAX_VOXELS = 1 << 30  # 4 GiB of float32: a header asking for more is damaged, not a real scan
SUBSETS = {"imagesTr": ("labelsTr", "training"), "imagesTs": ("labelsTs", "testing")}
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _err(path: Path | str, problem: str) -> RawFormatError:
    return RawFormatError(f"{path}: {problem}")


# --------------------------------------------------------------------------------------------
# files and axes (the exporter writes with the same helpers)
# --------------------------------------------------------------------------------------------
def image_name(case: str, channel: int, ending: str = ".nii.gz") -> str:
    return f"{case}_{channel:04d}{ending}"


def to_nifti_axes(volume: np.ndarray) -> np.ndarray:
    """``[Z, H, W]`` -> NIfTI voxel order ``[W, H, Z]`` (x = column, y = row, z = slice)."""
    return np.ascontiguousarray(np.asarray(volume).transpose(2, 1, 0))


def nifti_shape(path: Path) -> tuple[int, ...]:
    """The voxel shape a NIfTI header declares (nothing else is read)."""
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as e:  # nibabel raises several types for a damaged header
        raise _err(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from None


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """A 3-D NIfTI -> (``[Z, H, W]`` array in its stored dtype, voxel zooms (x, y, z) mm, 4x4 affine)."""
    shape = nifti_shape(path)
    img = nib.load(str(path))
    if len(shape) != 3:
        raise _err(path, f"expected a 3-D volume, found shape {shape} (2-D slices are stored as 1 x H x W)")
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise _err(path, f"header shape {shape} is larger than any scan this reader accepts")
    try:
        array = np.asanyarray(img.dataobj)
    except Exception as e:
        raise _err(path, f"voxel data unreadable ({type(e).__name__}: {e})") from None
    return array.transpose(2, 1, 0), tuple(float(z) for z in img.header.get_zooms()[:3]), np.asarray(img.affine)


def load_dataset_json(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    if not folder.is_dir():
        raise _err(folder, "nnU-Net dataset folder does not exist")
    if not path.is_file():
        raise _err(path, "missing: an nnU-Net dataset folder holds dataset.json, imagesTr/ and labelsTr/")
    try:
        ds = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _err(path, f"not valid JSON ({e})") from None
    if not isinstance(ds, dict):
        raise _err(path, "must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in ds]
    if missing:
        raise _err(path, f"lacks the required keys {missing}")
    return ds


def labels_by_value(ds: dict[str, Any], path: Path) -> dict[str, str]:
    """nnU-Net's ``{"background": 0, "RV": 1}`` -> the prepared format's ``{"0": "background", "1": "RV"}``."""
    out: dict[str, str] = {}
    for name, value in ds["labels"].items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(path, f"label {name!r} has value {value!r}; this reader takes one integer per label (no regions)")
        out[str(value)] = str(name)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def list_cases(images_dir: Path, ending: str) -> dict[str, list[int]]:
    """``{case: [channel indices]}`` of the ``<case>_XXXX<ending>`` files in ``images_dir``."""
    cases: dict[str, list[int]] = {}
    for path in sorted(images_dir.iterdir()):
        if not path.name.endswith(ending) or path.name.startswith("."):
            continue
        match = _CHANNEL_SUFFIX.match(path.name[: -len(ending)])
        if match is None:
            raise _err(path, f"image name must be <case>_XXXX{ending} (XXXX = 4-digit channel index)")
        cases.setdefault(match["case"], []).append(int(match["channel"]))
    return cases


def read_provenance(folder: Path) -> dict[str, Any] | None:
    path = folder / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        prov = json.loads(path.read_text())
        if not all(isinstance(prov["dataset"][k], (str, int, dict)) for k in ("name", "image_size", "labels")):
            raise TypeError("dataset name, image_size or labels of the wrong type")
        if not all("case" in row and "patient" in row and "split" in row for row in prov["cases"]):
            raise KeyError("a case row without case, patient or split")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
        raise _err(path, f"not a medgan export sidecar ({type(e).__name__}: {e}); delete it to read the folder "
                         "as a plain nnU-Net dataset") from None
    return prov


# --------------------------------------------------------------------------------------------
# the preparer
# --------------------------------------------------------------------------------------------
@dataclass
class NnunetEntry:
    """One patient: its cases (each ``images`` = one file per channel, ``label``), in row order."""

    patient: str
    subset: str  # "training" (imagesTr) | "testing" (imagesTs)
    cases: list[tuple[str, list[Path], Path]]
    depth: list[int]  # slices per case
    labels: set[int]
    exported: bool  # written by medgan export: images already in [-1, 1], one slice per case
    split: str | None = None
    slices: list[int] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return sum(self.depth)

    def input_files(self) -> list[Path]:
        return [p for _, images, label in self.cases for p in (*images, label)]


def _case_files(folder: Path, ending: str, channels: int) -> dict[str, tuple[str, list[Path], Path]]:
    """``{case: (subset, channel files, label file)}`` over imagesTr (and labelled imagesTs cases)."""
    found: dict[str, tuple[str, list[Path], Path]] = {}
    for images_name, (labels_name, subset) in SUBSETS.items():
        images_dir = folder / images_name
        if not images_dir.is_dir():
            if subset == "training":
                raise _err(images_dir, "missing: an nnU-Net dataset holds its training images in imagesTr/")
            continue
        for case, chans in list_cases(images_dir, ending).items():
            label = folder / labels_name / f"{case}{ending}"
            if sorted(chans) != list(range(channels)):
                raise _err(images_dir / image_name(case, 0, ending),
                           f"case {case!r} has channels {sorted(chans)}, dataset.json declares {channels}")
            if not label.is_file():
                if subset == "testing":
                    continue  # an unlabelled test image cannot become a prepared slice
                raise _err(label, f"missing: training case {case!r} has no label file")
            if case in found:
                raise _err(label, f"case {case!r} is in both imagesTr and imagesTs")
            found[case] = (subset, [images_dir / image_name(case, c, ending) for c in range(channels)], label)
    if not found:
        raise _err(folder / "imagesTr", f"no cases (<case>_0000{ending}) found")
    return found


def find_nnunet(folder: str | Path) -> tuple[list[NnunetEntry], dict]:
    folder = Path(folder)
    ds = load_dataset_json(folder)
    ending = str(ds["file_ending"])
    if ending not in FILE_ENDINGS:
        raise _err(folder / "dataset.json", f"file_ending {ending!r}: this reader reads {list(FILE_ENDINGS)}")
    labels = {int(k) for k in labels_by_value(ds, folder / "dataset.json")}
    files = _case_files(folder, ending, len(ds["channel_names"]))
    prov = read_provenance(folder)
    if prov is None:
        entries = []
        for case, (subset, images, label) in files.items():
            shape = nifti_shape(label)
            if len(shape) != 3 or shape[2] < 1:
                raise _err(label, f"expected a 3-D label volume, found shape {shape}")
            depth = int(shape[2])
            entries.append(NnunetEntry(case, subset, [(case, images, label)], [depth], labels, exported=False,
                                       slices=list(range(depth))))
        return entries, {"nnunet_dataset": folder.name}
    entries = []
    listed = set()
    for row in prov["cases"]:
        case = row["case"]
        if case not in files:
            raise _err(folder / PROVENANCE_FILE, f"lists case {case!r}, which has no image + label files")
        listed.add(case)
        last = entries[-1] if entries else None
        if last is None or last.patient != row["patient"]:  # consecutive rows of one patient: one entry
            last = NnunetEntry(row["patient"], files[case][0], [], [], labels, exported=True, split=row["split"])
            entries.append(last)
        last.cases.append((case, *files[case][1:]))
        last.depth.append(1)
        last.slices.append(int(row["slice"]))
        for key, value in row.get("extra", {}).items():
            last.extra.setdefault(key, []).append(value)
    unlisted = sorted(set(files) - listed)
    if unlisted:
        raise _err(folder / PROVENANCE_FILE, f"does not list case {unlisted[0]!r} (delete the sidecar to read the "
                                             "folder as a plain nnU-Net dataset)")
    # these keys override what prepare() fills in: an exported set comes back with its own source and normalisation
    notes = {"nnunet_dataset": folder.name, "source": prov["dataset"]["source"],
             "normalisation": prov["dataset"]["normalisation"],
             "exported_from": {k: prov.get(k) for k in ("source_set", "data_source", "code_version", "exported_at")}}
    return entries, notes


def _split_nnunet(entries: list[NnunetEntry], val_fraction: float, seed: int) -> dict[str, list[str]]:
    if all(e.split is not None for e in entries):  # a medgan export keeps the source's patient-level splits
        splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for e in entries:
            if e.patient not in splits[e.split]:
                splits[e.split].append(e.patient)
        return splits
    return split_official({e.patient: e.subset for e in entries}, val_fraction=val_fraction, seed=seed)


def _convert_nnunet(entry: NnunetEntry, size: int) -> Converted:
    images, masks = [], []
    for case, channel_files, label_file in entry.cases:
        mask, _, _ = read_nifti(label_file)
        chans = []
        for path in channel_files:
            volume, _, _ = read_nifti(path)
            if volume.shape != mask.shape:
                raise _err(path, f"shape {volume.shape[::-1]} differs from its label's {mask.shape[::-1]}")
            chans.append(volume.astype(np.float32))
        volume = np.stack(chans, axis=1)  # [Z, C, H, W]
        if not np.isfinite(volume).all():
            raise _err(channel_files[0], f"case {case!r} holds NaN or infinite voxels")
        if entry.exported:
            if volume.min() < -1.001 or volume.max() > 1.001:
                raise _err(channel_files[0], "values outside [-1, 1]: not the images medgan exported")
        else:
            volume, _, _ = percentile_normalise(volume, channel_files[0])
        if not np.array_equal(mask, np.round(mask)) or not set(np.unique(mask).astype(int).tolist()) <= entry.labels:
            raise _err(label_file, f"label values {np.unique(mask).tolist()[:8]} are not the declared {sorted(entry.labels)}")
        images.append(volume)
        masks.append(mask.astype(np.uint8))
    image, mask = np.concatenate(images), np.concatenate(masks)
    if image.shape[-2:] != (size, size):  # a foreign dataset: square the slices and bring them to ``size``
        image = np.stack([[resize2d(pad_to_square(c, -1.0), size, nearest=False) for c in s] for s in image])
        mask = np.stack([resize2d(pad_to_square(s, 0), size, nearest=True) for s in mask])
    return Converted(np.clip(image, -1.0, 1.0), mask, np.asarray(entry.slices, np.int32), dict(entry.extra),
                     {"cases": [c for c, _, _ in entry.cases]})


def _for_folder(folder: Path) -> Preparer:
    """The preparer of one nnU-Net folder: channels, labels and size from its dataset.json (and sidecar)."""
    folder = Path(folder)
    ds = load_dataset_json(folder)
    labels = labels_by_value(ds, folder / "dataset.json")
    prov = read_provenance(folder)
    channels = len(ds["channel_names"])
    if prov is not None:
        d = prov["dataset"]
        return dataclasses.replace(
            NNUNET, name=d["name"], modality=d["modality"], channels=channels, labels=labels,
            default_size=int(d["image_size"]),
            geometry=lambda size: dict(d.get("geometry") or {}), extra_arrays=dict(d.get("extra_arrays", {})),
            for_folder=None,
        )
    first = next(iter(_case_files(folder, str(ds["file_ending"]), channels).values()))[2]
    side = max(nifti_shape(first)[:2])
    name = folder.name.split("_", 1)[1] if re.match(r"^Dataset\d{3}_.+", folder.name) else folder.name
    return dataclasses.replace(
        NNUNET, name=name, modality=", ".join(str(v) for v in ds["channel_names"].values()), channels=channels,
        labels=labels, default_size=int(side), for_folder=None,
    )


NNUNET = PREPARERS.register("nnunet")(
    Preparer(
        name="nnunet",
        modality="(from dataset.json)",
        channels=1,
        labels={"0": "background"},
        default_size=256,
        find=find_nnunet,
        split=_split_nnunet,
        convert=_convert_nnunet,
        normalisation={"method": "percentile", "percentiles": [1, 99], "per": "volume", "range": [-1, 1],
                       "clip": True, "note": "medgan exports are read back unchanged"},
        geometry=lambda size: {"resampling": "slices padded to a square and resized with Pillow when not size x size",
                               "orientation": "NIfTI [x, y, z] read as [z, y, x] = [N, H, W]"},
        for_folder=_for_folder,
    )
)
