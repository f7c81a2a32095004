"""Shared fixtures: small raw datasets in the real layouts and their prepared sets (session-scoped).

``acdc_raw`` / ``sliver_raw`` / ``idrid_raw`` are phantom folders written by
``medgan.data.phantoms.write_phantom``; ``*_prepared`` are those converted with ``prepare`` at a
small size. Treat them as read-only: tests that corrupt inputs copy them first (``copy_raw``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

# Small but with every split populated: (patients, prepared size, phantom size options)
RAW_SIZES = {
    "acdc": (6, 64, {}),
    "sliver07": (4, 64, {"matrix": 96}),
    "idrid": (6, 64, {"width": 268, "height": 178}),
}


def _write_raw(dataset: str, out: Path) -> Path:
    from medgan.data.phantoms import write_phantom

    patients, _, kw = RAW_SIZES[dataset]
    return write_phantom(dataset, out, patients=patients, seed=0, progress=False, **kw)


def _prepare(dataset: str, raw: Path, out: Path) -> Path:
    from medgan.data.prepare import prepare

    return prepare(dataset, raw, out, size=RAW_SIZES[dataset][1], seed=0, progress=False)


@pytest.fixture(scope="session")
def acdc_raw(tmp_path_factory) -> Path:
    return _write_raw("acdc", tmp_path_factory.mktemp("raw") / "acdc")


@pytest.fixture(scope="session")
def sliver_raw(tmp_path_factory) -> Path:
    return _write_raw("sliver07", tmp_path_factory.mktemp("raw") / "sliver07")


@pytest.fixture(scope="session")
def idrid_raw(tmp_path_factory) -> Path:
    return _write_raw("idrid", tmp_path_factory.mktemp("raw") / "idrid")


@pytest.fixture(scope="session")
def acdc_prepared(acdc_raw, tmp_path_factory) -> Path:
    return _prepare("acdc", acdc_raw, tmp_path_factory.mktemp("prepared") / "acdc")


@pytest.fixture(scope="session")
def sliver_prepared(sliver_raw, tmp_path_factory) -> Path:
    return _prepare("sliver07", sliver_raw, tmp_path_factory.mktemp("prepared") / "sliver07")


@pytest.fixture(scope="session")
def idrid_prepared(idrid_raw, tmp_path_factory) -> Path:
    return _prepare("idrid", idrid_raw, tmp_path_factory.mktemp("prepared") / "idrid")


@pytest.fixture
def copy_raw(tmp_path):
    """``copy_raw(src) -> Path``: a private copy of a raw folder that a test may corrupt."""

    def copy(src: Path) -> Path:
        dst = tmp_path / ("raw-" + src.name)
        # the 4-D cines are never read and make up most of the bytes
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*_4d.nii*"))
        return dst

    return copy
