"""One converter per dataset: raw layout -> the prepared format (``medgan.data.prepared``).

``prepare("acdc", raw_dir, out_dir)`` finds the cases (``formats.find_*``), splits them by patient,
converts every slice to the paper's geometry and intensity range and streams them into a
``PreparedWriter`` — which writes into a temporary folder renamed into place at the end, so any
error leaves nothing behind in ``out_dir``.

Paper defaults (``--size N`` overrides the output side):

* ACDC — in-plane resampling to 1.37 mm (``scipy.ndimage.zoom``, linear for the image, nearest for
  labels), a 128² crop centred on the heart (centroid of the labelled voxels), per-volume 1st–99th
  percentile -> [-1, 1]; every slice of the ED and ES frames. With ``size=N`` the field of view
  stays 128 × 1.37 mm = 175 mm and the spacing becomes 175 mm / N, so small sizes keep the anatomy.
* SLiver07 — HU window [-100, 200] -> [-1, 1], every axial slice padded to a square and resized to
  256² (antialiased bilinear / nearest); liver = segmentation > 0.
* IDRiD — crop to the square around the fundus (dark background thresholded), resize to 256² RGB
  (antialiased bilinear / nearest); optic disc = red channel of the mask > 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgan import __version__
from medgan.data import formats
from medgan.data.prepared import PreparedWriter, check_disjoint_splits
from medgan.data.splits import split_official, split_random
from medgan.errors import ConfigError, OutputExistsError, RawFormatError
from medgan.io import sha256_files
from medgan.registry import Registry
from medgan.runtime import progress_bar

PHANTOM_MARKER = "PHANTOM.txt"  # left at the raw root by medgan.data.phantoms.write_phantom

ACDC_SPACING_MM = 1.37
ACDC_SIZE = 128
SLIVER_WINDOW_HU = (-100.0, 200.0)


@dataclass
class Converted:
    """The slices of one case: ``images [n, C, S, S]`` float32 in [-1, 1], ``masks [n, S, S]`` uint8."""

    images: np.ndarray
    masks: np.ndarray
    slices: np.ndarray
    extra: dict[str, Sequence] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preparer:
    """What ``prepare`` needs to know about one dataset; the functions do the dataset-specific work."""

    name: str
    modality: str
    channels: int
    labels: dict[str, str]
    default_size: int
    find: Callable[[Path], tuple[list, dict]]  # raw_dir -> (entries with .patient/.n_slices/.input_files(), notes)
    split: Callable[[list, float, int], dict[str, list[str]]]  # (entries, val_fraction, seed) -> splits
    convert: Callable[[Any, int], Converted]  # (entry, size) -> slices
    normalisation: dict[str, Any]
    geometry: Callable[[int], dict[str, Any]]  # size -> spacing / orientation description
    extra_arrays: dict[str, str] = field(default_factory=dict)
    default_val_fraction: float = 0.2
    # a layout that describes itself (nnU-Net's dataset.json): raw_dir -> the Preparer for that folder
    for_folder: Callable[[Path], Preparer] | None = None


PREPARERS: Registry[Preparer] = Registry("preparer")


# --------------------------------------------------------------------------------------------
# array helpers
# --------------------------------------------------------------------------------------------
def crop_or_pad(array: np.ndarray, top: int, left: int, size: int, fill: float) -> np.ndarray:
    """``array[..., top:top+size, left:left+size]``, filling with ``fill`` wherever that leaves the array."""
    h, w = array.shape[-2:]
    out = np.full(array.shape[:-2] + (size, size), fill, dtype=array.dtype)
    r0, r1 = max(top, 0), min(top + size, h)
    c0, c1 = max(left, 0), min(left + size, w)
    if r0 < r1 and c0 < c1:
        out[..., r0 - top : r1 - top, c0 - left : c1 - left] = array[..., r0:r1, c0:c1]
    return out


def pad_to_square(array: np.ndarray, fill: float) -> np.ndarray:
    """Centre ``array [..., H, W]`` in a ``max(H, W)`` square."""
    h, w = array.shape[-2:]
    side = max(h, w)
    return crop_or_pad(array, (h - side) // 2, (w - side) // 2, side, fill)


def resize2d(array: np.ndarray, size: int, *, nearest: bool) -> np.ndarray:
    """Resize a square ``[H, W]`` float (or label) slice to ``[size, size]`` with Pillow.

    Pillow's bilinear filter widens its support when shrinking (antialiasing), which a plain
    ``zoom`` / ``interpolate`` does not; labels use nearest so no new label appears.
    """
    from PIL import Image

    if array.shape == (size, size):
        return array.copy()
    if nearest:
        img = Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)), mode="L")
        return np.asarray(img.resize((size, size), Image.NEAREST), dtype=array.dtype)
    img = Image.fromarray(np.ascontiguousarray(array.astype(np.float32)), mode="F")
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)


def percentile_normalise(volume: np.ndarray, path: Path, lo_pct: float = 1.0, hi_pct: float = 99.0) -> tuple[np.ndarray, float, float]:
    """Map the ``lo_pct``–``hi_pct`` percentiles of ``volume`` to [-1, 1] and clip."""
    lo, hi = np.percentile(volume, [lo_pct, hi_pct])
    if not hi > lo:
        raise RawFormatError(f"{path}: image is constant between its {lo_pct:g}th and {hi_pct:g}th percentiles ({lo:g})")
    out = (volume.astype(np.float32) - lo) / (hi - lo) * 2.0 - 1.0
    return np.clip(out, -1.0, 1.0), float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# ACDC
# --------------------------------------------------------------------------------------------
def acdc_spacing(size: int) -> float:
    """In-plane spacing (mm) that keeps the paper's 128 × 1.37 mm field of view at ``size`` pixels."""
    return ACDC_SPACING_MM * ACDC_SIZE / size


def _find_acdc(raw_dir: Path) -> tuple[list, dict]:
    return formats.find_acdc(raw_dir), {}


def _split_acdc(entries, val_fraction, seed):
    return split_official(
        {e.patient: e.subset for e in entries},
        val_fraction=val_fraction,
        seed=seed,
        strata={e.patient: e.group for e in entries},
    )


def convert_cardiac_volume(vol: formats.CardiacVolume, size: int, path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """One ED/ES frame -> (``images [Z, 1, S, S]``, ``masks [Z, S, S]``, info): resample, normalise, crop on the heart."""
    from scipy.ndimage import zoom

    spacing = acdc_spacing(size)
    _, row_mm, col_mm = vol.spacing
    if not (np.isfinite(row_mm) and np.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise RawFormatError(f"{path}: non-positive or non-finite pixel spacing ({row_mm}, {col_mm}) in the header")
    factors = (1.0, row_mm / spacing, col_mm / spacing)
    # the shape scipy's zoom will allocate, checked first: a spacing 1000x too large asks for ~10^6x the memory
    out_shape = (vol.image.shape[0], *(int(round(n * f)) for n, f in zip(vol.image.shape[1:], factors[1:], strict=True)))
    formats.check_array_size(path, out_shape, 4 * 3, f"resampling to {spacing:.3g} mm (image, mask, normalised copy)")
    if min(out_shape) < 1:
        raise RawFormatError(f"{path}: pixel spacing ({row_mm:g}, {col_mm:g}) mm resamples the image to nothing")
    image = zoom(vol.image, factors, order=1)
    mask = zoom(vol.mask, factors, order=0)
    image, lo, hi = percentile_normalise(image, path)
    rows, cols = np.nonzero(mask.any(axis=0))
    if len(rows):  # centroid of the labelled voxels (projected over the slices)
        weights = mask.astype(bool).sum(axis=0)[rows, cols]
        centre = (np.average(rows, weights=weights), np.average(cols, weights=weights))
    else:
        centre = ((image.shape[1] - 1) / 2, (image.shape[2] - 1) / 2)
    top, left = int(round(centre[0])) - size // 2, int(round(centre[1])) - size // 2
    images = crop_or_pad(image, top, left, size, -1.0)[:, None]
    masks = crop_or_pad(mask, top, left, size, 0)
    lost = int(mask.astype(bool).sum() - masks.astype(bool).sum())
    info = {
        "frame": vol.frame,
        "shape": list(vol.image.shape),
        "spacing_mm": [round(float(s), 4) for s in vol.spacing],
        "axcodes": vol.axcodes,
        "percentiles_1_99": [round(lo, 4), round(hi, 4)],
        "crop_centre": [round(float(c), 1) for c in centre],
        "labelled_pixels_outside_crop": lost,
    }
    return images, masks, info


def _convert_acdc(entry: formats.AcdcEntry, size: int) -> Converted:
    case = formats.read_acdc(entry)
    images, masks, slices, phases, info = [], [], [], [], {"subset": case.subset, "group": case.group}
    for phase in formats.ACDC_PHASES:
        im, ms, vol_info = convert_cardiac_volume(case.volumes[phase], size, entry.files[phase][0])
        images.append(im)
        masks.append(ms)
        slices.append(np.arange(len(im)))
        phases += [phase] * len(im)
        info[phase] = vol_info
    n = len(phases)
    return Converted(
        np.concatenate(images), np.concatenate(masks), np.concatenate(slices),
        {"phase": phases, "group": [case.group] * n}, info,
    )


def _acdc_geometry(size: int) -> dict:
    s = acdc_spacing(size)
    return {
        "spacing_mm": [round(s, 4), round(s, 4)],
        "field_of_view_mm": round(s * size, 2),
        "resampling": "scipy.ndimage.zoom in-plane, order 1 image / order 0 labels; slices kept as acquired",
        "crop": "centred on the centroid of the labelled voxels of each ED/ES volume (image centre if none), padded with -1",
        "orientation": "array [N, C, H, W]: H = NIfTI voxel axis j (y), W = axis i (x), slices along k (z); axcodes per case",
    }


PREPARERS.register("acdc")(
    Preparer(
        name="acdc",
        modality="cine-MRI (short axis)",
        channels=1,
        labels=formats.ACDC_LABELS,
        default_size=ACDC_SIZE,
        find=_find_acdc,
        split=_split_acdc,
        convert=_convert_acdc,
        normalisation={"method": "percentile", "percentiles": [1, 99], "per": "volume", "range": [-1, 1], "clip": True},
        geometry=_acdc_geometry,
        extra_arrays={"phase": "<U2", "group": "<U16"},
    )
)


# --------------------------------------------------------------------------------------------
# SLiver07
# --------------------------------------------------------------------------------------------
def _find_sliver(raw_dir: Path) -> tuple[list, dict]:
    entries, skipped = formats.find_sliver(raw_dir)
    notes = {"skipped_without_segmentation": [str(p.relative_to(raw_dir)) for p in skipped]} if skipped else {}
    return entries, notes


def _split_sliver(entries, val_fraction, seed):
    return split_random(
        [e.patient for e in entries],
        val_fraction=val_fraction,
        test_fraction=0.15,
        seed=seed,
    )


def window_hu(image: np.ndarray, window: tuple[float, float] = SLIVER_WINDOW_HU) -> np.ndarray:
    """Clip to the HU ``window`` and map it linearly onto [-1, 1]."""
    lo, hi = window
    return ((np.clip(image.astype(np.float32), lo, hi) - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


def _convert_sliver(entry: formats.SliverEntry, size: int) -> Converted:
    case = formats.read_sliver(entry)
    z = case.image.shape[0]
    images = np.empty((z, 1, size, size), np.float32)
    masks = np.empty((z, size, size), np.uint8)
    for k in range(z):
        images[k, 0] = resize2d(pad_to_square(window_hu(case.image[k]), -1.0), size, nearest=False)
        masks[k] = resize2d(pad_to_square(case.mask[k], 0), size, nearest=True)
    np.clip(images, -1.0, 1.0, out=images)
    side = max(case.image.shape[1:])
    info = {
        "shape": list(case.image.shape),
        "spacing_mm": [round(float(s), 4) for s in case.spacing],
        "pixel_mm_after_resize": [round(float(s) * side / size, 4) for s in case.spacing[1:]],
        "direction": [round(float(d), 4) for d in case.direction],
        "liver_slices": int(case.mask.any(axis=(1, 2)).sum()),
    }
    return Converted(images, masks, np.arange(z), {}, info)


PREPARERS.register("sliver07")(
    Preparer(
        name="sliver07",
        modality="CT (contrast-enhanced, abdomen)",
        channels=1,
        labels=formats.SLIVER_LABELS,
        default_size=256,
        find=_find_sliver,
        split=_split_sliver,
        convert=_convert_sliver,
        normalisation={"method": "hu-window", "window_hu": list(SLIVER_WINDOW_HU), "range": [-1, 1], "clip": True},
        default_val_fraction=0.15,
        geometry=lambda size: {
            "resampling": "each axial slice padded to a square (with -1) and resized with Pillow (bilinear, antialiased; nearest for labels)",
            "orientation": "array [N, C, H, W] as SimpleITK GetArrayFromImage: H = MetaImage y, W = x, slices along z",
        },
    )
)


# --------------------------------------------------------------------------------------------
# IDRiD
# --------------------------------------------------------------------------------------------
def _find_idrid(raw_dir: Path) -> tuple[list, dict]:
    return formats.find_idrid(raw_dir), {}


def _split_idrid(entries, val_fraction, seed):
    return split_official(
        {e.patient: e.subset for e in entries},
        val_fraction=val_fraction,
        seed=seed,
    )


def fundus_box(image: np.ndarray, path: Path) -> tuple[int, int, int]:
    """(top, left, side) of the square around the fundus in ``image [H, W, 3]`` uint8.

    The background is near black; a row or column belongs to the fundus when enough of its pixels
    are brighter than 10% of the bright end (robust to JPEG noise at the border). The square is
    centred on the box and may extend past the image (IDRiD's circle is cut at top and bottom).
    """
    # a strided view finds the box of a 4288x2848 photograph 4x faster, to within a pixel or two
    step = max(1, min(image.shape[:2]) // 1024)
    gray = image[::step, ::step].sum(axis=2, dtype=np.uint16)  # 3 x mean, integer arithmetic
    threshold = max(24.0, 0.1 * float(np.percentile(gray, 99)))
    fg = gray > threshold
    rows = np.flatnonzero(fg.sum(axis=1) > max(2, 0.002 * fg.shape[1]))
    cols = np.flatnonzero(fg.sum(axis=0) > max(2, 0.002 * fg.shape[0]))
    if not len(rows) or not len(cols):
        raise RawFormatError(f"{path}: no fundus found (the image is dark everywhere)")
    r0, r1, c0, c1 = rows[0] * step, rows[-1] * step + step, cols[0] * step, cols[-1] * step + step
    r1, c1 = min(r1, image.shape[0]), min(c1, image.shape[1])
    side = int(max(r1 - r0, c1 - c0))
    top = int(round((r0 + r1 - side) / 2))
    left = int(round((c0 + c1 - side) / 2))
    return top, left, side


def _convert_idrid(entry: formats.IdridEntry, size: int) -> Converted:
    from PIL import Image

    case = formats.read_idrid(entry)
    top, left, side = fundus_box(case.image, entry.image_path)
    rgb = crop_or_pad(case.image.transpose(2, 0, 1), top, left, side, 0).transpose(1, 2, 0)
    disc = crop_or_pad(case.mask, top, left, side, 0)
    if not disc.any():
        raise RawFormatError(f"{entry.mask_path}: the optic disc lies outside the fundus of {entry.image_path.name}")
    rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").resize((size, size), Image.BILINEAR))
    disc = resize2d(disc, size, nearest=True)
    image = rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    info = {"subset": case.subset, "size_wh": [case.image.shape[1], case.image.shape[0]], "fundus_box_tls": [top, left, side]}
    return Converted(image[None], disc[None], np.zeros(1, np.int32), {}, info)


PREPARERS.register("idrid")(
    Preparer(
        name="idrid",
        modality="colour fundus photograph",
        channels=3,
        labels=formats.IDRID_LABELS,
        default_size=256,
        find=_find_idrid,
        split=_split_idrid,
        convert=_convert_idrid,
        normalisation={"method": "linear", "from": [0, 255], "range": [-1, 1], "per": "channel (RGB)"},
        geometry=lambda size: {
            "crop": "square around the fundus (background threshold), padded with black where it leaves the image",
            "resampling": "Pillow resize, bilinear (antialiased) image, nearest mask",
            "orientation": "array [N, 3, H, W] RGB, rows top to bottom as in the JPEG",
        },
    )
)


# --------------------------------------------------------------------------------------------
# the converter
# --------------------------------------------------------------------------------------------
def detect_source(raw_dir: str | os.PathLike) -> str:
    """``"phantom"`` when the phantom writer's marker sits at the raw root, else ``"raw"``."""
    return "phantom" if (Path(raw_dir) / PHANTOM_MARKER).is_file() else "raw"


def prepare(
    dataset: str,
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    val_fraction: float | None = None,
    progress: bool | None = None,
) -> Path:
    """Convert the raw ``dataset`` in ``raw_dir`` into a prepared set at ``out_dir``; returns ``out_dir``.

    ``size`` overrides the paper's image side; ``val_fraction`` the share of training patients
    held out for validation (default 0.2 for ACDC/IDRiD, whose test split is the official one;
    0.15 for SLiver07, which also draws a 0.15 test split). Raises ``RawFormatError`` (naming the
    file) on bad input and ``OutputExistsError`` (a ``FileExistsError``) when ``out_dir`` exists and ``overwrite`` is False.
    """
    preparer = PREPARERS[dataset]
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if preparer.for_folder is not None:  # channels, labels, size come from the folder itself
        preparer = preparer.for_folder(raw_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out_dir} already exists (pass --overwrite to replace it)")
    if out_dir.exists() and raw_dir.resolve().is_relative_to(out_dir.resolve()):
        raise RawFormatError(f"{out_dir}: output folder holds the raw folder {raw_dir}; refusing to overwrite it")
    size = preparer.default_size if size is None else int(size)
    if size < 8:
        raise ConfigError(f"image size {size} is too small (use >= 8)")
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")

    with formats.quiet_readers():
        entries, notes = preparer.find(raw_dir)
    if not entries:
        raise RawFormatError(f"{raw_dir}: no {dataset} cases found")
    if val_fraction is None:
        val_fraction = preparer.default_val_fraction
    splits = preparer.split(entries, val_fraction, seed)
    check_disjoint_splits(splits)
    inputs = [p for e in entries for p in e.input_files()]
    meta: dict[str, Any] = {
        "name": preparer.name,
        "modality": preparer.modality,
        "channels": preparer.channels,
        "image_size": size,
        "labels": dict(preparer.labels),
        "source": detect_source(raw_dir),
        "splits": splits,
        "normalisation": dict(preparer.normalisation),
        "inputs_sha256": sha256_files(inputs, root=raw_dir),
        "inputs": len(inputs),
        "raw_dir": str(raw_dir.resolve()),
        "seed": seed,
        "val_fraction": val_fraction,
        "geometry": preparer.geometry(size),
        "prepared_by": f"medgan {__version__} medgan.data.prepare",
        **notes,
    }
    n = sum(e.n_slices for e in entries)
    cases: dict[str, Any] = {}
    with PreparedWriter(out_dir, n=n, channels=preparer.channels, size=size, meta=meta,
                        overwrite=overwrite, extra_arrays=preparer.extra_arrays) as writer:
        i = 0
        for entry in progress_bar(entries, progress=progress, desc=f"prepare {dataset}", unit="case"):
            with formats.quiet_readers():
                conv = preparer.convert(entry, size)
            if i + len(conv.images) > n or len(conv.images) != entry.n_slices:
                raise RawFormatError(f"{entry.input_files()[0]}: {len(conv.images)} slices read, the header promised {entry.n_slices}")
            for k in range(len(conv.images)):
                extra = {key: values[k] for key, values in conv.extra.items()}
                writer.write(i, conv.images[k], conv.masks[k], entry.patient, int(conv.slices[k]), **extra)
                i += 1
            cases[entry.patient] = conv.info
        writer.meta["cases"] = cases
    return out_dir
