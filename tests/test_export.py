"""``medgan export``: nnU-Net v2 raw data that nnU-Net's rules accept and that prepares back to the same set;
NIfTI volumes and PNG pairs that nibabel / Pillow read back; the provenance sidecar; one-line bad inputs."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medgan import cli
from medgan.data import load_prepared, prepare
from medgan.data.prepared import write_prepared
from medgan.errors import ConfigError, NnunetFormatError
from medgan.export import export, nifti_gz, verify_nnunet
from medgan.runtime import code_version

CARDIAC_LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}


def _cardiac_set(out: Path, size: int = 12) -> Path:
    """ED + ES stacks of three patients (train, val, test) with ACDC's extras, geometry and per-case spacing."""
    rng = np.random.default_rng(0)
    patients, slices, phases = [], [], []
    for p, depth in (("patient001", 3), ("patient002", 2), ("patient101", 2)):
        for phase in ("ED", "ES"):
            patients += [p] * depth
            slices += list(range(depth))
            phases += [phase] * depth
    n = len(patients)
    images = rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float16)
    masks = rng.integers(0, 4, (n, size, size)).astype(np.uint8)
    meta = {"name": "acdc", "modality": "cine-MRI (short axis)", "labels": CARDIAC_LABELS, "source": "phantom",
            "splits": {"train": ["patient001"], "val": ["patient002"], "test": ["patient101"]},
            "normalisation": {"method": "percentile"}, "inputs_sha256": "0" * 64,
            "geometry": {"spacing_mm": [1.5, 1.5]},
            "cases": {p: {"ED": {"spacing_mm": [8.0 + i, 1.2, 1.2]}} for i, p in enumerate(sorted(set(patients)))}}
    extra = {"phase": np.asarray(phases, "<U2"), "group": np.asarray([p[-1] for p in patients], "<U4")}
    return write_prepared(out, images=images, masks=masks, patients=patients, slices=slices, meta=meta, extra=extra)


def _generated_rgb_set(tmp: Path, size: int = 10) -> Path:
    """A generated-looking RGB set whose run folder says it was trained on phantom data."""
    run_dir = tmp / "run-7"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"dataset": {"source": "phantom"}}))
    rng = np.random.default_rng(1)
    n = 5
    patients = [f"gen-{i:06d}" for i in range(n)]
    meta = {"name": "idrid-generated", "modality": "colour fundus photograph", "labels": {"0": "background", "1": "OD"},
            "source": "generated", "splits": {"train": patients, "val": [], "test": []}, "normalisation": "linear",
            "inputs_sha256": "1" * 64, "run_id": "run-7", "run_dir": str(run_dir), "config_hash": "c0ffee",
            "seed": 3, "checkpoint": "checkpoint-last.pt", "checkpoint_kimg": 0.25, "gan": "dcgan",
            "code_version": "0.0+test", "real_dataset": {"name": "idrid", "root": str(tmp / "gone")}}
    images = rng.uniform(-1, 1, (n, 3, size, size)).astype(np.float16)
    masks = rng.integers(0, 2, (n, size, size)).astype(np.uint8)
    return write_prepared(tmp / "gen", images=images, masks=masks, patients=patients, meta=meta)


@pytest.fixture(scope="module")
def cardiac(tmp_path_factory) -> Path:
    return _cardiac_set(tmp_path_factory.mktemp("export") / "acdc")


@pytest.fixture(scope="module")
def cardiac_nnunet(cardiac, tmp_path_factory) -> Path:
    """A read-only nnU-Net export of ``cardiac`` (tests that doctor it copy it first)."""
    return export(cardiac, "nnunet", tmp_path_factory.mktemp("nnraw"), dataset_id=501, progress=False)


def _doctored(cardiac_nnunet: Path, tmp_path: Path) -> Path:
    folder = tmp_path / cardiac_nnunet.name
    shutil.copytree(cardiac_nnunet, folder)
    return folder


def _assert_same_set(back: Path, source: Path) -> None:
    a, b = load_prepared(back), load_prepared(source)
    assert a.images.dtype == b.images.dtype and np.array_equal(a.images, b.images)
    assert np.array_equal(a.masks, b.masks)
    assert a.patients.tolist() == b.patients.tolist() and a.slices.tolist() == b.slices.tolist()
    assert {k: v.tolist() for k, v in a.extra.items()} == {k: v.tolist() for k, v in b.extra.items()}
    assert a.meta["splits"] == b.meta["splits"] and a.labels == b.labels
    assert a.meta["normalisation"] == b.meta["normalisation"] and a.meta["modality"] == b.meta["modality"]
    assert (a.name, a.source, a.channels, a.image_size) == (b.name, b.source, b.channels, b.image_size)


# --------------------------------------------------------------------------------------------
# nnU-Net
# --------------------------------------------------------------------------------------------
def test_nnunet_layout_and_dataset_json(cardiac, cardiac_nnunet):
    assert cardiac_nnunet.name == "Dataset501_acdc"
    ds = json.loads((cardiac_nnunet / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert ds["channel_names"] == {"0": "image"} and ds["file_ending"] == ".nii.gz"
    train_files = sorted(os.listdir(cardiac_nnunet / "imagesTr"))
    assert ds["numTraining"] == len(train_files) == 10  # patient001 + patient002, ED and ES; patient101 is test
    assert all(f.endswith("_0000.nii.gz") for f in train_files)
    assert sorted(os.listdir(cardiac_nnunet / "labelsTr")) == [f[: -len("_0000.nii.gz")] + ".nii.gz" for f in train_files]
    assert len(os.listdir(cardiac_nnunet / "imagesTs")) == len(os.listdir(cardiac_nnunet / "labelsTs")) == 4
    ps = load_prepared(cardiac)
    first = nib.load(cardiac_nnunet / "imagesTr" / train_files[0])
    # 2-D convention: a 1 x H x W volume ([x, y, z] = [W, H, 1]), slice axis 999 mm, in-plane from geometry
    assert first.shape == (12, 12, 1) and first.get_data_dtype() == np.float32
    assert np.allclose(first.header.get_zooms(), (1.5, 1.5, 999.0))
    assert np.array_equal(np.asarray(first.dataobj)[:, :, 0].T, np.asarray(ps.images[0, 0], np.float32))
    assert verify_nnunet(cardiac_nnunet) == {"cases": 10, "channels": 1, "labels": CARDIAC_LABELS}


def test_nnunet_export_prepares_back_to_the_same_set_through_the_cli(cardiac, cardiac_nnunet, tmp_path, capsys):
    rc = cli.main(["data", "prepare", "nnunet", "--raw", str(cardiac_nnunet), "--out", str(tmp_path / "back"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    _assert_same_set(tmp_path / "back", cardiac)


def test_rgb_set_has_one_file_per_channel_and_round_trips(tmp_path):
    source = _generated_rgb_set(tmp_path)
    folder = export(source, "nnunet", tmp_path / "raw", progress=False)
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "R", "1": "G", "2": "B"} and ds["numTraining"] == 5
    names = sorted(os.listdir(folder / "imagesTr"))
    assert len(names) == 15 and {n[-11:] for n in names} == {"0000.nii.gz", "0001.nii.gz", "0002.nii.gz"}
    ps = load_prepared(source)
    green = nib.load(folder / "imagesTr" / names[1])  # gen-000000, channel 1
    assert np.array_equal(np.asarray(green.dataobj)[:, :, 0].T, np.asarray(ps.images[0, 1], np.float32))
    _assert_same_set(prepare("nnunet", folder, tmp_path / "back", progress=False), source)


def test_splits_final_folds_by_patient(cardiac_nnunet):
    folds = json.loads((cardiac_nnunet / "splits_final.json").read_text())
    train_cases = sorted(f[: -len("_0000.nii.gz")] for f in os.listdir(cardiac_nnunet / "imagesTr"))
    patient = {c["case"]: c["patient"] for c in json.loads((cardiac_nnunet / "medgan_provenance.json").read_text())["cases"]}
    assert len(folds) == 2  # two training patients: one fold each
    assert sorted(c for fold in folds for c in fold["val"]) == train_cases  # every case validated exactly once
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == train_cases
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}


def test_nnunetv2_own_integrity_check_accepts_the_export(cardiac_nnunet, tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path))
    integrity = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    integrity.verify_dataset_integrity(str(cardiac_nnunet), num_processes=1)  # raises on any violation


def _drop_label(folder):
    next((folder / "labelsTr").iterdir()).unlink()


def _wrong_num_training(folder):
    ds = json.loads((folder / "dataset.json").read_text())
    ds["numTraining"] += 1
    (folder / "dataset.json").write_text(json.dumps(ds))


def _first_label(folder) -> Path:
    return sorted((folder / "labelsTr").iterdir())[0]


def _first_image(folder) -> Path:
    return sorted((folder / "imagesTr").iterdir())[0]


def _rewrite(path: Path, change) -> None:
    img = nib.load(path)
    data, zooms = change(np.asarray(img.dataobj).copy()), img.header.get_zooms()
    path.write_bytes(nifti_gz(data, zooms))


def _undeclared_label(folder):
    _rewrite(_first_label(folder), lambda a: np.where(a == 0, 7, a).astype(np.uint8))


def _other_shape(folder):
    _rewrite(_first_image(folder), lambda a: np.pad(a, ((0, 1), (0, 0), (0, 0))))


def _nan_voxel(folder):
    def poison(a):
        a[0, 0, 0] = np.nan
        return a
    _rewrite(_first_image(folder), poison)


def _other_spacing(folder):
    path = _first_image(folder)
    path.write_bytes(nifti_gz(np.asarray(nib.load(path).dataobj), (2.0, 1.5, 999.0)))


def _label_gap(folder):
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"]["LV"] = 5
    (folder / "dataset.json").write_text(json.dumps(ds))


def _missing_key(folder):
    ds = json.loads((folder / "dataset.json").read_text())
    del ds["file_ending"]
    (folder / "dataset.json").write_text(json.dumps(ds))


def _drop_channel(folder):
    first = _first_image(folder)
    first.rename(first.with_name(first.name[: -len("_0000.nii.gz")] + "_0001.nii.gz"))


def _stray_ending(folder):
    _first_label(folder).rename(_first_label(folder).with_name("x.nii"))


def _no_background(folder):
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"bg": 0, **{k: v for k, v in ds["labels"].items() if k != "background"}}
    (folder / "dataset.json").write_text(json.dumps(ds))


def _foreign_fractional_label(folder):
    _rewrite(_first_label(folder), lambda a: a.astype(np.float32) + 0.5)


@pytest.mark.parametrize("doctor, phrase", [
    (_drop_label, "has no label file"),
    (_wrong_num_training, "numTraining is 11 but imagesTr holds 10 cases"),
    (_undeclared_label, "label value(s) [7] are not declared"),
    (_other_shape, "differs from its label's"),
    (_nan_voxel, "NaN voxels"),
    (_other_spacing, "spacing (2.0, 1.5, 999.0) differs"),
    (_label_gap, "are not consecutive"),
    (_missing_key, "lacks the required keys ['file_ending']"),
    (_drop_channel, "has channels [1], channel_names declares 1"),
    (_stray_ending, "does not end with file_ending"),
    (_no_background, "must map 'background' to 0"),
    (_foreign_fractional_label, "labels must be integers"),
])
def test_verify_nnunet_names_each_broken_rule(cardiac_nnunet, tmp_path, doctor, phrase):
    folder = _doctored(cardiac_nnunet, tmp_path)
    verify_nnunet(folder)  # the copy is valid before the doctor touches it
    doctor(folder)
    with pytest.raises(NnunetFormatError) as info:
        verify_nnunet(folder)
    message = str(info.value)
    assert phrase in message and "\n" not in message and str(folder) in message


def test_verify_nnunet_wants_a_dataset_folder_name(cardiac_nnunet, tmp_path):
    folder = tmp_path / "acdc-export"
    shutil.copytree(cardiac_nnunet, folder)
    with pytest.raises(NnunetFormatError, match="DatasetXXX_Name"):
        verify_nnunet(folder)


def test_a_plain_nnunet_dataset_prepares_by_case(tmp_path):
    """No medgan sidecar: each case is a patient, its volume's slices are rows, intensities are rescaled."""
    folder = tmp_path / "Dataset042_Toy"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(2)
    for case, sub in (("a", "Tr"), ("b", "Tr"), ("c", "Ts")):
        volume = rng.normal(300, 80, (10, 8, 3)).astype(np.float32)  # [x, y, z]: 10 wide, 8 high, 3 slices
        label = (volume > 300).astype(np.uint8)
        (folder / f"images{sub}" / f"{case}_0000.nii.gz").write_bytes(nifti_gz(volume, (0.8, 0.8, 3.0)))
        (folder / f"labels{sub}" / f"{case}.nii.gz").write_bytes(nifti_gz(label, (0.8, 0.8, 3.0)))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "hot": 1},
                                                     "numTraining": 2, "file_ending": ".nii.gz"}))
    verify_nnunet(folder)
    ps = load_prepared(prepare("nnunet", folder, tmp_path / "p", progress=False))
    assert (ps.name, ps.channels, ps.image_size, len(ps)) == ("Toy", 1, 10, 9)
    assert ps.meta["splits"]["test"] == ["c"] and sorted(ps.meta["splits"]["train"] + ps.meta["splits"]["val"]) == ["a", "b"]
    assert ps.slices.tolist() == [0, 1, 2] * 3 and set(np.unique(ps.masks).tolist()) <= {0, 1}
    assert -1 <= float(ps.images.min()) < -0.9 and 0.9 < float(ps.images.max()) <= 1
    inside = np.asarray(ps.images[:, 0, 1:9], np.float32)  # 8 rows padded to 10: rows 1..8 hold the scan
    assert abs(float(np.median(inside))) < 0.3  # 1st-99th percentile -> [-1, 1]: the median lands near 0


# --------------------------------------------------------------------------------------------
# NIfTI volumes and PNG pairs
# --------------------------------------------------------------------------------------------
def test_nifti_export_writes_one_volume_per_patient_stack(cardiac, tmp_path):
    out = export(cardiac, "nifti", tmp_path / "nii", progress=False)
    ps = load_prepared(cardiac)
    prov = json.loads((out / "medgan_provenance.json").read_text())
    names = [v["volume"] for v in prov["volumes"]]
    assert names == ["patient001_1-ED", "patient001_1-ES", "patient002_2-ED", "patient002_2-ES",
                     "patient101_1-ED", "patient101_1-ES"]
    assert sorted(os.listdir(out / "images")) == sorted(os.listdir(out / "labels")) == sorted(f"{n}.nii.gz" for n in names)
    covered = []
    for volume in prov["volumes"]:
        start, stop = volume["rows"]
        covered += range(start, stop)
        image, label = nib.load(out / "images" / f"{volume['volume']}.nii.gz"), nib.load(out / "labels" / f"{volume['volume']}.nii.gz")
        assert np.array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), np.asarray(ps.images[start:stop, 0], np.float32))
        assert np.array_equal(np.asarray(label.dataobj).transpose(2, 1, 0), ps.masks[start:stop])
        assert np.allclose(image.header.get_zooms(), label.header.get_zooms())
    assert covered == list(range(len(ps)))
    assert np.allclose(nib.load(out / "images" / "patient002_2-ED.nii.gz").header.get_zooms(), (1.5, 1.5, 9.0))


def test_png_export_reads_back_with_pillow(tmp_path):
    source = _generated_rgb_set(tmp_path)
    out = export(source, "png", tmp_path / "png", progress=False)
    ps = load_prepared(source)
    for i, name in enumerate(sorted(os.listdir(out / "images"))):
        image = Image.open(out / "images" / name)
        mask = Image.open(out / "masks" / name)
        assert image.mode == "RGB" and mask.mode == "L"
        assert np.array_equal(np.asarray(mask), ps.masks[i])  # label index per pixel, exact
        back = np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        assert np.abs(back - np.asarray(ps.images[i], np.float32)).max() <= 0.5 / 127.5 + 1e-3  # 8-bit rounding


def test_png_refuses_a_two_channel_set_and_leaves_nothing(tmp_path):
    rng = np.random.default_rng(3)
    meta = {"name": "two", "modality": "MRI", "labels": {"0": "background", "1": "x"}, "source": "raw",
            "splits": {"train": ["p"]}, "normalisation": "none", "inputs_sha256": "x"}
    source = write_prepared(tmp_path / "two", images=rng.uniform(-1, 1, (2, 2, 8, 8)), masks=np.zeros((2, 8, 8), np.uint8),
                            patients=["p", "p"], meta=meta)
    with pytest.raises(ConfigError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        export(source, "png", tmp_path / "out", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["two"]  # neither the target nor a temp folder


# --------------------------------------------------------------------------------------------
# provenance and bad inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["nnunet", "nifti", "png"])
def test_every_export_carries_the_provenance_of_a_generated_set(tmp_path, fmt):
    source = _generated_rgb_set(tmp_path)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    out = export(source, fmt, tmp_path / "out", progress=False)
    prov = json.loads((out / "medgan_provenance.json").read_text())
    ps = load_prepared(source)
    src = prov["source_set"]
    assert prov["format"] == fmt and prov["code_version"] == code_version()
    assert src["path"] == str(source.resolve()) and src["content_sha256"] == ps.content_sha256
    assert (src["run_id"], src["config_hash"], src["seed"], src["checkpoint_kimg"]) == ("run-7", "c0ffee", 3, 0.25)
    assert prov["data_source"] == "phantom"  # from the run's config.json: the real set is gone
    assert before <= datetime.datetime.fromisoformat(prov["exported_at"]) <= datetime.datetime.now(datetime.timezone.utc)


def test_a_prepared_set_records_its_own_source(cardiac, cardiac_nnunet):
    prov = json.loads((cardiac_nnunet / "medgan_provenance.json").read_text())
    assert prov["data_source"] == "phantom" and prov["source_set"]["source"] == "phantom"
    assert "run_id" not in prov["source_set"]
    assert [c["patient"] for c in prov["cases"]] == load_prepared(cardiac).patients.tolist()


def test_bad_inputs_are_one_line_through_the_cli(cardiac, cardiac_nnunet, tmp_path, capsys):
    not_a_set = tmp_path / "empty"
    not_a_set.mkdir()
    taken = tmp_path / "taken"
    taken.mkdir()
    damaged = _doctored(cardiac_nnunet, tmp_path)
    label = _first_label(damaged)
    label.write_bytes(label.read_bytes()[:40])  # a transfer cut short
    cases = [
        (["data", "prepare", "nnunet", "--raw", str(damaged), "--out", str(tmp_path / "p")],
         f"{label}: not a readable NIfTI file"),
        (["export", str(not_a_set), "--format", "png", "--out", str(tmp_path / "o")], "dataset.json is missing"),
        (["export", str(cardiac), "--format", "nifti", "--out", str(taken)], "already exists (pass --overwrite"),
        (["export", str(cardiac), "--format", "nnunet", "--out", str(cardiac_nnunet.parent), "--dataset-id", "501"],
         "already exists (pass --overwrite"),
        (["export", str(cardiac), "--format", "nnunet", "--out", str(cardiac_nnunet.parent), "--name", "other",
          "--dataset-id", "501"], "ID 501 is taken by"),
        (["export", str(cardiac), "--format", "nnunet", "--out", str(tmp_path / "n"), "--name", "a_b"], "--name 'a_b'"),
        (["export", str(cardiac), "--format", "nnunet", "--out", str(tmp_path / "n"), "--dataset-id", "1000"],
         "--dataset-id must be in 1..999"),
        (["data", "prepare", "nnunet", "--raw", str(not_a_set), "--out", str(tmp_path / "p")], "dataset.json"),
    ]
    for argv, phrase in cases:
        rc = cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and phrase in err[0], (argv, err)
    assert not any((tmp_path / d).exists() for d in ("o", "n", "p")) and os.listdir(taken) == []
    assert cli.main(["export", str(cardiac), "--format", "nifti", "--out", str(taken), "--overwrite", "--quiet"]) == 0
    assert (taken / "medgan_provenance.json").is_file()
