"""benchmarks/bench_gpu.py (`make bench-gpu`): the GPU-readiness run's code paths, tiny, on CPU (--quick)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_one_json_and_one_table_for_every_model_size_and_mode(tmp_path):
    bench = _load()
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench-gpu.json").read_text())
    table = (tmp_path / "bench-gpu.md").read_text()
    assert res["quick"] and res["device"] == "cpu"
    assert [(e["model"], e["size"]) for e in res["train"]] == [(m, s) for m in bench.MODELS for s in bench.QUICK_SIZES]
    for e in res["train"]:
        assert "error" not in e, e.get("traceback")
        assert [r["mode"] for r in e["results"]] == ["fp32", "bf16"] and all(r["finite"] for r in e["results"])
        assert all(r["img_per_s"] > 0 and r["s_per_kimg"] > 0 for r in e["results"])
        assert f"| {e['model']} | {e['size']}² |" in table
    assert "loss.vgg_features=vgg19-random" in next(e for e in res["train"] if e["model"] == "spade")["overrides"]
    assert "error" not in res["fid"] and res["fid"]["abs_delta_fid"] < 1e-3 and "`medgan bench fid`" in table


def test_full_run_uses_the_paper_defaults_at_128_and_256():
    bench = _load()
    assert bench.SIZES == (128, 256) and bench.MODES == ("fp32", "bf16") and bench.MODELS == ("dcgan", "stylegan2", "spade")
    assert bench.OVERRIDES == {"dcgan": [], "stylegan2": [], "spade": ["loss.vgg_features=vgg19-random"]}
    assert bench.paper_batch("stylegan2") == 64


def test_missing_dependency_is_installed_from_the_wheelhouse_only(tmp_path, monkeypatch):
    bench = _load()
    calls = []
    monkeypatch.setattr(bench, "NEEDED", {"medgan_no_such_module": "no-such-dist", "json": "json"})
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, check: calls.append(cmd))
    with pytest.raises(SystemExit, match="make wheelhouse"):
        bench.ensure_deps(tmp_path / "absent")
    assert bench.ensure_deps(tmp_path) == ["no-such-dist"]
    assert "--no-index" in calls[0] and "--no-deps" in calls[0] and calls[0][-1] == "no-such-dist"
