"""``medgan data phantom|prepare|info`` through ``medgan.cli.main`` and once through a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from medgan.cli import main
from medgan.data.prepared import load_prepared


def test_phantom_prepare_info(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    assert main(["data", "phantom", "idrid", "--out", str(raw), "--patients", "3", "--seed", "2", "--quiet"]) == 0
    assert (raw / "PHANTOM.txt").is_file()
    assert len(list(raw.rglob("IDRiD_*.jpg"))) == 3
    assert main(["data", "phantom", "idrid", "--out", str(raw), "--patients", "3", "--quiet"]) == 2  # exists
    assert main(["data", "prepare", "idrid", "--raw", str(raw), "--out", str(out), "--size", "24", "--seed", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "idrid" in printed and "source: phantom" in printed and "3 x 3 x 24 x 24" in printed
    ps = load_prepared(out)
    assert ps.image_size == 24 and ps.meta["seed"] == 1 and len(ps) == 3

    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mask labels present: [0, 1]" in text and "optic disc" in text
    assert main(["data", "info", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["num_slices"] == 3 and meta["splits"] == ps.meta["splits"] and meta["image_size"] == 24


def test_prepare_overwrite_and_val_fraction(acdc_raw, tmp_path, capsys):
    out = tmp_path / "p"
    args = ["data", "prepare", "acdc", "--raw", str(acdc_raw), "--out", str(out), "--size", "16", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--val-fraction", "0.5"]) == 0
    splits = load_prepared(out).meta["splits"]
    assert len(splits["val"]) == len(splits["train"]) == 2  # 4 training patients, half held out


def test_bad_options_are_user_errors(acdc_raw, tmp_path, capsys):
    base = ["data", "prepare", "acdc", "--raw", str(acdc_raw), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(base + ["--size", "4"]) == 2
    assert main(base + ["--val-fraction", "1.0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["medgan data: error: --size 4 is too small (use >= 8)",
                   "medgan data: error: --val-fraction must be in [0, 1), got 1.0"]
    assert not (tmp_path / "o").exists()


def test_info_on_a_missing_folder(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_entry_point_in_a_subprocess(tmp_path):
    """The real process exit code and stderr (one subprocess: importing every command costs seconds)."""
    bad = subprocess.run([sys.executable, "-m", "medgan.cli", "data", "prepare", "sliver07", "--raw", str(tmp_path),
                          "--out", str(tmp_path / "o"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"medgan data: error: {tmp_path}: no SLiver07 cases found "
                                               "(expected liver-origNNN.mhd + liver-segNNN.mhd with their .raw files)"]
    assert not (tmp_path / "o").exists()
