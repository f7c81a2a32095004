"""The trainer finds the built-in FID/KID hooks by name (they live in medgan.metrics, which the trainer never imports)."""

from __future__ import annotations

import json
import math

import pytest

from medgan.training import make_config, run_training


@pytest.mark.parametrize("metric", ["fid", "kid"])
def test_builtin_metric_hook_runs_inside_training(tiny_overrides, make_discs, tmp_path, metric, monkeypatch):
    monkeypatch.setenv("MEDGAN_CACHE", str(tmp_path / "cache"))
    data = make_discs(tmp_path / "discs")
    cfg = make_config(data=data, out=tmp_path / "run", gan="hinge", kimg=0.016, batch=8,
                      overrides=tiny_overrides + ["tick_kimg=0.016", "snapshot_kimg=0.016", f"metrics={metric}",
                                        "metric_features=inception-random", "metric_n=6"])
    run = run_training(cfg, progress=False)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    records = [json.loads(line) for line in (run / f"metric-{metric}.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r["value"]) for r in records)
    assert "inception-random" in json.dumps(records[-1])  # the substitute's name is in the result
    assert (run / f"checkpoint-best-{metric}.pt").is_file()


@pytest.mark.parametrize("rampup", [0.05, 0.0])
def test_ema_rampup_lets_short_runs_follow_G(tiny_overrides, make_discs, tmp_path, rampup):
    """With the StyleGAN2-ADA ramp-up the first steps' half-life is 5 % of the images seen, so after a few
    steps G_ema is (nearly) G; without it, a 10-kimg half-life leaves G_ema (nearly) at its initialisation."""
    from medgan.training import load_checkpoint

    data = make_discs(tmp_path / "discs")
    cfg = make_config(data=data, out=tmp_path / "run", gan="hinge", kimg=0.024, batch=8,
                      overrides=tiny_overrides + ["tick_kimg=0.024", "snapshot_kimg=0.024", "ema_kimg=10", f"ema_rampup={rampup}"])
    state = load_checkpoint(run_training(cfg, progress=False) / "checkpoint-last.pt")
    G, G_ema = state["G"], state["G_ema"]
    keys = [k for k, v in G.items() if v.is_floating_point() and "weight" in k]
    gap = max(float((G[k] - G_ema[k]).abs().max() / (G[k].abs().max() + 1e-12)) for k in keys)
    if rampup:
        assert gap < 0.01
    else:
        assert gap > 0.01
