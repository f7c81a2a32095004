"""Every bad input through the CLI ends in exactly one line, ``medgan <command>: error: <what>``, and exit 2;
an internal bug is not dressed up as a user error (it keeps its traceback)."""

from __future__ import annotations

import pytest

from medgan import cli
from medgan.training import commands as train_commands


def _bad_inputs(tmp_path, acdc_raw, acdc_prepared):
    taken = tmp_path / "taken"
    (taken / "x").mkdir(parents=True)
    missing = tmp_path / "missing"
    return [
        (["data", "prepare", "acdc", "--raw", str(missing), "--out", str(tmp_path / "p")], "raw dataset folder does not exist"),
        (["data", "prepare", "acdc", "--raw", str(acdc_raw), "--out", str(taken)], "already exists"),
        (["data", "prepare", "acdc", "--raw", str(acdc_raw), "--out", str(tmp_path / "p"), "--size", "4"], "too small"),
        (["data", "phantom", "acdc", "--out", str(taken)], "not empty"),
        (["data", "info", str(missing)], str(missing)),
        (["train", "--out", str(tmp_path / "r")], "--data PREPARED_DIR is required"),
        (["train", "--data", str(acdc_prepared), "--out", str(tmp_path / "r"), "--gan", "nope"], "unknown gan 'nope'"),
        (["train", "--data", str(acdc_prepared), "--out", str(tmp_path / "r"), "--set", "bogus=1"],
         "unknown config field 'bogus'"),
        (["train", "--data", str(acdc_prepared), "--out", str(tmp_path / "r"), "--set", "lr=fast"], "lr='fast' is not a valid float"),
        (["train", "--data", str(acdc_prepared), "--out", str(taken)], "already exists; pass --resume"),
        (["train", "--out", str(missing), "--resume"], "cannot resume"),
        (["train", "--data", str(missing), "--out", str(tmp_path / "r")], str(missing)),
        (["generate", str(missing), "--out", str(tmp_path / "g")], "no checkpoint 'last'"),
        (["fid", str(acdc_prepared), str(missing)], str(missing)),
        (["segment", "--train", str(missing), "--test", str(acdc_prepared)], str(missing)),
        (["bench", "train", "--modes", "warp", "--size", "16"], "unknown bench mode"),
    ]


def test_every_bad_input_is_one_line_naming_the_problem(tmp_path, acdc_raw, acdc_prepared, capsys):
    for argv, phrase in _bad_inputs(tmp_path, acdc_raw, acdc_prepared):
        rc = cli.main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert rc == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith(f"medgan {argv[0]}: error: "), (argv, err)
        assert phrase in lines[0], (argv, lines[0])
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize("bug", [KeyError("model"), FileNotFoundError("/internal/cache"), ValueError("shape")])
def test_an_internal_error_keeps_its_traceback(tmp_path, acdc_prepared, monkeypatch, bug):
    def broken(**kw):
        raise bug

    monkeypatch.setattr(train_commands, "train", broken)
    with pytest.raises(type(bug)):
        cli.main(["train", "--data", str(acdc_prepared), "--out", str(tmp_path / "r")])


def test_traceback_flag_reraises_user_errors(tmp_path):
    from medgan.errors import UserError

    with pytest.raises(UserError, match="--data PREPARED_DIR is required"):
        cli.main(["--traceback", "train", "--out", str(tmp_path / "r")])
