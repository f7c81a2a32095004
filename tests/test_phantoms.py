"""Phantoms: exact raw layouts, seeded determinism, anatomy that the loaders and the study rely on."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medgan.data.phantoms import (
    ACDC_GROUPS,
    DEFAULT_PATIENTS,
    PHANTOMS,
    REAL_COUNTS,
    _acdc_patient,
    preview_phantom,
    write_phantom,
)

SMALL_IDRID = {"width": 320, "height": 212}
SMALL_SLIVER = {"matrix": 128}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> Path:
    return write_phantom("acdc", tmp_path_factory.mktemp("acdc") / "raw", patients=3, seed=7, progress=False)


@pytest.fixture(scope="module")
def sliver(tmp_path_factory) -> Path:
    return write_phantom("sliver07", tmp_path_factory.mktemp("sliver") / "raw", patients=2, seed=7, progress=False,
                         **SMALL_SLIVER)


@pytest.fixture(scope="module")
def idrid(tmp_path_factory) -> Path:
    return write_phantom("idrid", tmp_path_factory.mktemp("idrid") / "raw", patients=3, seed=7, progress=False,
                         **SMALL_IDRID)


def test_registry_and_counts():
    assert PHANTOMS.names() == ["acdc", "idrid", "sliver07"]
    assert DEFAULT_PATIENTS == {"acdc": 12, "sliver07": 4, "idrid": 10}
    assert REAL_COUNTS == {"acdc": 150, "sliver07": 20, "idrid": 81}


# ---------------------------------------------------------------------------------------------------- ACDC


def _info(folder: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(": ")) for line in (folder / "Info.cfg").read_text().splitlines()]


def test_acdc_layout(acdc):
    # 3 phantoms -> round(2*3/3) = 2 in training (from 001), 1 in testing (from 101), like 100/50 in the real data.
    assert sorted(p.name for p in acdc.iterdir()) == ["PHANTOM.txt", "database"]  # marker read by prepare
    patients = sorted(str(p.relative_to(acdc)) for p in acdc.glob("*/*/*") if p.is_dir())
    assert patients == ["database/testing/patient101", "database/training/patient001", "database/training/patient002"]
    for rel in patients:
        folder = acdc / rel
        es = int(dict(_info(folder))["ES"])
        name = folder.name
        assert sorted(p.name for p in folder.iterdir()) == sorted([
            "Info.cfg", f"{name}_4d.nii.gz", f"{name}_frame01.nii.gz", f"{name}_frame01_gt.nii.gz",
            f"{name}_frame{es:02d}.nii.gz", f"{name}_frame{es:02d}_gt.nii.gz",
        ])


def test_acdc_info_cfg(acdc):
    groups = {}
    for folder in sorted(acdc.glob("database/*/patient*")):
        info = _info(folder)
        assert [k for k, _ in info] == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        d = dict(info)
        assert d["ED"] == "1"
        assert 12 <= int(d["NbFrame"]) <= 30
        assert 2 <= int(d["ES"]) < int(d["NbFrame"])
        assert re.fullmatch(r"\d+\.\d", d["Height"]) and 140 <= float(d["Height"]) <= 200
        assert re.fullmatch(r"\d+\.\d", d["Weight"]) and 40 <= float(d["Weight"]) <= 120
        groups[folder.name] = d["Group"]
    # Round-robin per split, in the order of ACDC_GROUPS.
    assert groups == {"patient001": ACDC_GROUPS[0], "patient002": ACDC_GROUPS[1], "patient101": ACDC_GROUPS[0]}


def test_acdc_volumes_and_motion(acdc):
    for folder in sorted(acdc.glob("database/*/patient*")):
        d = dict(_info(folder))
        es, nf, name = int(d["ES"]), int(d["NbFrame"]), folder.name
        cine = nib.load(folder / f"{name}_4d.nii.gz")
        ed_img = nib.load(folder / f"{name}_frame01.nii.gz")
        es_img = nib.load(folder / f"{name}_frame{es:02d}.nii.gz")
        ed_gt = np.asanyarray(nib.load(folder / f"{name}_frame01_gt.nii.gz").dataobj)
        es_gt = np.asanyarray(nib.load(folder / f"{name}_frame{es:02d}_gt.nii.gz").dataobj)
        x, y, z = ed_img.shape
        assert 160 <= x <= 220 and 160 <= y <= 220 and 6 <= z <= 12
        assert cine.shape == (x, y, z, nf) and es_gt.shape == ed_gt.shape == (x, y, z)
        assert ed_img.get_data_dtype() == np.int16 and cine.get_data_dtype() == np.int16
        assert ed_gt.dtype == np.uint8
        sx, sy, sz = ed_img.header.get_zooms()
        assert sx == sy and 1.2 <= sx <= 1.8 and 5 <= sz <= 10
        np.testing.assert_allclose(ed_img.affine, np.diag([sx, sy, sz, 1.0]), rtol=1e-6)
        # The ED / ES frames are the cine's frames 1 and ES, exactly.
        data4d = np.asanyarray(cine.dataobj)
        np.testing.assert_array_equal(data4d[..., 0], np.asanyarray(ed_img.dataobj))
        np.testing.assert_array_equal(data4d[..., es - 1], np.asanyarray(es_img.dataobj))
        assert 0 <= data4d.min() and 300 < data4d.max() < 2000
        assert set(np.unique(ed_gt)) == {0, 1, 2, 3} and set(np.unique(es_gt)) <= {0, 1, 2, 3}
        # The LV contracts: smaller cavity and thicker (same-area or larger) wall at ES.
        assert (es_gt != ed_gt).any()
        assert (es_gt == 3).sum() < 0.85 * (ed_gt == 3).sum()
        assert (es_gt == 2).sum() >= 0.95 * (ed_gt == 2).sum()
        # Blood is bright, myocardium darker; the RV is on the image's left (smaller x) of the LV.
        img = np.asanyarray(ed_img.dataobj).astype(float)
        assert img[ed_gt == 3].mean() > 2 * img[ed_gt == 2].mean()
        xs = np.arange(x)[:, None, None]
        assert (xs * (ed_gt == 1)).sum() / (ed_gt == 1).sum() < (xs * (ed_gt == 3)).sum() / (ed_gt == 3).sum()
        # Apex (z = 0) smaller than base.
        lv_area = (ed_gt >= 2).sum(axis=(0, 1))
        assert lv_area[0] < lv_area[-1]


def test_acdc_groups_differ():
    # One patient per group (same random stream): DCM has the largest LV, HCM the thickest wall for its cavity,
    # RV the largest RV for its LV, DCM the lowest ejection fraction (cavity area ES/ED on the label maps).
    lv, wall, rv, ef = {}, {}, {}, {}
    for group in ACDC_GROUPS:
        case = _acdc_patient(np.random.default_rng(11), group)
        ed, es = case["gt_ed"], case["gt_es"]
        voxel = float(np.prod(case["spacing"]))
        lv[group] = (ed == 3).sum() * voxel
        wall[group] = (ed == 2).sum() / (ed == 3).sum()
        rv[group] = (ed == 1).sum() / (ed == 3).sum()
        ef[group] = 1 - (es == 3).sum() / (ed == 3).sum()
    assert lv["DCM"] == max(lv.values())
    assert wall["HCM"] == max(wall.values())
    assert rv["RV"] == max(rv.values())
    assert ef["DCM"] == min(ef.values()) and ef["HCM"] == max(ef.values())


# ---------------------------------------------------------------------------------------------------- SLiver07


def _header(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" = ", 1)) for line in path.read_text().splitlines()]


def test_sliver_layout_and_headers(sliver):
    assert sorted(p.name for p in sliver.iterdir()) == [
        "PHANTOM.txt", "liver-orig001.mhd", "liver-orig001.raw", "liver-orig002.mhd", "liver-orig002.raw",
        "liver-seg001.mhd", "liver-seg001.raw", "liver-seg002.mhd", "liver-seg002.raw",
    ]
    for mhd in sorted(sliver.glob("*.mhd")):
        header = _header(mhd)
        assert [k for k, _ in header] == [
            "ObjectType", "NDims", "BinaryData", "BinaryDataByteOrderMSB", "CompressedData", "TransformMatrix",
            "Offset", "CenterOfRotation", "ElementSpacing", "DimSize", "ElementType", "ElementDataFile",
        ]
        h = dict(header)
        assert h["ObjectType"] == "Image" and h["NDims"] == "3" and h["BinaryData"] == "True"
        assert h["BinaryDataByteOrderMSB"] == "False" and h["CompressedData"] == "False"
        assert h["ElementDataFile"] == mhd.with_suffix(".raw").name
        assert h["ElementType"] == ("MET_SHORT" if "orig" in mhd.name else "MET_UCHAR")
        nx, ny, nz = (int(v) for v in h["DimSize"].split())
        assert nx == ny == 128 and 40 <= nz <= 80
        itemsize = 2 if h["ElementType"] == "MET_SHORT" else 1
        assert mhd.with_suffix(".raw").stat().st_size == nx * ny * nz * itemsize
        sx, sy, sz = (float(v) for v in h["ElementSpacing"].split())
        assert sx == sy and 320 <= sx * nx <= 380 and 2.5 <= sz <= 5


def _read_mhd(path: Path) -> np.ndarray:
    h = dict(_header(path))
    nx, ny, nz = (int(v) for v in h["DimSize"].split())
    dtype = {"MET_SHORT": "<i2", "MET_UCHAR": "u1"}[h["ElementType"]]
    return np.fromfile(path.with_suffix(".raw"), dtype=dtype).reshape(nz, ny, nx)


def test_sliver_values(sliver):
    for n in (1, 2):
        ct = _read_mhd(sliver / f"liver-orig{n:03d}.mhd")
        seg = _read_mhd(sliver / f"liver-seg{n:03d}.mhd")
        # SimpleITK (what real-data users read .mhd with) agrees with the header + raw bytes.
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(sliver / f"liver-orig{n:03d}.mhd"))), ct)
        assert ct.dtype == np.int16 and ct.min() == -1024 and 400 < ct.max() <= 3071
        assert ct[:, 0, 0].tolist() == [-1024] * ct.shape[0]  # outside the scan circle
        assert set(np.unique(seg)) == {0, 1}
        liver = seg > 0
        assert 0.02 < liver.mean() < 0.09
        assert 80 <= np.median(ct[liver]) <= 150
        body = ct > -500
        assert -150 < np.median(ct[body & ~liver]) < 100
        # A contiguous block of slices, not touching the volume's ends, growing then shrinking.
        zs = np.flatnonzero(liver.any(axis=(1, 2)))
        assert zs.tolist() == list(range(zs[0], zs[-1] + 1)) and zs[0] > 0 and zs[-1] < ct.shape[0] - 1
        area = liver.sum(axis=(1, 2))[zs]
        peak = int(np.argmax(area))
        assert area[0] < area[peak] and area[-1] < area[peak]
        # On the image's left (patient's right).
        cols = np.nonzero(liver)[2]
        assert cols.mean() < ct.shape[2] / 2


# ---------------------------------------------------------------------------------------------------- IDRiD

_IMG = ("A. Segmentation", "1. Original Images")
_MASK = ("A. Segmentation", "2. All Segmentation Groundtruths")


def test_idrid_layout_and_masks(idrid):
    images = sorted(str(p.relative_to(idrid)) for p in idrid.rglob("*.jpg"))
    masks = sorted(str(p.relative_to(idrid)) for p in idrid.rglob("*.tif"))
    assert images == [
        "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg",
        "A. Segmentation/1. Original Images/a. Training Set/IDRiD_02.jpg",
        "A. Segmentation/1. Original Images/b. Testing Set/IDRiD_55.jpg",
    ]
    assert masks == [
        "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/5. Optic Disc/IDRiD_01_OD.tif",
        "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/5. Optic Disc/IDRiD_02_OD.tif",
        "A. Segmentation/2. All Segmentation Groundtruths/b. Testing Set/5. Optic Disc/IDRiD_55_OD.tif",
    ]
    for rel in images:
        jpg = idrid / rel
        tif = idrid.joinpath(*_MASK, jpg.parent.name, "5. Optic Disc", f"{jpg.stem}_OD.tif")
        image, mask = Image.open(jpg), Image.open(tif)
        assert image.format == "JPEG" and image.mode == "RGB" and mask.mode == "RGB"
        assert image.size == mask.size == (SMALL_IDRID["width"], SMALL_IDRID["height"])
        m = np.asarray(mask)
        assert set(np.unique(m[..., 0])) == {0, 255} and not m[..., 1:].any()
        disc = m[..., 0] > 0
        rgb = np.asarray(image).astype(float)
        fundus = rgb.sum(-1) > 40
        # The fundus circle: ~0.8 of the width across, black outside.
        cols = np.flatnonzero(fundus.any(axis=0))
        assert 0.75 < (cols[-1] - cols[0] + 1) / image.width < 0.88
        assert rgb[~fundus].mean() < 10 and rgb[0, 0].sum() < 30
        # One disc, inside the fundus, about 1/8 of its diameter, brighter and yellower than the background.
        assert (disc & ~fundus).sum() == 0
        diam = 2 * np.sqrt(disc.sum() / np.pi)
        assert 0.09 < diam / (cols[-1] - cols[0] + 1) < 0.19
        assert rgb[disc].mean() > rgb[fundus & ~disc].mean() + 40
        assert rgb[disc][:, 1].mean() > 1.5 * rgb[fundus & ~disc][:, 1].mean()


def test_idrid_default_size(tmp_path):
    out = write_phantom("idrid", tmp_path / "raw", patients=1, progress=False)
    (jpg,) = out.rglob("*.jpg")
    (tif,) = out.rglob("*.tif")
    assert Image.open(jpg).size == Image.open(tif).size == (1072, 712)


# ---------------------------------------------------------------------------------------------------- all datasets


@pytest.mark.parametrize("dataset, kw", [("acdc", {}), ("sliver07", SMALL_SLIVER), ("idrid", SMALL_IDRID)])
def test_seeded_and_byte_identical(tmp_path, dataset, kw):
    a = _files(write_phantom(dataset, tmp_path / "a", patients=1, seed=5, progress=False, **kw))
    b = _files(write_phantom(dataset, tmp_path / "b", patients=1, seed=5, progress=False, **kw))
    c = _files(write_phantom(dataset, tmp_path / "c", patients=1, seed=6, progress=False, **kw))
    assert a and a == b  # gz headers carry no time stamp or file name
    assert a.keys() == c.keys() or dataset == "acdc"  # ACDC's ES frame number is drawn too
    assert a != c


def test_case_independent_of_count(acdc, tmp_path):
    # Each case has its own random stream: patient001 is the same whether 1 or 3 patients are written.
    one = write_phantom("acdc", tmp_path / "one", patients=1, seed=7, progress=False)
    rel = "database/training/patient001"
    assert _files(one / rel) == _files(acdc / rel)


def test_overwrite_refused_and_allowed(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        write_phantom("idrid", out, patients=1, progress=False, **SMALL_IDRID)
    assert (out / "keep.txt").read_text() == "mine"
    write_phantom("idrid", out, patients=1, progress=False, overwrite=True, **SMALL_IDRID)
    assert not (out / "keep.txt").exists() and len(list(out.rglob("*.jpg"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary directory left behind
    # An existing empty directory is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantom("sliver07", empty, patients=1, progress=False, **SMALL_SLIVER)
    assert (empty / "liver-seg001.raw").exists()


def test_bad_arguments_leave_nothing(tmp_path):
    with pytest.raises(KeyError, match="acdc"):
        write_phantom("brats", tmp_path / "x")
    with pytest.raises(ValueError, match="1..150"):
        write_phantom("acdc", tmp_path / "x", patients=151)
    with pytest.raises(ValueError, match="1..20"):
        write_phantom("sliver07", tmp_path / "x", patients=0)
    with pytest.raises(TypeError):
        write_phantom("acdc", tmp_path / "x", patients=1, matrix=512)  # ACDC takes no size keyword
    with pytest.raises(ValueError, match="matrix"):
        write_phantom("sliver07", tmp_path / "x", patients=1, matrix=8)
    assert list(tmp_path.iterdir()) == []


def test_preview_png(idrid, tmp_path):
    png = preview_phantom("idrid", idrid, tmp_path / "p.png")
    image = Image.open(png)
    assert image.format == "PNG" and image.width > 400
    with pytest.raises(FileNotFoundError):
        preview_phantom("acdc", tmp_path, tmp_path / "q.png")
