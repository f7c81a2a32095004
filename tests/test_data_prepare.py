"""phantom -> raw files -> prepare -> reload: counts, labels, shapes, ranges, splits, provenance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medgan.data import formats
from medgan.data.prepare import PHANTOM_MARKER, convert_cardiac_volume, crop_or_pad, fundus_box, prepare, window_hu
from medgan.data.prepared import REQUIRED_KEYS, SPLITS, load_prepared, sha256_files

EXTRA_KEYS = ("geometry", "cases", "seed", "raw_dir", "prepared_by")


def check_common(ps, name: str, channels: int, size: int, labels: dict, raw: Path):
    meta = ps.meta
    assert all(k in meta for k in REQUIRED_KEYS + EXTRA_KEYS)
    assert meta["name"] == name and meta["source"] == "phantom" and meta["labels"] == labels
    assert ps.images.dtype == np.float16 and ps.images.shape == (len(ps), channels, size, size)
    assert ps.masks.dtype == np.uint8 and ps.masks.shape == (len(ps), size, size)
    images = np.asarray(ps.images, np.float32)
    assert np.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert images.min() < -0.9 and images.max() > 0.9  # the range is used, not a sliver of it
    assert set(np.unique(ps.masks).tolist()) == {int(k) for k in labels}
    # patient-disjoint splits covering every slice, counts per split
    splits = meta["splits"]
    seen = [p for s in SPLITS for p in splits[s]]
    assert len(seen) == len(set(seen)) and set(seen) == set(ps.patients.tolist())
    for s in SPLITS:
        assert meta["counts"][s] == int(np.isin(ps.patients, splits[s]).sum())
        assert len(splits[s]) >= 1, f"split {s} is empty"
    # provenance: the hash is of the raw files the preparer read
    assert (raw / PHANTOM_MARKER).is_file()
    assert meta["inputs_sha256"] == sha256_files([p for p in raw.rglob("*") if p.is_file() and _is_input(name, p)], root=raw)


def _is_input(name: str, p: Path) -> bool:
    if name == "acdc":
        return p.name == "Info.cfg" or (re.search(r"_frame\d\d(_gt)?\.nii", p.name) and _is_ed_es(p))
    if name == "sliver07":
        return p.suffix in (".mhd", ".raw")
    return p.suffix in (".jpg", ".tif")


def _is_ed_es(p: Path) -> bool:
    info = formats.parse_info_cfg(p.parent / "Info.cfg")
    frame = int(re.search(r"_frame(\d\d)", p.name).group(1))
    return frame in (int(info["ED"]), int(info["ES"]))


# ------------------------------------------------------------------------------------ ACDC
def test_acdc_round_trip(acdc_raw, acdc_prepared):
    ps = load_prepared(acdc_prepared)
    check_common(ps, "acdc", 1, 64, formats.ACDC_LABELS, acdc_raw)
    folders = sorted(p for p in acdc_raw.rglob("patient*") if p.is_dir())
    expected_n, groups = 0, {}
    for folder in folders:
        info = formats.parse_info_cfg(folder / "Info.cfg")
        groups[folder.name] = info["Group"]
        for phase in ("ED", "ES"):
            z = nib.load(folder / f"{folder.name}_frame{int(info[phase]):02d}.nii.gz").shape[2]
            rows = (ps.patients == folder.name) & (ps.extra["phase"] == phase)
            assert sorted(ps.slices[rows].tolist()) == list(range(z))
            expected_n += z
    assert len(ps) == expected_n
    assert ps.meta["splits"]["test"] == sorted(p.name for p in folders if p.parent.name == "testing")
    assert set(ps.meta["splits"]["train"] + ps.meta["splits"]["val"]) == {p.name for p in folders if p.parent.name == "training"}
    assert all(ps.extra["group"][i] == groups[ps.patients[i]] for i in range(len(ps)))
    # the crop keeps the whole heart, centred: the labelled centroid is within 2 px of the centre
    for patient, case in ps.meta["cases"].items():
        for phase in ("ED", "ES"):
            assert case[phase]["labelled_pixels_outside_crop"] == 0
            rows = np.flatnonzero((ps.patients == patient) & (ps.extra["phase"] == phase))
            r, c = np.nonzero(np.asarray(ps.masks[rows]).any(axis=0))
            weights = np.asarray(ps.masks[rows]).astype(bool).sum(axis=0)[r, c]
            assert abs(np.average(r, weights=weights) - 32) <= 2 and abs(np.average(c, weights=weights) - 32) <= 2
    assert ps.meta["val_fraction"] == 0.2 and ps.meta["seed"] == 0
    assert ps.meta["geometry"]["field_of_view_mm"] == pytest.approx(128 * 1.37, abs=0.01)


def test_cardiac_volume_conversion_closed_form():
    """At the target spacing nothing is resampled: percentile map, centring and padding are exact."""
    rng = np.random.default_rng(0)
    size, spacing = 32, 1.37 * 128 / 32
    image = rng.uniform(0, 1000, (3, 40, 50)).astype(np.float32)
    mask = np.zeros((3, 40, 50), np.uint8)
    mask[:, 5:10, 40:47] = 3  # centroid at row 7, column 43: the crop leaves the image on the right
    vol = formats.CardiacVolume("ED", 1, image, mask, (10.0, spacing, spacing), "RAS")
    images, masks, info = convert_cardiac_volume(vol, size, Path("x.nii.gz"))
    lo, hi = np.percentile(image, [1, 99])
    expected = np.clip((image - lo) / (hi - lo) * 2 - 1, -1, 1)
    top, left = 7 - 16, 43 - 16
    assert np.allclose(images[:, 0], crop_or_pad(expected, top, left, size, -1.0), atol=1e-5)
    assert np.array_equal(masks, crop_or_pad(mask, top, left, size, 0))
    assert masks.sum() == mask.sum() and info["labelled_pixels_outside_crop"] == 0
    assert (images[:, 0, :, 50 - left :] == -1).all()  # padding beyond the right edge


def test_cardiac_volume_resampling_to_the_target_spacing():
    """A 2.74 mm disc of radius 10 px becomes a 1.37 mm disc of radius 20 px (at size 128)."""
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 <= 100).astype(np.uint8)[None] * 3
    image = np.where(disc > 0, 900.0, 100.0).astype(np.float32)
    vol = formats.CardiacVolume("ES", 8, image, disc, (8.0, 2.74, 2.74), "RAS")
    _, masks, _ = convert_cardiac_volume(vol, 128, Path("x.nii.gz"))
    assert masks.sum() / 3 == pytest.approx(np.pi * 20**2, rel=0.05)


# ------------------------------------------------------------------------------------ SLiver07
def test_sliver_round_trip(sliver_raw, sliver_prepared):
    ps = load_prepared(sliver_prepared)
    check_common(ps, "sliver07", 1, 64, formats.SLIVER_LABELS, sliver_raw)
    depth = {}
    for mhd in sorted(sliver_raw.glob("liver-orig*.mhd")):
        z = int(re.search(r"DimSize = \d+ \d+ (\d+)", mhd.read_text()).group(1))
        depth["liver-" + mhd.stem[-3:]] = z
    assert len(ps) == sum(depth.values())
    for patient, z in depth.items():
        assert ps.slices[ps.patients == patient].tolist() == list(range(z))
    assert tuple(len(ps.meta["splits"][s]) for s in SPLITS) == (2, 1, 1)


def test_sliver_values_are_the_hu_window_exactly(sliver_raw, tmp_path):
    """Prepared at the phantom's own matrix (no resize), images are the HU window and masks seg > 0."""
    import SimpleITK as sitk

    out = prepare("sliver07", sliver_raw, tmp_path / "s", size=96, progress=False)
    ps = load_prepared(out)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(sliver_raw / "liver-orig002.mhd")))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(sliver_raw / "liver-seg002.mhd")))
    rows = ps.patients == "liver-002"
    assert np.allclose(np.asarray(ps.images[rows], np.float32)[:, 0], window_hu(hu), atol=1e-3)  # float16
    assert np.array_equal(np.asarray(ps.masks[rows]), (seg > 0).astype(np.uint8))
    assert window_hu(np.array([-1024, -100, 50, 200, 1500])).tolist() == [-1, -1, 0, 1, 1]


# ------------------------------------------------------------------------------------ IDRiD
def test_idrid_round_trip(idrid_raw, idrid_prepared):
    ps = load_prepared(idrid_prepared)
    check_common(ps, "idrid", 3, 64, formats.IDRID_LABELS, idrid_raw)
    train = sorted(p.stem for p in idrid_raw.rglob("a. Training Set/IDRiD_*.jpg"))
    test = sorted(p.stem for p in idrid_raw.rglob("b. Testing Set/IDRiD_*.jpg"))
    assert len(ps) == len(train) + len(test)
    assert ps.meta["splits"]["test"] == test
    assert sorted(ps.meta["splits"]["train"] + ps.meta["splits"]["val"]) == train
    assert (ps.slices == 0).all()
    images = np.asarray(ps.images, np.float32)
    assert (images[:, :, 0, 0] < -0.9).all()  # corners are the black background
    disc = ps.masks.reshape(len(ps), -1).mean(axis=1)
    assert (disc > 0.003).all() and (disc < 0.1).all()  # one small disc per image


def test_fundus_box_is_the_square_around_the_bright_disc():
    image = np.zeros((100, 160, 3), np.uint8)
    yy, xx = np.mgrid[:100, :160]
    image[(yy - 50) ** 2 + (xx - 70) ** 2 <= 45**2] = (200, 90, 40)
    image[0, 0] = image[99, 159] = 255  # isolated hot pixels (JPEG noise) do not widen the box
    top, left, side = fundus_box(image, Path("f.jpg"))
    # exact box: rows 5..95, columns 25..115; rows/columns with <= 2 fundus pixels are ignored
    assert abs(top - 5) <= 1 and abs(left - 25) <= 1 and abs(side - 91) <= 2
    cut = image.copy()
    cut[:20] = 0  # circle cut at the top, as in IDRiD: the square extends past the image
    top2, left2, side2 = fundus_box(cut, Path("f.jpg"))
    assert (left2, side2) == (left, side) and top2 == round((20 + 95 - side2) / 2) < 20
    with pytest.raises(formats.RawFormatError, match="no fundus"):
        fundus_box(np.zeros((10, 10, 3), np.uint8), Path("black.jpg"))


# ------------------------------------------------------------------------------------ all
@pytest.mark.parametrize("dataset,fixture", [("acdc", "acdc_raw"), ("sliver07", "sliver_raw"), ("idrid", "idrid_raw")])
def test_prepare_never_modifies_raw_inputs_and_is_deterministic(dataset, fixture, request, tmp_path, folder_digest):
    raw = request.getfixturevalue(fixture)
    before = folder_digest(raw, mtimes=True)
    a = load_prepared(prepare(dataset, raw, tmp_path / "a", size=32, progress=False))
    b = load_prepared(prepare(dataset, raw, tmp_path / "b", size=32, progress=False))
    assert folder_digest(raw, mtimes=True) == before
    assert a.content_sha256 == b.content_sha256 and a.meta["splits"] == b.meta["splits"]
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["image_size"] == 32


def test_other_seeds_draw_other_splits(acdc_raw, tmp_path):
    from medgan.data.prepare import PREPARERS

    entries, _ = PREPARERS["acdc"].find(acdc_raw)
    vals = {tuple(PREPARERS["acdc"].split(entries, 0.2, seed)["val"]) for seed in range(10)}
    tests = {tuple(PREPARERS["acdc"].split(entries, 0.2, seed)["test"]) for seed in range(10)}
    assert len(vals) > 1 and len(tests) == 1  # val is drawn, test is the official one


def test_registry_lists_the_three_datasets_and_the_nnunet_reader():
    from medgan.data.prepare import PREPARERS

    assert PREPARERS.names() == ["acdc", "idrid", "nnunet", "sliver07"]
    with pytest.raises(KeyError, match="known: acdc, idrid, nnunet, sliver07"):
        PREPARERS["brats"]


def test_idrid_real_layout_names_and_rgb_disc(tmp_path):
    """A hand-made case in the exact real folder names; an 'L'-mode mask is read too."""
    base = tmp_path / "IDRiD" / "A. Segmentation"
    img_dir = base / "1. Original Images" / "a. Training Set"
    od_dir = base / "2. All Segmentation Groundtruths" / "a. Training Set" / "5. Optic Disc"
    img_dir.mkdir(parents=True)
    od_dir.mkdir(parents=True)
    rgb = np.zeros((60, 90, 3), np.uint8)
    yy, xx = np.mgrid[:60, :90]
    rgb[(yy - 30) ** 2 + (xx - 45) ** 2 <= 28**2] = (180, 80, 40)
    Image.fromarray(rgb).save(img_dir / "IDRiD_01.jpg")
    Image.fromarray(rgb).save(img_dir / "IDRiD_02.jpg")
    red = np.zeros((60, 90, 3), np.uint8)
    red[25:35, 55:65, 0] = 255
    Image.fromarray(red).save(od_dir / "IDRiD_01_OD.tif")
    Image.fromarray(red[..., 0]).save(od_dir / "IDRiD_02_OD.tif")
    entries = formats.find_idrid(tmp_path)
    assert [(e.patient, e.subset) for e in entries] == [("IDRiD_01", "training"), ("IDRiD_02", "training")]
    for e in entries:
        case = formats.read_idrid(e)
        assert case.image.shape == (60, 90, 3) and case.mask.sum() == 100
    ps = load_prepared(prepare("idrid", tmp_path, tmp_path / "out", size=16, progress=False))
    assert ps.meta["source"] == "raw" and len(ps) == 2
    assert ps.meta["counts"] == {"train": 1, "val": 1, "test": 0}
