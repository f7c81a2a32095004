"""IDRiD: ``A. Segmentation/1. Original Images/{a. Training Set,b. Testing Set}/IDRiD_NN.jpg`` and
``A. Segmentation/2. All Segmentation Groundtruths/<same>/5. Optic Disc/IDRiD_NN_OD.tif``.

An image's pixel count is read from its header and checked against ``MEDGAN_MAX_ARRAY_GB`` (and Pillow's
decompression-bomb guard) before a pixel is decoded; an image without its mask, or a mask without its
image, is an error naming the file that is there.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgan.data.formats.common import _err, _need_dir, binary_mask, check_array_size, existing_file
from medgan.errors import RawFormatError

IDRID_LABELS = {"0": "background", "1": "optic disc"}
_IDRID_IMAGE = re.compile(r"^(IDRiD_\d+)\.jpe?g$", re.IGNORECASE)
_IDRID_MASK = re.compile(r"^(IDRiD_\d+)_OD\.tiff?$", re.IGNORECASE)
_SUBSET_DIRS = {"training": "a. Training Set", "testing": "b. Testing Set"}


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
        for pattern, table in ((_IDRID_IMAGE, images), (_IDRID_MASK, masks)):
            m = pattern.match(p.name)
            if m and existing_file(p):
                key = (_idrid_subset(p, raw_dir), m.group(1))
                if key in table:
                    raise _err(p, f"{m.group(1)} ({key[0]}) also found at {table[key]}")
                table[key] = p
    if not images:
        raise _err(raw_dir, "no IDRiD images found (expected A. Segmentation/1. Original Images/a. Training Set/IDRiD_NN.jpg)")
    for (subset, stem), mask in sorted(masks.items()):
        if (subset, stem) not in images:
            raise _err(mask, f"optic-disc mask without its image {stem}.jpg (expected under "
                             f"'1. Original Images/{_SUBSET_DIRS[subset]}/')")
    entries = []
    for (subset, stem), image in sorted(images.items()):
        mask = masks.get((subset, stem))
        if mask is None:
            raise _err(image, f"no optic-disc mask {stem}_OD.tif (expected under "
                              f"'2. All Segmentation Groundtruths/{_SUBSET_DIRS[subset]}/5. Optic Disc/')")
        entries.append(IdridEntry(stem, subset, image, mask))
    # The real set numbers testing images on from the training ones; keep ids unique regardless.
    stems = [e.patient for e in entries]
    for e in entries:
        if stems.count(e.patient) > 1 and e.subset == "testing":
            e.patient = f"test-{e.patient}"
    return entries


def _open_image(path: Path):
    """Decode an image file with Pillow after checking, from its header, that it fits the memory limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns before it fails on a cut-off file; the error says it all
            img = Image.open(f)
            width, height = img.size
            if width <= 0 or height <= 0:
                raise _err(path, f"empty image ({width}x{height} pixels)")
            check_array_size(path, (height, width, max(len(img.getbands()), 3)), 4, "decoding this image")
            img.load()
        return img
    except RawFormatError:
        raise
    except Image.DecompressionBombError as e:
        raise _err(path, f"image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise _err(path, "unreadable image file (Pillow does not recognise it as an image)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, ZeroDivisionError, struct.error) as e:
        raise _err(path, f"unreadable image file ({type(e).__name__}: {str(e)[:200]})") from None


def read_idrid(entry: IdridEntry) -> IdridCase:
    """The RGB fundus and its optic-disc mask (red channel 0 / 1 or 0 / 255), checked to have the same size."""
    img = _open_image(entry.image_path)
    mask_img = _open_image(entry.mask_path)
    if mask_img.size != img.size:
        raise _err(entry.mask_path, f"mask size {mask_img.size[0]}x{mask_img.size[1]} differs from its image "
                                    f"{entry.image_path.name} size {img.size[0]}x{img.size[1]}")
    try:
        image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if mask_img.mode in ("1", "L", "I", "I;16", "F"):
            values = np.asarray(mask_img)
        else:  # RGB(A) / palette / CMYK...: the disc is drawn in the red channel
            values = np.asarray(mask_img.convert("RGB"))[..., 0]
    except (OSError, ValueError) as e:
        raise _err(entry.mask_path, f"unreadable image file ({type(e).__name__}: {str(e)[:200]})") from None
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise _err(entry.mask_path, "mask holds non-integer values (expected 0 and 1 or 255)")
        values = values.astype(np.int64)
    disc = binary_mask(entry.mask_path, values, "optic-disc mask")
    return IdridCase(entry.patient, entry.subset, image, disc.astype(np.uint8))
