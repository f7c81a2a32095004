"""The trainer finds the built-in FID/KID hooks by name (they live in medgan.metrics, which the trainer never imports)."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_support import TINY, make_discs

from medgan.train import make_config, run_training

torch.set_num_threads(1)


@pytest.mark.parametrize("metric", ["fid", "kid"])
def test_builtin_metric_hook_runs_inside_training(tmp_path, metric, monkeypatch):
    monkeypatch.setenv("MEDGAN_CACHE", str(tmp_path / "cache"))
    data = make_discs(tmp_path / "discs")
    cfg = make_config(data=data, out=tmp_path / "run", gan="hinge", kimg=0.016, batch=8,
                      overrides=TINY + ["tick_kimg=0.016", "snapshot_kimg=0.016", f"metrics={metric}",
                                        "metric_features=inception-random", "metric_n=6"])
    run = run_training(cfg, progress=False)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    records = [json.loads(line) for line in (run / f"metric-{metric}.jsonl").read_text().splitlines()]
    assert records and all(r["value"] == r["value"] for r in records)  # finite, not NaN
    assert "inception-random" in json.dumps(records[-1])  # the substitute's name is in the result
    assert (run / f"checkpoint-best-{metric}.pt").is_file()
