"""Seeded procedural phantoms written in the *real* raw layouts of ACDC, SLiver07 and IDRiD.

The phantoms exist so that every test, the ``quick`` profile and CI run the real loaders
(``medgan.data.formats``) and converters on data that looks like the real thing without
downloading it. They are not the real data: a figure made from them must say "phantom".

* ``acdc`` (``cardiac``): cardiac cine MR, short axis. ``database/{training,testing}/patientNNN/`` with
  ``Info.cfg``, the ED and ES frames and their ground truth (0 bg, 1 RV, 2 MYO, 3 LV) and the
  ``_4d`` cine. Five groups (NOR, MINF, DCM, HCM, RV) change the LV/RV size, wall and ejection fraction.
* ``sliver07`` (``liver``): abdominal CT in HU, ``liver-orig0NN.mhd/.raw`` (MET_SHORT) and
  ``liver-seg0NN.mhd/.raw`` (MET_UCHAR, 1 = liver, tumours and vessels included).
* ``idrid`` (``fundus``): colour fundus JPEGs and optic-disc TIF masks (disc in the red channel).

Orientation: in every dataset the image's column axis is x (left -> right) and its row axis is y
(anterior/top -> posterior/bottom). NIfTI arrays are stored ``[x, y, z(, t)]``, MetaImage ``.raw``
files x-fastest, so ``formats`` (which transposes NIfTI to ``[z, y, x]``) shows the RV and the liver
on the image's left, as in the real data.

Every case draws from its own ``SeedSequence([seed, dataset, case number])``: a case is the same
whatever ``patients`` is, and the same ``(dataset, patients, seed)`` gives byte-identical files.
Besides the real layout, the raw root gets a ``PHANTOM.txt`` marker, which ``prepare`` reads to record
``source: phantom``. CLI twin: ``medgan data phantom {acdc,sliver07,idrid} --out RAW_DIR``;
``preview_phantom`` (``preview``) draws a PNG grid of a few cases with their masks. The registry,
``write_phantom`` and the helpers the organs share live in ``common``.
"""

from __future__ import annotations

# Importing the organ modules registers their writers in PHANTOMS.
from medgan.data.phantoms.cardiac import ACDC_GROUPS, write_acdc
from medgan.data.phantoms.cardiac import _acdc_patient as _acdc_patient
from medgan.data.phantoms.common import DEFAULT_PATIENTS, PHANTOMS, REAL_COUNTS, write_mhd, write_phantom
from medgan.data.phantoms.fundus import IDRID_IMAGES, IDRID_MASKS, IDRID_SPLITS, write_idrid
from medgan.data.phantoms.liver import write_sliver07
from medgan.data.phantoms.preview import preview_phantom

__all__ = [
    "ACDC_GROUPS",
    "DEFAULT_PATIENTS",
    "IDRID_IMAGES",
    "IDRID_MASKS",
    "IDRID_SPLITS",
    "PHANTOMS",
    "REAL_COUNTS",
    "preview_phantom",
    "write_acdc",
    "write_idrid",
    "write_mhd",
    "write_phantom",
    "write_sliver07",
]
