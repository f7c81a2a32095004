"""medgan.data.subset: a filtered prepared set keeps exactly the chosen slices, in the standard format, and
records its filter and source; typos and bad outputs are one-line user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgan.cli import main
from medgan.data.prepared import SPLITS, load_prepared
from medgan.data.subset import parse_where, subset_prepared
from medgan.errors import ConfigError, OutputExistsError, UserError


def test_subset_keeps_exactly_the_matching_slices(acdc_prepared, tmp_path):
    src = load_prepared(acdc_prepared)
    out = subset_prepared(acdc_prepared, tmp_path / "nor", {"group": ["NOR"]})
    keep = np.flatnonzero(np.asarray(src.extra["group"]) == "NOR")
    assert 0 < len(keep) < len(src) and len(out) == len(keep)
    np.testing.assert_array_equal(np.asarray(out.images), np.asarray(src.images[keep]))
    np.testing.assert_array_equal(np.asarray(out.masks), np.asarray(src.masks[keep]))
    np.testing.assert_array_equal(out.patients, src.patients[keep])
    np.testing.assert_array_equal(out.slices, src.slices[keep])
    for key in src.extra:
        np.testing.assert_array_equal(out.extra[key], np.asarray(src.extra[key])[keep])
    kept = set(src.patients[keep].tolist())
    for split in SPLITS:  # each split: the source's patients of that split that kept a slice, in order
        assert out.meta["splits"][split] == [p for p in src.meta["splits"][split] if p in kept]
        assert out.meta["counts"][split] == len(out.indices(split))
    assert (out.name, out.source, out.labels, out.meta["modality"]) == (src.name, src.source, src.labels, src.meta["modality"])
    record = out.meta["subset"]
    assert record["where"] == {"group": ["NOR"]}
    assert record["source_content_sha256"] == src.content_sha256 == out.meta["inputs_sha256"]
    assert record["n_slices"] == len(keep) and record["n_source_slices"] == len(src)
    assert out.content_sha256 != src.content_sha256


def test_keys_and_values_combine(acdc_prepared, tmp_path):
    src = load_prepared(acdc_prepared)
    group, phase = np.asarray(src.extra["group"]), np.asarray(src.extra["phase"])
    both = subset_prepared(acdc_prepared, tmp_path / "a", {"group": ["NOR", "DCM"], "phase": ["ED"]})
    assert len(both) == int((np.isin(group, ["NOR", "DCM"]) & (phase == "ED")).sum())
    assert set(both.extra["group"].tolist()) == {"NOR", "DCM"} and set(both.extra["phase"].tolist()) == {"ED"}
    one_patient = src.patients[0]
    by_patient = subset_prepared(acdc_prepared, tmp_path / "b", {"patient": [one_patient]})
    assert set(by_patient.patients.tolist()) == {one_patient}
    assert len(by_patient) == int((src.patients == one_patient).sum())


def test_parse_where():
    assert parse_where(["group=NOR,MINF", "phase=ED", "group=DCM"]) == {"group": ["NOR", "MINF", "DCM"], "phase": ["ED"]}
    for bad in ("group", "=NOR", "group="):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_where([bad])


def test_bad_filters_and_outputs(acdc_prepared, tmp_path):
    with pytest.raises(ConfigError, match=r"group=NORM: no slice .* \(values: DCM, HCM, MINF, NOR\)"):
        subset_prepared(acdc_prepared, tmp_path / "x", {"group": ["NORM"]})
    with pytest.raises(ConfigError, match="no per-slice array 'pathology'.*group, phase"):
        subset_prepared(acdc_prepared, tmp_path / "x", {"pathology": ["NOR"]})
    with pytest.raises(ConfigError, match="at least one filter"):
        subset_prepared(acdc_prepared, tmp_path / "x", {})
    with pytest.raises(UserError, match="keeps no slice"):  # each value exists, their AND does not
        src = load_prepared(acdc_prepared)
        other = next(p for p in src.patients if src.extra["group"][list(src.patients).index(p)] != "NOR")
        subset_prepared(acdc_prepared, tmp_path / "x", {"group": ["NOR"], "patient": [other]})
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match="source set itself"):
        subset_prepared(acdc_prepared, acdc_prepared, {"group": ["NOR"]})
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError):
        subset_prepared(acdc_prepared, tmp_path / "taken", {"group": ["NOR"]})
    assert len(subset_prepared(acdc_prepared, tmp_path / "taken", {"group": ["NOR"]}, overwrite=True)) > 0


def test_cli(acdc_prepared, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "subset", str(acdc_prepared), "--where", "group=NOR", "--where", "phase=ES",
                 "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["subset"]["where"] == {"group": ["NOR"], "phase": ["ES"]}
    assert main(["data", "subset", str(acdc_prepared), "--where", "group=XYZ", "--out", str(tmp_path / "bad")]) == 2
    assert "no slice" in capsys.readouterr().err
