"""One clear error per bad input: it names the file and the problem, and nothing is left in out_dir."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medgan.cli import main
from medgan.data.formats import RawFormatError
from medgan.data.prepare import prepare
from medgan.data.prepared import load_prepared


def expect_error(dataset: str, raw: Path, out: Path, file: Path | str, problem: str):
    """``prepare`` raises RawFormatError naming ``file`` and matching ``problem``; out_dir stays absent."""
    with pytest.raises(RawFormatError) as info:
        prepare(dataset, raw, out, size=16, progress=False)
    msg = str(info.value)
    assert str(file) in msg, msg
    assert re.search(problem, msg), msg
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]  # no temp leftovers
    return msg


def acdc_patient(raw: Path, subset: str = "training") -> Path:
    return sorted((raw / "database" / subset).iterdir())[0]


def frames(folder: Path) -> dict[str, int]:
    cfg = dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines())
    return {"ED": int(cfg["ED"]), "ES": int(cfg["ES"])}


def rewrite_nifti(path: Path, fn):
    img = nib.load(path)
    data = fn(np.asanyarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)


# ------------------------------------------------------------------------------------ ACDC
def test_acdc_missing_info_cfg(acdc_raw, copy_raw, tmp_path):
    raw = copy_raw(acdc_raw)
    folder = acdc_patient(raw)
    (folder / "Info.cfg").unlink()
    expect_error("acdc", raw, tmp_path / "out", folder / "Info.cfg", "missing Info.cfg")


def test_acdc_info_cfg_without_es(acdc_raw, copy_raw, tmp_path):
    raw = copy_raw(acdc_raw)
    folder = acdc_patient(raw)
    cfg = folder / "Info.cfg"
    cfg.write_text("\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("ES")) + "\n")
    expect_error("acdc", raw, tmp_path / "out", cfg, "no 'ES:' line")


@pytest.mark.parametrize("suffix,what", [("", "missing ES frame"), ("_gt", "missing ES ground truth")])
def test_acdc_missing_frame(acdc_raw, copy_raw, tmp_path, suffix, what):
    raw = copy_raw(acdc_raw)
    folder = acdc_patient(raw, "testing")
    path = folder / f"{folder.name}_frame{frames(folder)['ES']:02d}{suffix}.nii.gz"
    path.unlink()
    expect_error("acdc", raw, tmp_path / "out", path, what)


def test_acdc_image_gt_shape_mismatch(acdc_raw, copy_raw, tmp_path):
    raw = copy_raw(acdc_raw)
    folder = acdc_patient(raw)
    gt = folder / f"{folder.name}_frame{frames(folder)['ED']:02d}_gt.nii.gz"
    rewrite_nifti(gt, lambda a: a[:-3])
    expect_error("acdc", raw, tmp_path / "out", gt, r"ground-truth shape \(\d+, \d+, \d+\) differs from its image")


def test_acdc_labels_outside_the_set(acdc_raw, copy_raw, tmp_path):
    raw = copy_raw(acdc_raw)
    folder = sorted((raw / "database" / "training").iterdir())[-1]  # found late: the writer is already open
    gt = folder / f"{folder.name}_frame{frames(folder)['ES']:02d}_gt.nii.gz"

    def add_label(a):
        a[a == 3] = 5
        return a

    rewrite_nifti(gt, add_label)
    expect_error("acdc", raw, tmp_path / "out", gt, r"labels \[5\] are outside the dataset's label set \[0, 1, 2, 3\]")


def test_acdc_empty_ground_truth(acdc_raw, copy_raw, tmp_path):
    raw = copy_raw(acdc_raw)
    folder = acdc_patient(raw, "testing")
    gt = folder / f"{folder.name}_frame{frames(folder)['ED']:02d}_gt.nii.gz"
    rewrite_nifti(gt, np.zeros_like)
    expect_error("acdc", raw, tmp_path / "out", gt, "ground truth is empty")


def test_acdc_unreadable_nifti(acdc_raw, copy_raw, tmp_path):
    raw = copy_raw(acdc_raw)
    folder = acdc_patient(raw)
    image = folder / f"{folder.name}_frame{frames(folder)['ED']:02d}.nii.gz"
    image.write_bytes(b"not a nifti")
    expect_error("acdc", raw, tmp_path / "out", image, "not a readable NIfTI")


# ------------------------------------------------------------------------------------ SLiver07
def test_sliver_mhd_without_raw(sliver_raw, copy_raw, tmp_path):
    raw = copy_raw(sliver_raw)
    (raw / "liver-orig003.raw").unlink()
    expect_error("sliver07", raw, tmp_path / "out", raw / "liver-orig003.mhd", "data file liver-orig003.raw is missing")


def test_sliver_truncated_raw(sliver_raw, copy_raw, tmp_path):
    raw = copy_raw(sliver_raw)
    data = raw / "liver-seg002.raw"
    data.write_bytes(data.read_bytes()[:-100])
    msg = expect_error("sliver07", raw, tmp_path / "out", data, r"truncated: \d+ bytes, but liver-seg002.mhd says DimSize")
    assert "MET_UCHAR" in msg


@pytest.mark.parametrize("name,etype", [("liver-seg001.mhd", "MET_FLOAT"), ("liver-orig004.mhd", "MET_UCHAR"), ("liver-orig001.mhd", "MET_RGB")])
def test_sliver_unsupported_element_type(sliver_raw, copy_raw, tmp_path, name, etype):
    raw = copy_raw(sliver_raw)
    mhd = raw / name
    mhd.write_text(re.sub(r"ElementType = \w+", f"ElementType = {etype}", mhd.read_text()))
    expect_error("sliver07", raw, tmp_path / "out", mhd, f"unsupported ElementType {etype}")


def test_sliver_empty_ground_truth(sliver_raw, copy_raw, tmp_path):
    raw = copy_raw(sliver_raw)
    data = raw / "liver-seg004.raw"
    data.write_bytes(bytes(data.stat().st_size))
    expect_error("sliver07", raw, tmp_path / "out", data, "ground truth is empty")


def test_sliver_segmentation_without_image(sliver_raw, copy_raw, tmp_path):
    raw = copy_raw(sliver_raw)
    (raw / "liver-orig002.mhd").unlink()
    expect_error("sliver07", raw, tmp_path / "out", raw / "liver-seg002.mhd", "segmentation without its image")


def test_sliver_unlabelled_volume_is_skipped_and_recorded(sliver_raw, copy_raw, tmp_path):
    raw = copy_raw(sliver_raw)
    for ext in (".mhd", ".raw"):
        (raw / f"liver-seg004{ext}").unlink()
    ps = load_prepared(prepare("sliver07", raw, tmp_path / "out", size=16, progress=False))
    assert "liver-004" not in set(ps.patients.tolist())
    assert ps.meta["skipped_without_segmentation"] == ["liver-orig004.mhd"]


# ------------------------------------------------------------------------------------ IDRiD
def _idrid_files(raw: Path, subset: str = "a. Training Set", k: int = 0) -> tuple[Path, Path]:
    image = sorted((raw / "A. Segmentation" / "1. Original Images" / subset).glob("*.jpg"))[k]
    mask = raw / "A. Segmentation" / "2. All Segmentation Groundtruths" / subset / "5. Optic Disc" / f"{image.stem}_OD.tif"
    return image, mask


@pytest.mark.parametrize("which", [0, 1])
def test_idrid_unreadable_jpg_or_tif(idrid_raw, copy_raw, tmp_path, which):
    raw = copy_raw(idrid_raw)
    path = _idrid_files(raw, "b. Testing Set")[which]
    path.write_bytes(path.read_bytes()[:40])  # a cut-off download
    expect_error("idrid", raw, tmp_path / "out", path, "unreadable image file")


def test_idrid_mask_size_differs(idrid_raw, copy_raw, tmp_path):
    raw = copy_raw(idrid_raw)
    image, mask = _idrid_files(raw, k=2)
    with Image.open(mask) as m:
        m.resize((m.width // 2, m.height // 2)).save(mask)
    expect_error("idrid", raw, tmp_path / "out", mask, r"mask size \d+x\d+ differs from its image IDRiD_\d+.jpg size")


def test_idrid_missing_mask(idrid_raw, copy_raw, tmp_path):
    raw = copy_raw(idrid_raw)
    image, mask = _idrid_files(raw)
    mask.unlink()
    expect_error("idrid", raw, tmp_path / "out", image, f"no optic-disc mask {image.stem}_OD.tif")


def test_idrid_empty_mask(idrid_raw, copy_raw, tmp_path):
    raw = copy_raw(idrid_raw)
    _, mask = _idrid_files(raw, k=1)
    with Image.open(mask) as m:
        Image.new(m.mode, m.size).save(mask)
    expect_error("idrid", raw, tmp_path / "out", mask, "ground truth is empty")


# ------------------------------------------------------------------------------------ all
@pytest.mark.parametrize("dataset", ["acdc", "sliver07", "idrid"])
def test_raw_dir_with_no_cases(dataset, tmp_path):
    raw = tmp_path / "empty"
    (raw / "database" / "training").mkdir(parents=True)
    (raw / "README.txt").write_text("nothing here")
    expect_error(dataset, raw, tmp_path / "out", raw, "no .* found")
    expect_error(dataset, tmp_path / "missing", tmp_path / "out", tmp_path / "missing", "does not exist")


def test_output_dir_exists_unless_overwrite(idrid_raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        prepare("idrid", idrid_raw, out, size=16, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    prepare("idrid", idrid_raw, out, size=16, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and load_prepared(out).image_size == 16


def test_failed_overwrite_keeps_the_previous_set(idrid_raw, copy_raw, tmp_path):
    out = prepare("idrid", idrid_raw, tmp_path / "out", size=16, progress=False)
    before = load_prepared(out).content_sha256
    raw = copy_raw(idrid_raw)
    _, mask = _idrid_files(raw, "b. Testing Set", k=1)
    mask.write_bytes(b"garbage")
    with pytest.raises(RawFormatError):
        prepare("idrid", raw, out, size=16, overwrite=True, progress=False)
    assert load_prepared(out).content_sha256 == before


def test_refuses_to_overwrite_a_folder_holding_the_raw_data(idrid_raw, copy_raw):
    raw = copy_raw(idrid_raw)
    with pytest.raises(RawFormatError, match="holds the raw folder"):
        prepare("idrid", raw / "A. Segmentation", raw, overwrite=True, progress=False)
    assert (raw / "A. Segmentation").is_dir()


@pytest.mark.parametrize("corrupt", ["info", "exists"])
def test_cli_reports_bad_input_in_one_line_with_exit_2(acdc_raw, copy_raw, tmp_path, capsys, corrupt):
    raw = copy_raw(acdc_raw)
    out = tmp_path / "out"
    if corrupt == "info":
        (acdc_patient(raw) / "Info.cfg").unlink()
    else:
        out.mkdir()
    rc = main(["data", "prepare", "acdc", "--raw", str(raw), "--out", str(out), "--size", "16", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("medgan data: error: ")
    assert ("Info.cfg" in err) if corrupt == "info" else ("already exists" in err and "--overwrite" in err)
