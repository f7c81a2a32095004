"""Hand a prepared or generated set to segmentation tools: ``export`` / ``medgan export DIR --format F --out OUT``.

Formats (``EXPORTERS``):

- ``nnunet``: nnU-Net v2 raw data in ``OUT/DatasetXXX_Name`` (OUT is the ``nnUNet_raw`` folder):
  ``imagesTr/<case>_0000.nii.gz`` (one file per image channel: ``_0000 _0001 _0002`` for RGB),
  ``labelsTr/<case>.nii.gz`` and ``dataset.json`` (``channel_names``, ``labels`` with background 0,
  ``numTraining``, ``file_ending``). A case is one slice, stored as nnU-Net's documented 2-D convention: a
  1 x H x W volume whose slice axis has spacing 999 mm. Slices of the set's ``test`` split go to
  ``imagesTs``/``labelsTs`` (nnU-Net never trains on them); a generated set has train slices only.
  ``splits_final.json`` holds 5 folds by patient (nnU-Net's own folds split cases = slices, which would put
  one patient in train and val): copy it to ``nnUNet_preprocessed/DatasetXXX_Name/`` before training.
- ``nifti``: ``OUT/images/<volume>.nii.gz`` + ``OUT/labels/<volume>.nii.gz``, one volume per patient (a
  new volume starts where a patient's slice index stops increasing: ACDC's ED and ES stacks).
- ``png``: ``OUT/images/<case>.png`` (8-bit grey or RGB) + ``OUT/masks/<case>.png`` (label index per pixel).

Images are written as float32 copies of the set's float16 values, so NIfTI exports hold them exactly (PNG
quantises to 8 bits); masks are exact everywhere. Every export carries ``medgan_provenance.json``: the source
folder and its content hash, the run / config hash / seed / checkpoint kimg of a generated set, whether the
data behind it is ``phantom`` or ``raw``, the medgan code version, the time, and every case's patient,
slice, split and per-slice extras — what ``medgan data prepare nnunet`` reads to give the set back unchanged.
The export is written into a temporary folder renamed into place at the end; ``nnunet`` exports are checked
with ``verify_nnunet`` (nnU-Net's documented rules) before that rename.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from medgan.data import PreparedSet, load_prepared
from medgan.data.nnunet import (
    PROVENANCE_FILE,
    image_name,
    labels_by_value,
    list_cases,
    load_dataset_json,
    read_nifti,
    to_nifti_axes,
)
from medgan.errors import ConfigError, NnunetFormatError, OutputExistsError, RawFormatError
from medgan.io import atomic_folder, atomic_write, jsonable, write_json
from medgan.registry import Registry
from medgan.runtime import code_version, progress_bar

FORMATS = ("nnunet", "nifti", "png")
DEFAULT_DATASET_ID = 500  # nnU-Net: 1-10 are the Decathlon, published datasets take low IDs
SLICE_GAP_2D_MM = 999.0  # nnU-Net's 2-D convention: the pseudo slice axis gets a spacing far above in-plane
SPLITS_FILE = "splits_final.json"  # copy to nnUNet_preprocessed/DatasetXXX_Name/ for folds by patient
EXPORTERS: Registry[Callable[..., dict[str, Any]]] = Registry("export format")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")


# --------------------------------------------------------------------------------------------
# what every format shares
# --------------------------------------------------------------------------------------------
def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", str(text)).strip("-") or "x"


def case_ids(ps: PreparedSet) -> list[str]:
    """``<patient>_<row>``: unique (the row), readable (the patient), safe in any file system."""
    width = max(5, len(str(len(ps) - 1)))
    return [f"{_safe(p)}_{i:0{width}d}" for i, p in enumerate(ps.patients)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _real_meta(ps: PreparedSet) -> dict[str, Any]:
    """``dataset.json`` of the real set a generated set was trained on ({} when it is not at hand)."""
    root = (ps.meta.get("real_dataset") or {}).get("root")
    return _read_json(Path(root) / "dataset.json") if root else {}


def data_source(ps: PreparedSet) -> str | None:
    """``phantom`` or ``raw``: the data behind the set (for a generated set, behind its run)."""
    if ps.source != "generated":
        return ps.source
    run_dir = ps.meta.get("run_dir")
    run_config = _read_json(Path(run_dir) / "config.json") if run_dir else {}
    return (run_config.get("dataset") or {}).get("source") or _real_meta(ps).get("source")


def pixel_spacing(ps: PreparedSet, patient: str) -> tuple[float, float, str]:
    """(row mm, column mm, where it came from) of one patient's slices after prepare's resampling."""
    case = (ps.meta.get("cases") or {}).get(patient) or {}
    if "pixel_mm_after_resize" in case:  # SLiver07: each volume resized by its own factor
        row, col = case["pixel_mm_after_resize"]
        return float(row), float(col), "cases.pixel_mm_after_resize"
    geometry = ps.meta.get("geometry") or _real_meta(ps).get("geometry") or {}
    if len(geometry.get("spacing_mm") or []) == 2:  # ACDC: one spacing for the whole set
        row, col = geometry["spacing_mm"]
        return float(row), float(col), "geometry.spacing_mm"
    return 1.0, 1.0, "none recorded (1 mm)"


def slice_spacing(ps: PreparedSet, patient: str) -> float:
    """The acquired slice gap of a patient (``cases.<p>[.<phase>].spacing_mm[0]``), 1 mm when not recorded."""
    case = (ps.meta.get("cases") or {}).get(patient) or {}
    for info in (case, *(v for v in case.values() if isinstance(v, dict))):
        spacing = info.get("spacing_mm") if isinstance(info, dict) else None
        if isinstance(spacing, list) and len(spacing) == 3:
            return float(spacing[0])
    return 1.0


def nifti_gz(array: np.ndarray, zooms: tuple[float, ...]) -> bytes:
    """A gzipped NIfTI-1 of ``array`` (voxel order x, y, z[, c]) with a diagonal affine of ``zooms`` (mm)."""
    affine = np.diag([*zooms[:3], 1.0])
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_zooms(tuple(zooms))
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # mtime 0: same set, same bytes


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _image(ps: PreparedSet, row: int) -> np.ndarray:
    return np.asarray(ps.images[row], np.float32)  # float16 -> float32 is exact


def _case_rows(ps: PreparedSet, ids: list[str]) -> list[dict[str, Any]]:
    split_of = ps.split_of()
    return [{"case": case, "row": i, "patient": str(ps.patients[i]), "slice": int(ps.slices[i]),
             "split": str(split_of[i]), "extra": {k: v[i] for k, v in ps.extra.items()}}
            for i, case in enumerate(ids)]


def provenance(ps: PreparedSet, fmt: str) -> dict[str, Any]:
    """What the sidecar records about the set an export came from (the per-format part is added by each writer)."""
    m = ps.meta
    source_set = {"path": str(ps.root.resolve()), "content_sha256": ps.content_sha256, "name": m["name"],
                  "source": m["source"]}
    if m["source"] == "generated":
        for key in ("run_id", "run_dir", "config_hash", "seed", "checkpoint", "checkpoint_kimg", "gan", "model",
                    "loss", "truncation", "mask_source"):
            source_set[key] = m.get(key)
        source_set["generated_by"] = m.get("code_version")
        source_set["real_dataset"] = m.get("real_dataset")
    return {
        "medgan_export": 1,
        "format": fmt,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "source_set": source_set,
        "data_source": data_source(ps),
        "dataset": {"name": m["name"], "modality": m["modality"], "channels": ps.channels,
                    "image_size": ps.image_size, "labels": ps.labels, "source": m["source"],
                    "normalisation": m["normalisation"], "splits": m["splits"], "geometry": m.get("geometry"),
                    "extra_arrays": {k: v.dtype.str for k, v in ps.extra.items()}},
    }


def channel_names(ps: PreparedSet) -> dict[str, str]:
    """nnU-Net picks its normalisation by channel name: ``CT`` = its CT scheme, anything else = z-score."""
    if ps.channels == 3:
        return {"0": "R", "1": "G", "2": "B"}
    base = "CT" if str(ps.meta["modality"]).upper().startswith("CT") else "image"
    return {str(c): base if ps.channels == 1 else f"{base}{c}" for c in range(ps.channels)}


# --------------------------------------------------------------------------------------------
# the formats
# --------------------------------------------------------------------------------------------
@EXPORTERS.register("nnunet")
def write_nnunet(ps: PreparedSet, folder: Path, *, progress: bool | None = None, **_) -> dict[str, Any]:
    ids = case_ids(ps)
    rows = _case_rows(ps, ids)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir()
    spacing = {}
    for row in progress_bar(rows, progress=progress, desc="export nnunet", unit="slice"):
        i, suffix = row["row"], "Ts" if row["split"] == "test" else "Tr"
        r_mm, c_mm, where = pixel_spacing(ps, row["patient"])
        zooms = (c_mm, r_mm, SLICE_GAP_2D_MM)
        spacing[row["case"]] = [r_mm, c_mm]
        for c, channel in enumerate(_image(ps, i)):
            _write_bytes(folder / f"images{suffix}" / image_name(row["case"], c), nifti_gz(to_nifti_axes(channel[None]), zooms))
        mask = np.asarray(ps.masks[i], np.uint8)[None]
        _write_bytes(folder / f"labels{suffix}" / f"{row['case']}.nii.gz", nifti_gz(to_nifti_axes(mask), zooms))
    for sub in ("imagesTs", "labelsTs"):
        if not any((folder / sub).iterdir()):
            (folder / sub).rmdir()
    labels = {name: int(value) for value, name in sorted(ps.labels.items(), key=lambda kv: int(kv[0]))}
    n_train = sum(r["split"] != "test" for r in rows)
    write_json(folder / "dataset.json", {
        "channel_names": channel_names(ps), "labels": labels, "numTraining": n_train, "file_ending": ".nii.gz",
        "name": folder.name, "description": f"{ps.meta['name']} ({ps.source} set) exported by medgan "
                                            f"{code_version()}; one case per 2-D slice (1 x H x W, slice spacing "
                                            f"{SLICE_GAP_2D_MM:g} mm); see {PROVENANCE_FILE}",
        "numTest": len(rows) - n_train,
    })
    write_json(folder / SPLITS_FILE, patient_folds([r for r in rows if r["split"] != "test"]))
    return {"cases": rows, "spacing_mm": {"source": where, "row_col_per_case": spacing,
                                          "slice_axis": SLICE_GAP_2D_MM}}


def patient_folds(rows: list[dict[str, Any]], folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` with folds by patient: its default 5-fold split is by case, and a case is
    one slice here, so slices of one patient would sit in train and val of the same fold."""
    patients = sorted({r["patient"] for r in rows})
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    fold_of = {p: k % max(1, min(folds, len(patients))) for k, p in enumerate(order)}
    n = max(fold_of.values(), default=-1) + 1
    return [{"train": [r["case"] for r in rows if fold_of[r["patient"]] != k],
             "val": [r["case"] for r in rows if fold_of[r["patient"]] == k]} for k in range(n)]


def volumes(ps: PreparedSet) -> list[tuple[str, int, int]]:
    """``(name, first row, stop row)`` of every volume: consecutive rows of one patient with rising slice index."""
    runs: list[list] = []
    for i, (patient, s) in enumerate(zip(ps.patients, ps.slices, strict=True)):
        if runs and runs[-1][0] == patient and s > ps.slices[i - 1]:
            runs[-1][2] = i + 1
        else:
            runs.append([patient, i, i + 1])
    per_patient: dict[str, int] = {}
    for patient, _, _ in runs:
        per_patient[patient] = per_patient.get(patient, 0) + 1
    named, seen = [], {}
    for patient, start, stop in runs:
        name = _safe(patient)
        if per_patient[patient] > 1:  # ACDC: patient001_ED, patient001_ES (its extras); else a running number
            k = seen[patient] = seen.get(patient, -1) + 1
            tags = "-".join(_safe(str(v[start])) for v in ps.extra.values())
            name = f"{name}_{tags or k}"
        named.append((name, start, stop))
    if len({n for n, _, _ in named}) != len(named):  # extras that do not tell the volumes apart
        named = [(f"{n}_{k}", a, b) for k, (n, a, b) in enumerate(named)]
    return named


@EXPORTERS.register("nifti")
def write_nifti(ps: PreparedSet, folder: Path, *, progress: bool | None = None, **_) -> dict[str, Any]:
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    split_of = ps.split_of()
    listed = []
    for name, start, stop in progress_bar(volumes(ps), progress=progress, desc="export nifti", unit="volume"):
        patient = str(ps.patients[start])
        r_mm, c_mm, where = pixel_spacing(ps, patient)
        zooms = (c_mm, r_mm, slice_spacing(ps, patient))
        image = np.asarray(ps.images[start:stop], np.float32)  # [Z, C, H, W]
        if ps.channels == 1:
            data = to_nifti_axes(image[:, 0])
        else:  # x, y, z, channel
            data = np.stack([to_nifti_axes(image[:, c]) for c in range(ps.channels)], axis=-1)
        _write_bytes(folder / "images" / f"{name}.nii.gz", nifti_gz(data, (*zooms, 1.0)[: data.ndim]))
        mask = to_nifti_axes(np.asarray(ps.masks[start:stop], np.uint8))
        _write_bytes(folder / "labels" / f"{name}.nii.gz", nifti_gz(mask, zooms))
        listed.append({"volume": name, "patient": patient, "rows": [start, stop], "split": str(split_of[start]),
                       "slices": ps.slices[start:stop].tolist(), "spacing_mm": list(zooms), "spacing_source": where})
    return {"volumes": listed}


@EXPORTERS.register("png")
def write_png(ps: PreparedSet, folder: Path, *, progress: bool | None = None, **_) -> dict[str, Any]:
    if ps.channels not in (1, 3):
        raise ConfigError(f"{ps.root}: PNG holds 1 (grey) or 3 (RGB) channels, this set has {ps.channels}")
    if ps.num_labels > 256:
        raise ConfigError(f"{ps.root}: an 8-bit label PNG holds at most 256 labels, this set has {ps.num_labels}")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rows = _case_rows(ps, case_ids(ps))
    for row in progress_bar(rows, progress=progress, desc="export png", unit="slice"):
        pixels = np.clip(np.rint((_image(ps, row["row"]) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if ps.channels == 1 else pixels.transpose(1, 2, 0))
        mask = Image.fromarray(np.asarray(ps.masks[row["row"]], np.uint8), mode="L")
        atomic_write(folder / "images" / f"{row['case']}.png", lambda tmp, im=image: im.save(tmp, format="PNG"))
        atomic_write(folder / "masks" / f"{row['case']}.png", lambda tmp, im=mask: im.save(tmp, format="PNG"))
    return {"cases": rows, "png": {"image": "uint8 = round((x + 1) * 127.5) of the [-1, 1] image",
                                   "mask": "uint8 label index (keys of dataset.labels)"}}


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def nnunet_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ConfigError(f"--dataset-id must be in 1..999 (nnU-Net's three digits), got {dataset_id}")
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits and '-' (nnU-Net reads DatasetXXX_Name)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def export(
    set_dir: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    *,
    dataset_id: int = DEFAULT_DATASET_ID,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write the prepared or generated set ``set_dir`` in format ``fmt``; returns the folder written.

    ``nnunet``: ``out`` is the ``nnUNet_raw`` folder and the set goes to ``out/DatasetXXX_Name``
    (``dataset_id``; ``name`` defaults to the set's name); another dataset with that ID there is an error.
    ``nifti`` / ``png``: ``out`` is the folder written. An existing target needs ``overwrite``.
    """
    writer = EXPORTERS[fmt]
    ps = load_prepared(set_dir)
    out = Path(out)
    if fmt == "nnunet":
        target = out / nnunet_folder_name(dataset_id, _safe(ps.name) if name is None else name)
        taken = [p for p in out.glob(f"Dataset{int(dataset_id):03d}_*") if p.name != target.name] if out.is_dir() else []
        if taken:
            raise OutputExistsError(f"nnU-Net dataset ID {int(dataset_id):03d} is taken by {taken[0]} "
                                    "(pick another --dataset-id)")
    else:
        target = out
    if target.exists() and not overwrite:
        raise OutputExistsError(f"output directory {target} already exists (pass --overwrite to replace it)")
    if target.exists() and ps.root.resolve().is_relative_to(target.resolve()):
        raise OutputExistsError(f"{target}: the output folder holds the set being exported; refusing to replace it")
    with atomic_folder(target) as tmp:
        record = provenance(ps, fmt)
        record.update(writer(ps, tmp, progress=progress))
        write_json(tmp / PROVENANCE_FILE, record)
        if fmt == "nnunet":
            verify_nnunet(tmp, check_name=False)
    return target


# --------------------------------------------------------------------------------------------
# nnU-Net's rules as a check
# --------------------------------------------------------------------------------------------
def verify_nnunet(folder: str | os.PathLike, *, check_name: bool = True) -> dict[str, Any]:
    """Check an nnU-Net v2 raw dataset against nnU-Net's documented rules; raise ``NnunetFormatError`` (one line,
    naming the file) at the first violation. Returns ``{"cases", "channels", "labels"}``.

    The rules (``documentation/dataset_format.md`` and ``verify_dataset_integrity``): folder ``DatasetXXX_Name``;
    ``dataset.json`` with ``channel_names`` ("0".."C-1"), ``labels`` (background 0, integer values 0..K-1 with
    no gap), ``numTraining``, ``file_ending``; ``numTraining`` = the cases in imagesTr; every file in
    imagesTr/labelsTr ends with ``file_ending``; every case has every channel and a label, every label a case;
    per case all files are 3-D with one shape, spacing and affine; no NaN; label values are declared labels.
    """
    folder = Path(folder)

    def fail(path: Path, problem: str) -> None:
        raise NnunetFormatError(f"{path}: {problem}")

    if check_name and not _FOLDER.match(folder.name):
        fail(folder, "folder name must be DatasetXXX_Name (XXX = 3-digit dataset ID)")
    meta_path = folder / "dataset.json"
    try:
        ds = load_dataset_json(folder)
        declared = {int(v): name for v, name in labels_by_value(ds, meta_path).items()}
    except RawFormatError as e:
        raise NnunetFormatError(str(e)) from None
    channels = ds["channel_names"]
    if not isinstance(channels, dict) or sorted(channels) != [str(c) for c in range(len(channels))] or not channels:
        fail(meta_path, f"channel_names must map '0'..'C-1' to names, got {channels!r}")
    if declared.get(0) != "background":
        fail(meta_path, f"labels must map 'background' to 0, got {ds['labels']!r}")
    if sorted(declared) != list(range(len(declared))):
        fail(meta_path, f"label values {sorted(declared)} are not consecutive 0, 1, 2, ...")
    ending = ds["file_ending"]
    if ending not in (".nii.gz", ".nii"):
        fail(meta_path, f"file_ending {ending!r}: this check reads NIfTI (.nii.gz, .nii)")
    for sub in ("imagesTr", "labelsTr"):
        if not (folder / sub).is_dir():
            fail(folder / sub, "missing")
        stray = [p for p in sorted((folder / sub).iterdir()) if not p.name.startswith(".") and not p.name.endswith(ending)]
        if stray:
            fail(stray[0], f"does not end with file_ending {ending!r}")
    try:
        cases = list_cases(folder / "imagesTr", ending)
    except RawFormatError as e:
        raise NnunetFormatError(str(e)) from None
    if isinstance(ds["numTraining"], bool) or ds["numTraining"] != len(cases):
        fail(meta_path, f"numTraining is {ds['numTraining']!r} but imagesTr holds {len(cases)} cases")
    label_cases = {p.name[: -len(ending)] for p in (folder / "labelsTr").iterdir() if p.name.endswith(ending)}
    orphans = sorted(label_cases - set(cases))
    if orphans:
        fail(folder / "labelsTr" / f"{orphans[0]}{ending}", "label without images in imagesTr")
    for case, chans in sorted(cases.items()):
        if sorted(chans) != list(range(len(channels))):
            fail(folder / "imagesTr" / image_name(case, 0, ending),
                 f"case {case!r} has channels {sorted(chans)}, channel_names declares {len(channels)}")
        label_path = folder / "labelsTr" / f"{case}{ending}"
        if not label_path.is_file():
            fail(label_path, f"missing: case {case!r} has no label file")
        label, zooms, affine = _read(label_path)
        values = np.unique(label)
        if np.isnan(values).any() or not np.array_equal(values, np.round(values)):
            fail(label_path, "labels must be integers (found NaN or fractions)")
        unknown = sorted(set(values.astype(np.int64).tolist()) - set(declared))
        if unknown:
            fail(label_path, f"label value(s) {unknown[:5]} are not declared in dataset.json labels {sorted(declared)}")
        for c in range(len(channels)):
            path = folder / "imagesTr" / image_name(case, c, ending)
            image, image_zooms, image_affine = _read(path)
            if image.shape != label.shape:
                fail(path, f"shape {image.shape[::-1]} differs from its label's {label.shape[::-1]}")
            if not np.allclose(image_zooms, zooms):
                fail(path, f"spacing {image_zooms} differs from its label's {zooms}")
            if not np.allclose(image_affine, affine, atol=1e-4):
                fail(path, "affine (position/orientation) differs from its label's")
            if np.isnan(image).any():
                fail(path, "holds NaN voxels")
    return {"cases": len(cases), "channels": len(channels), "labels": jsonable(declared)}


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    try:
        return read_nifti(path)
    except RawFormatError as e:
        raise NnunetFormatError(str(e)) from None


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="write a prepared or generated set as nnU-Net raw data, NIfTI volumes or PNGs",
                       description="Export a prepared or generated set for segmentation tools (see medgan.export).")
    p.add_argument("set_dir", metavar="DIR", help="a prepared or generated set (a folder with dataset.json)")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="nnunet: the nnUNet_raw folder (the set goes to OUT/DatasetXXX_Name); else the folder written")
    p.add_argument("--dataset-id", type=int, default=DEFAULT_DATASET_ID, help="nnunet: the XXX of DatasetXXX_Name")
    p.add_argument("--name", default=None, help="nnunet: the Name of DatasetXXX_Name (default: the set's name)")
    p.add_argument("--overwrite", action="store_true", help="replace the target folder if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    target = export(args.set_dir, args.fmt, args.out, dataset_id=args.dataset_id, name=args.name,
                    overwrite=args.overwrite, progress=False if args.quiet else None)
    print(f"wrote {args.fmt} export of {args.set_dir} to {target}")
    return 0
