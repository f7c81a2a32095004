"""Readers of the three raw dataset layouts (the real ones; the phantoms are written in them too).

One module per layout: ``acdc`` (NIfTI + ``Info.cfg``), ``metaimage`` (``.mhd`` + ``.raw``/``.zraw``,
SLiver07), ``idrid`` (jpg + tif); ``common`` holds what they share (one-line errors, the memory limit
``MEDGAN_MAX_ARRAY_GB``, label checks, paths that may not leave their folder, captured C++ stderr).

Each dataset has two steps so that ``prepare`` can plan before it reads pixels:

* ``find_<dataset>(raw_dir) -> list[Entry]`` walks the layout, reads only small files and headers
  (``Info.cfg``, NIfTI / MetaImage headers, file sizes) and raises ``RawFormatError`` on anything
  missing or inconsistent — so most bad inputs fail in seconds, before any output is written.
* ``read_<dataset>(entry) -> Case`` loads the pixels into plain numpy arrays and checks the values
  (label set, empty ground truth, image / ground-truth agreement).

Volumes are returned as ``[Z, H, W]`` arrays (slice, row, column) and spacings in the same order, in mm.
Raw inputs are only ever opened for reading, and only inside the raw folder.
"""

from __future__ import annotations

from medgan.data.formats.acdc import (
    ACDC_LABELS,
    ACDC_PHASES,
    AcdcCase,
    AcdcEntry,
    CardiacVolume,
    find_acdc,
    nifti_spacing_mm,
    parse_info_cfg,
    read_acdc,
)
from medgan.data.formats.common import (
    DEFAULT_MAX_ARRAY_GB,
    MAX_ARRAY_ENV,
    binary_mask,
    check_array_size,
    check_labels,
    contained_path,
    max_array_bytes,
    quiet_readers,
)
from medgan.data.formats.idrid import IDRID_LABELS, IdridCase, IdridEntry, find_idrid, read_idrid
from medgan.data.formats.metaimage import (
    MET_DTYPES,
    SLIVER_IMAGE_TYPES,
    SLIVER_LABELS,
    SLIVER_MASK_TYPES,
    MetaHeader,
    SliverCase,
    SliverEntry,
    find_sliver,
    read_mhd,
    read_mhd_header,
    read_sliver,
)
from medgan.errors import InputTooLargeError, RawFormatError

__all__ = [
    "ACDC_LABELS", "ACDC_PHASES", "AcdcCase", "AcdcEntry", "CardiacVolume", "find_acdc", "nifti_spacing_mm",
    "parse_info_cfg", "read_acdc",
    "DEFAULT_MAX_ARRAY_GB", "MAX_ARRAY_ENV", "binary_mask", "check_array_size", "check_labels", "contained_path",
    "max_array_bytes", "quiet_readers",
    "IDRID_LABELS", "IdridCase", "IdridEntry", "find_idrid", "read_idrid",
    "MET_DTYPES", "SLIVER_IMAGE_TYPES", "SLIVER_LABELS", "SLIVER_MASK_TYPES", "MetaHeader", "SliverCase",
    "SliverEntry", "find_sliver", "read_mhd", "read_mhd_header", "read_sliver",
    "InputTooLargeError", "RawFormatError",
]
