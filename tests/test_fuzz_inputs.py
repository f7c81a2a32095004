"""Damaged real-format raw files never break ``medgan data prepare``: it succeeds on a valid file or fails with
ONE line naming the file (exit 2, no traceback), and a failure leaves no output folder behind.

Hypothesis draws damages to copies of tiny phantom datasets written in the real layouts (ACDC NIfTI +
Info.cfg, SLiver07 MetaImage .mhd/.raw and .zraw, IDRiD jpg + tif): truncation, flipped header bytes and
fields, wrong dtype/shape/spacing, NaN/Inf voxels, empty or huge images, unreadable files, wrong labels,
links, paths leaving the folder. Each damage declares what must happen (``fail`` / ``ok`` / ``any``).
Derandomised and database-free: CI draws the same examples every run.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from medgan.cli import main
from medgan.data.formats import read_mhd, read_mhd_header
from medgan.data.phantoms import write_phantom
from medgan.data.prepare import prepare
from medgan.data.prepared import load_prepared
from medgan.errors import ConfigError, InputTooLargeError, RawFormatError

FUZZ = settings(max_examples=int(os.environ.get("MEDGAN_FUZZ_EXAMPLES", "30")), deadline=None, derandomize=True,
                database=None, print_blob=False, phases=[Phase.explicit, Phase.generate],  # no shrinking: CI time
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SIZE = "16"
PHANTOM = {"acdc": {}, "sliver07": {"matrix": 64}, "idrid": {"width": 128, "height": 96}}
Damage = Callable[[Path, Callable], tuple[list[Path], str]]  # (raw, draw) -> (files the error may name, expect)


@pytest.fixture(scope="module")
def raws(tmp_path_factory) -> dict[str, Path]:
    """Two-patient phantoms (one training, one testing) of each dataset, without the unread 4-D cines."""
    root = tmp_path_factory.mktemp("fuzz-raw")
    out = {}
    for name, kw in PHANTOM.items():
        raw = write_phantom(name, root / name, patients=2, seed=3, progress=False, **kw)
        for cine in raw.rglob("*_4d.nii*"):
            cine.unlink()
        out[name] = raw
    return out


def run_cli(dataset: str, raw: Path, work: Path, capfd) -> tuple[int, str, Path]:
    out = work / "made-by-prepare" / "out"  # the parent too must not survive a failure
    capfd.readouterr()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # a logged warning (nibabel's) is one more stderr line outside pytest
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:  # so is a Python warning
            warnings.simplefilter("always")
            rc = main(["data", "prepare", dataset, "--raw", str(raw), "--out", str(out), "--size", SIZE, "--quiet"])
    finally:
        logging.getLogger().removeHandler(handler)
    err = capfd.readouterr().err
    err += "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)
    err += "".join(f"log {r.name}: {r.getMessage()}\n" for r in records)
    return rc, err, out


def check_outcome(dataset: str, raw: Path, work: Path, capfd, targets: list[Path], expect: str) -> str:
    rc, err, out = run_cli(dataset, raw, work, capfd)
    if rc == 0:
        assert expect != "fail", f"damaged input accepted (should name {targets[0]})"
        assert not err.strip(), f"a successful prepare wrote to stderr:\n{err}"
        ps = load_prepared(out)
        assert len(ps) > 0 and np.isfinite(np.asarray(ps.images, np.float32)).all()
        return "ok"
    lines = err.strip().splitlines()
    assert rc == 2 and expect != "ok", err
    assert len(lines) == 1, f"error spread over {len(lines)} lines:\n{err}"
    assert lines[0].startswith("medgan data: error: "), err
    assert any(str(t) in lines[0] for t in targets), f"error does not name {targets}: {err}"
    assert not out.parent.exists(), "a failed prepare left its output folder (or its parent) behind"
    assert not [p for p in work.iterdir() if p.name.startswith(".")], "temp leftovers"
    return "fail"


def copy(raw: Path, work: Path) -> Path:
    dst = work / "raw"
    shutil.copytree(raw, dst, symlinks=True)
    return dst


# ----------------------------------------------------------------------------------------------- generic damages
def truncate(path: Path, draw) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])


def flip_bytes(path: Path, draw, lo: int = 0, hi: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    hi = len(data) if hi is None else min(hi, len(data))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(lo, hi - 1))] = draw(st.integers(0, 255))
    path.write_bytes(bytes(data))


def self_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)  # a link to itself: ELOOP on open


def generic(path: Path, draw) -> str:
    """One damage any file can suffer; returns what must happen."""
    kind = draw(st.sampled_from(["truncate", "empty", "garbage", "delete", "self-link", "dangling-link", "dir"]))
    if kind == "truncate":
        truncate(path, draw)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(draw(st.binary(min_size=1, max_size=600)))
    elif kind == "delete":
        path.unlink()
    elif kind == "self-link":
        self_link(path)
    elif kind == "dangling-link":
        path.unlink()
        path.symlink_to(path.name + ".gone")
    else:
        path.unlink()
        path.mkdir()
    return "fail"


# ----------------------------------------------------------------------------------------------- ACDC
def acdc_files(raw: Path, draw) -> tuple[Path, Path, Path]:
    folder = draw(st.sampled_from(sorted(p for p in raw.rglob("patient???") if p.is_dir())))
    cfg = dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines() if ": " in line)
    frame = int(cfg[draw(st.sampled_from(["ED", "ES"]))])
    return folder, folder / f"{folder.name}_frame{frame:02d}.nii.gz", folder / f"{folder.name}_frame{frame:02d}_gt.nii.gz"


def rewrite_nifti(path: Path, data_fn=None, header_fn=None) -> None:
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).copy()
    data = data_fn(data) if data_fn else data
    hdr = img.header.copy()
    hdr.set_data_dtype(data.dtype)
    new = nib.Nifti1Image(data, img.affine, hdr)
    if header_fn:
        header_fn(new.header)
    nib.save(new, path)


def acdc_damage(raw: Path, draw) -> tuple[list[Path], str]:
    folder, image, gt = acdc_files(raw, draw)
    target = draw(st.sampled_from([image, gt]))
    kind = draw(st.sampled_from(["generic", "info", "gz-header-bytes", "spacing", "units", "dtype", "nan",
                                 "labels", "shape", "huge-dims", "scale"]))
    if kind == "generic":
        target = draw(st.sampled_from([image, gt, folder / "Info.cfg"]))
        return [target, folder], generic(target, draw)
    if kind == "info":
        cfg = folder / "Info.cfg"
        lines = cfg.read_text().splitlines()
        key = draw(st.sampled_from(["ED", "ES", "Group", "NbFrame"]))
        value = draw(st.sampled_from(["", "-1", "0", "99", "1.5", "x", "9" * 40, "\x00", "12: 3"]))
        cfg.write_text("\n".join(f"{key}: {value}" if ln.startswith(key + ":") else ln for ln in lines) + "\n")
        return [folder], "fail" if key in ("ED", "ES") else "ok"
    if kind == "gz-header-bytes":  # flip bytes inside the 348-byte NIfTI header, keep the gzip stream valid
        data = bytearray(gzip.decompress(target.read_bytes()))
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, 351))] = draw(st.integers(0, 255))
        target.write_bytes(gzip.compress(bytes(data)))
        return [target, image, gt], "any"
    if kind == "spacing":
        value = draw(st.sampled_from([0.0, -1.37, float("nan"), float("inf"), 1e-7, 1e4]))
        data = bytearray(gzip.decompress(image.read_bytes()))
        data[80:88] = struct.pack("<ff", value, value)  # pixdim[1:3], as bytes: nibabel would refuse to write them
        image.write_bytes(gzip.compress(bytes(data)))
        # nibabel repairs a zero / negative pixdim on load (to 1 / |x|) before we see it: those may pass
        return [image], "any" if value in (0.0, -1.37) else "fail"
    if kind == "units":  # a legal NIfTI in metres or micrometres: converted, not read as mm
        unit, scale = draw(st.sampled_from([("micron", 1000.0), ("meter", 0.001)]))
        def relabel(h):
            h.set_zooms(tuple(z * scale for z in h.get_zooms()))
            h.set_xyzt_units(unit, "msec")
        rewrite_nifti(image, header_fn=relabel)
        return [image], "ok"
    if kind == "dtype":
        dtype = draw(st.sampled_from([np.float64, np.int8, np.uint16, np.complex64, np.float32]))
        with np.errstate(all="ignore"):
            rewrite_nifti(target, data_fn=lambda a: a.astype(dtype))
        return [target], "fail" if dtype is np.complex64 else "any"
    if kind == "nan":
        bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        def poison(a):
            a = a.astype(np.float32)
            a.flat[draw(st.integers(0, a.size - 1))] = bad
            return a
        rewrite_nifti(target, data_fn=poison)
        return [target], "fail"
    if kind == "labels":
        value = draw(st.sampled_from([4, 5, 255, -1, 0.5]))
        def relabel_gt(a):
            a = a.astype(np.float32 if value == 0.5 else np.int16)
            a[a == draw(st.sampled_from([0, 1, 2, 3]))] = value
            return a
        rewrite_nifti(gt, data_fn=relabel_gt)
        return [gt], "fail"
    if kind == "shape":
        cut = draw(st.sampled_from([np.s_[:-1], np.s_[:, :-2], np.s_[:, :, :1], np.s_[:, :, :0]]))
        rewrite_nifti(target, data_fn=lambda a: a[cut])
        return [target, image, gt], "fail"
    if kind == "huge-dims":  # a header claiming a huge volume over the data that is there
        def grow(h):
            dims = list(h["dim"])
            dims[1] = dims[2] = draw(st.sampled_from([30000, 32767]))  # NIfTI-1 dims are int16
            h["dim"] = dims
        img = nib.load(target)
        new = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header.copy())
        grow(new.header)
        target.write_bytes(gzip.compress(new.header.binaryblock + b"\0" * 4 + np.asanyarray(img.dataobj).tobytes("F")))
        return [target], "fail"
    slope = draw(st.sampled_from([np.nan, np.inf, 0.0, 1e30, -1.0]))  # "scale": scl_slope (offset 112) of the image
    data = bytearray(gzip.decompress(image.read_bytes()))
    data[112:116] = struct.pack("<f", slope)
    image.write_bytes(gzip.compress(bytes(data)))
    return [image], "any"


# ----------------------------------------------------------------------------------------------- SLiver07
def mhd_fields(path: Path) -> list[tuple[str, str]]:
    return [tuple(p.strip() for p in line.split("=", 1)) for line in path.read_text().splitlines() if "=" in line]


def write_fields(path: Path, fields: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{k} = {v}\n" for k, v in fields))


def set_field(path: Path, key: str, value: str | None) -> None:
    fields = [(k, v) for k, v in mhd_fields(path) if k != key]
    if value is not None:  # ElementDataFile stays last, as MetaIO requires
        fields.insert(len(fields) - 1 if key != "ElementDataFile" else len(fields), (key, value))
    write_fields(path, fields)


def compress(mhd: Path, *, level: int = 6, mangle: Callable[[bytes], bytes] = lambda b: b) -> Path:
    raw = mhd.with_suffix(".raw")
    zraw = mhd.with_suffix(".zraw")
    zraw.write_bytes(mangle(zlib.compress(raw.read_bytes(), level)))
    raw.unlink()
    set_field(mhd, "CompressedData", "True")
    set_field(mhd, "ElementDataFile", zraw.name)
    return zraw


def sliver_damage(raw: Path, draw, outside: Path) -> tuple[list[Path], str]:
    number = draw(st.sampled_from(sorted(p.stem[-3:] for p in raw.glob("liver-seg*.mhd"))))
    role = draw(st.sampled_from(["orig", "seg"]))
    mhd = raw / f"liver-{role}{number}.mhd"
    data = mhd.with_suffix(".raw")
    both = [mhd, data, raw / f"liver-orig{number}.mhd", raw / f"liver-seg{number}.mhd"]
    kind = draw(st.sampled_from(["generic", "field", "header-bytes", "raw-bytes", "compressed", "zraw-damage",
                                 "fake-compressed", "outside", "noisy-seg", "seg-255", "float-nan", "msb"]))
    if kind == "generic":
        return both, generic(draw(st.sampled_from([mhd, data])), draw)
    if kind == "field":
        key, values = draw(st.sampled_from([
            ("DimSize", ["64 64", "64 64 0", "-64 64 3", "a b c", "65000 65000 65000", "63 64 10", "64 64 1"]),
            ("ElementType", ["MET_RGB", "MET_DOUBLE", "MET_CHAR", "MET_USHORT", "junk"]),
            ("ElementSpacing", ["0 0 0", "-1 1 1", "nan 1 1", "1 1", "x y z", "inf 1 1"]),
            ("NDims", ["2", "4", "three"]),
            ("ElementNumberOfChannels", ["abc", "3", "1"]),
            ("HeaderSize", ["abc", "-5", "10", "0"]),
            ("BinaryData", ["False"]),
            ("Offset", ["nan 0 0", "a b c"]),
            ("CompressedDataSize", ["12"]),
            ("ElementDataFile", ["LOCAL", "missing.raw", "liver-%03d.raw 1 3 1"]),
        ]))
        value = draw(st.sampled_from(values))
        set_field(mhd, key, value)
        ok = (key, value) in {("ElementNumberOfChannels", "1"), ("HeaderSize", "0"), ("CompressedDataSize", "12")}
        return both, "ok" if ok else "any" if (key, value) == ("ElementType", "MET_CHAR") else "fail"
    if kind == "header-bytes":
        flip_bytes(mhd, draw)
        return both, "any"
    if kind == "raw-bytes":  # voxel values change, sizes do not: a valid file with other values
        flip_bytes(data, draw)
        return both, "any"
    if kind == "compressed":  # a valid .mhd/.zraw pair
        compress(mhd, level=draw(st.integers(1, 9)))
        return both, "ok"
    if kind == "zraw-damage":
        how = draw(st.sampled_from(["truncate", "trailing", "dimsize"]))
        if how == "dimsize":
            zraw = compress(mhd)
            dims = dict(mhd_fields(mhd))["DimSize"].split()
            set_field(mhd, "DimSize", f"{dims[0]} {dims[1]} {int(dims[2]) - 1}")
        else:
            cut = draw(st.integers(1, 50))
            zraw = compress(mhd, mangle=(lambda b: b[:-cut]) if how == "truncate" else (lambda b: b + b"junk"))
        return [zraw, mhd, *both], "fail"
    if kind == "fake-compressed":  # says compressed, payload is the plain bytes
        set_field(mhd, "CompressedData", "True")
        return both, "fail"
    if kind == "outside":  # ElementDataFile leaving the folder, to a file that exists there
        target = outside / f"{draw(st.integers(0, 10**6))}.raw"
        shutil.copy(data, target)
        name = draw(st.sampled_from([str(target), os.path.relpath(target, raw)]))
        set_field(mhd, "ElementDataFile", name)
        return [mhd], "fail"
    seg_raw, orig_raw = raw / f"liver-seg{number}.raw", raw / f"liver-orig{number}.raw"
    if kind in ("noisy-seg", "seg-255"):
        seg = np.fromfile(seg_raw, np.uint8)
        if kind == "seg-255":
            seg = seg * np.uint8(255)
        else:
            rng = np.random.default_rng(draw(st.integers(0, 1000)))
            seg = np.where(seg > 0, 1, rng.integers(0, draw(st.integers(3, 7)), seg.size)).astype(np.uint8)
        seg.tofile(seg_raw)
        return [seg_raw], "ok" if kind == "seg-255" else "fail"
    if kind == "float-nan":
        image = np.fromfile(orig_raw, "<i2").astype(np.float32)
        image[draw(st.integers(0, image.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        image.tofile(orig_raw)
        set_field(raw / f"liver-orig{number}.mhd", "ElementType", "MET_FLOAT")
        return [orig_raw], "fail"
    set_field(mhd, "BinaryDataByteOrderMSB", "True")  # "msb": big-endian voxels (HU garbage, uchar unchanged)
    return both, "any"


# ----------------------------------------------------------------------------------------------- IDRiD
def idrid_pair(raw: Path, draw) -> tuple[Path, Path]:
    image = draw(st.sampled_from(sorted(raw.rglob("IDRiD_*.jpg"))))
    subset = image.parent.name
    mask = raw / "A. Segmentation" / "2. All Segmentation Groundtruths" / subset / "5. Optic Disc" / f"{image.stem}_OD.tif"
    return image, mask


def jpeg_claiming(path: Path, width: int, height: int) -> None:
    """Rewrite the frame header (SOF0) of a JPEG to claim ``width`` x ``height`` pixels."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\xc0")
    data[at + 5: at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


def idrid_damage(raw: Path, draw) -> tuple[list[Path], str]:
    image, mask = idrid_pair(raw, draw)
    kind = draw(st.sampled_from(["generic", "jpeg-bytes", "huge-header", "noisy-mask", "third-label", "mask-01",
                                 "mask-L", "mask-size", "image-gone", "mask-gone", "png-as-jpg", "empty-mask",
                                 "float-mask"]))
    if kind == "generic":  # a deleted image is reported through the mask that is left
        return [image, mask], generic(draw(st.sampled_from([image, mask])), draw)
    if kind == "jpeg-bytes":
        flip_bytes(image, draw, 0, 400)
        return [image], "any"
    if kind == "huge-header":
        side = draw(st.sampled_from([65000, 30000, 20000]))
        jpeg_claiming(image, side, side)
        return [image], "fail"
    if kind == "image-gone":
        image.unlink()
        return [mask], "fail"
    if kind == "mask-gone":
        mask.unlink()
        return [image], "fail"
    if kind == "png-as-jpg":  # content decides, not the extension: a PNG named .jpg is still that image
        with Image.open(image) as im:
            im.save(image, format="PNG")
        return [image], "ok"
    with Image.open(mask) as m:
        red = np.asarray(m.convert("RGB"))[..., 0]
    if kind == "noisy-mask":
        rng = np.random.default_rng(draw(st.integers(0, 1000)))
        red = np.where(red > 0, 255, rng.integers(0, 7, red.shape)).astype(np.uint8)
        rgb = np.stack([red, np.zeros_like(red), np.zeros_like(red)], -1)
        Image.fromarray(rgb).save(mask)
        return [mask], "fail"
    if kind == "third-label":
        red = red.copy()
        red[: red.shape[0] // 8] = 128
        Image.fromarray(red).save(mask)
        return [mask], "fail"
    if kind == "mask-01":
        Image.fromarray((red > 0).astype(np.uint8)).save(mask)
        return [mask], "ok"
    if kind == "mask-L":
        Image.fromarray(red).convert("1" if draw(st.booleans()) else "L").save(mask)
        return [mask], "ok"
    if kind == "mask-size":
        Image.fromarray(red[:-1]).save(mask)
        return [mask], "fail"
    if kind == "empty-mask":
        Image.fromarray(np.zeros_like(red)).save(mask)
        return [mask], "fail"
    Image.fromarray((red > 0).astype(np.float32) * 0.5, mode="F").save(mask)  # "float-mask": 0 / 0.5
    return [mask], "fail"


# ----------------------------------------------------------------------------------------------- the properties
def fuzz(dataset: str, raws, capfd, data, damage) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = copy(raws[dataset], work)
        targets, expect = damage(raw, data.draw)
        event(f"expected {expect}, got {check_outcome(dataset, raw, work, capfd, targets, expect)}")


@FUZZ
@given(data=st.data())
def test_fuzz_acdc(raws, capfd, data):
    fuzz("acdc", raws, capfd, data, acdc_damage)


@FUZZ
@given(data=st.data())
def test_fuzz_sliver07(raws, capfd, data, tmp_path_factory):
    outside = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    fuzz("sliver07", raws, capfd, data, lambda raw, draw: sliver_damage(raw, draw, outside))


@FUZZ
@given(data=st.data())
def test_fuzz_idrid(raws, capfd, data):
    fuzz("idrid", raws, capfd, data, idrid_damage)


# ----------------------------------------------------------------------------------------------- the user's cases, pinned
def prepared_arrays(dataset: str, raw: Path, out: Path) -> tuple[np.ndarray, np.ndarray]:
    ps = load_prepared(prepare(dataset, raw, out, size=int(SIZE), progress=False))
    return np.asarray(ps.images, np.float32), np.asarray(ps.masks)


def test_nifti_in_micrometres_is_converted_not_resampled_a_thousandfold(raws, tmp_path):
    raw = copy(raws["acdc"], tmp_path)
    before = prepared_arrays("acdc", raw, tmp_path / "mm")
    for image in raw.rglob("*_frame??.nii.gz"):  # images and ground truths alike, in µm
        def micrometres(h):
            h.set_zooms(tuple(z * 1000 for z in h.get_zooms()))
            h.set_xyzt_units("micron", "msec")
        rewrite_nifti(image, header_fn=micrometres)
    after = prepared_arrays("acdc", raw, tmp_path / "um")
    np.testing.assert_allclose(after[0], before[0], atol=2e-3)
    assert np.array_equal(after[1], before[1])


def test_spacing_that_would_need_too_much_memory_fails_before_allocating(raws, tmp_path, monkeypatch):
    raw = copy(raws["acdc"], tmp_path)
    image = sorted(raw.rglob("*_frame01.nii.gz"))[0]
    rewrite_nifti(image, header_fn=lambda h: h.set_zooms(tuple(z * 30 for z in h.get_zooms()[:2]) + (8.0,)))
    monkeypatch.setenv("MEDGAN_MAX_ARRAY_GB", "0.01")  # 10 MiB: reading takes 2.5 MiB, the 30x resampled volume ~55
    with pytest.raises(InputTooLargeError, match=r"resampling to .* would need .* MEDGAN_MAX_ARRAY_GB") as info:
        prepare("acdc", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(image) in str(info.value) and not (tmp_path / "out").exists()
    monkeypatch.setenv("MEDGAN_MAX_ARRAY_GB", "8")
    prepare("acdc", raw, tmp_path / "out", size=int(SIZE), progress=False)  # a legal file under a higher limit
    monkeypatch.setenv("MEDGAN_MAX_ARRAY_GB", "lots")
    with pytest.raises(ConfigError, match="MEDGAN_MAX_ARRAY_GB='lots'"):
        prepare("acdc", raw, tmp_path / "out2", size=int(SIZE), progress=False)


@pytest.mark.parametrize("side,limit,error", [(65000, None, RawFormatError), (9000, "0.5", InputTooLargeError)])
def test_jpeg_header_claiming_a_huge_image(raws, tmp_path, monkeypatch, side, limit, error):
    raw = copy(raws["idrid"], tmp_path)
    image = sorted(raw.rglob("IDRiD_*.jpg"))[0]
    jpeg_claiming(image, side, side)
    if limit:  # 9000² RGB passes Pillow's bomb guard (89 Mpx); our limit stops it before decoding
        monkeypatch.setenv("MEDGAN_MAX_ARRAY_GB", limit)
    with pytest.raises(error, match="too large|would need") as info:
        prepare("idrid", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(info.value).startswith(str(image)) and "\n" not in str(info.value)


def test_idrid_mask_without_its_image_is_an_error(raws, tmp_path):
    raw = copy(raws["idrid"], tmp_path)
    image, mask = sorted(raw.rglob("IDRiD_*.jpg"))[0], sorted(raw.rglob("IDRiD_*_OD.tif"))[0]
    image.unlink()
    with pytest.raises(RawFormatError, match="optic-disc mask without its image") as info:
        prepare("idrid", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(info.value).startswith(str(mask))


def test_noisy_masks_are_refused_with_their_values(raws, tmp_path):
    raw = copy(raws["idrid"], tmp_path)
    mask = sorted(raw.rglob("IDRiD_*_OD.tif"))[0]
    with Image.open(mask) as m:
        red = np.asarray(m.convert("RGB"))[..., 0]
    noisy = np.where(red > 0, 255, np.arange(red.size).reshape(red.shape) % 7).astype(np.uint8)
    Image.fromarray(noisy).save(mask)
    with pytest.raises(RawFormatError, match=r"values \[1, 2, 3, 4, 5, 6\] are outside the label set") as info:
        prepare("idrid", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(info.value).startswith(str(mask))


def test_compressed_metaimage_is_size_checked_and_reads_like_the_plain_one(raws, tmp_path):
    raw = copy(raws["sliver07"], tmp_path)
    before = prepared_arrays("sliver07", raw, tmp_path / "plain")
    for mhd in raw.glob("liver-*.mhd"):
        compress(mhd)
    after = prepared_arrays("sliver07", raw, tmp_path / "zraw")
    assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1])
    mhd = raw / "liver-seg001.mhd"
    nx, ny, nz = dict(mhd_fields(mhd))["DimSize"].split()
    set_field(mhd, "DimSize", f"{nx} {ny} {int(nz) - 1}")
    set_field(raw / "liver-orig001.mhd", "DimSize", f"{nx} {ny} {int(nz) - 1}")
    with pytest.raises(RawFormatError, match=r"too large: inflates to more than \d+ bytes"):
        prepare("sliver07", raw, tmp_path / "bad", size=int(SIZE), progress=False)


def test_compressed_flag_on_plain_data_is_refused(raws, tmp_path):
    raw = copy(raws["sliver07"], tmp_path)
    mhd = raw / "liver-orig002.mhd"
    set_field(mhd, "CompressedData", "True")
    with pytest.raises(RawFormatError, match="CompressedData = True, but this is not a zlib/gzip stream") as info:
        prepare("sliver07", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(info.value).startswith(str(raw / "liver-orig002.raw"))


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_element_data_file_may_not_leave_the_raw_folder(raws, tmp_path, where):
    raw = copy(raws["sliver07"], tmp_path)
    (tmp_path / "outside").mkdir()
    stolen = tmp_path / "outside" / "liver-orig001.raw"
    shutil.move(raw / "liver-orig001.raw", stolen)  # a readable, valid file: only the path check refuses it
    name = "../outside/liver-orig001.raw" if where == "relative" else str(stolen)
    set_field(raw / "liver-orig001.mhd", "ElementDataFile", name)
    with pytest.raises(RawFormatError, match="ElementDataFile .* points outside its folder") as info:
        prepare("sliver07", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(info.value).startswith(str(raw / "liver-orig001.mhd"))


def test_image_linked_to_itself_is_named(raws, tmp_path):
    raw = copy(raws["idrid"], tmp_path)
    image = sorted(raw.rglob("IDRiD_*.jpg"))[1]
    self_link(image)
    with pytest.raises(RawFormatError, match="broken or looping symbolic link") as info:
        prepare("idrid", raw, tmp_path / "out", size=int(SIZE), progress=False)
    assert str(info.value).startswith(str(image))


def test_simpleitk_output_is_folded_into_one_line(raws, tmp_path, capfd):
    """A file cut after our header check: ITK's own two-line stderr report becomes part of the one error line."""
    raw = copy(raws["sliver07"], tmp_path)
    header = read_mhd_header(raw / "liver-orig001.mhd", ("MET_SHORT",))
    truncate(header.data_file, lambda strategy: 1000)  # bypass the size check: hand ITK the damaged file directly
    capfd.readouterr()
    with pytest.raises(RawFormatError, match="SimpleITK cannot read it .*data not read completely") as info:
        read_mhd(header)
    assert capfd.readouterr().err == "" and "\n" not in str(info.value)
