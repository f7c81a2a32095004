"""``medgan bench train`` and the trainer's torch.compile fallback (CPU, tiny)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from medgan.cli import main as cli_main
from medgan.train_bench import bench_train, format_table
from medgan.training import load_checkpoint, make_config, run_status, run_training


def test_bench_train_measures_each_mode_against_fp32(tiny_overrides):
    res = bench_train("dcgan", 16, 4, steps=2, warmup=1, device="cpu", modes=("fp32", "bf16"), overrides=tiny_overrides, isolate=False)
    assert [r["mode"] for r in res["results"]] == ["fp32", "bf16"]
    fp32, bf16 = res["results"]
    assert fp32["speed_vs_fp32"] == 1.0 and bf16["speed_vs_fp32"] == pytest.approx(bf16["img_per_s"] / fp32["img_per_s"])
    for r in res["results"]:
        assert r["finite"] and r["img_per_s"] > 0 and r["s_per_kimg"] == pytest.approx(1000 / r["img_per_s"])
    assert (fp32["amp"], bf16["amp"]) == ("off", "bf16")
    table = format_table(res)
    assert res["device_name"] in table and "s/kimg" in table and "bf16" in table


def test_bench_counts_critic_steps_as_images(tiny_overrides):
    res = bench_train("dcgan", 16, 4, gan="wgan", steps=1, warmup=1, device="cpu", modes=("fp32",), overrides=tiny_overrides, isolate=False)
    r = res["results"][0]
    assert r["n_critic"] == 5
    assert r["img_per_s"] == pytest.approx(5 * 4 / (r["step_ms"] / 1000))


def test_bench_cli_writes_json(tiny_overrides, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "train", "--model", "dcgan", "--size", "16", "--batch", "4", "--steps", "1", "--device", "cpu",
                     "--modes", "fp32", "--no-isolate", "--set", *tiny_overrides, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["size"] == 16 and res["results"][0]["mode"] == "fp32" and res["isolated"] is False
    assert "absolute numbers measured on: cpu" in capsys.readouterr().out
    assert cli_main(["bench", "train", "--model", "nosuchmodel", "--size", "16"]) == 2


def test_failed_compile_falls_back_to_the_same_eager_run(assert_same_state, tiny_overrides, make_discs, tmp_path, monkeypatch):
    data = make_discs(tmp_path / "discs")
    sets = [*tiny_overrides, "deterministic=true"]
    eager = tmp_path / "eager"
    run_training(make_config(data=data, out=eager, kimg=0.024, batch=8, overrides=sets), progress=False)

    class Broken(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.inner = module

        def forward(self, *args, **kwargs):
            raise RuntimeError("inductor exploded")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Broken(module))
    fallback = tmp_path / "fallback"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_training(make_config(data=data, out=fallback, kimg=0.024, batch=8, overrides=[*sets, "compile=true"]), progress=False)
    assert any("inductor exploded" in str(w.message) and "eager" in str(w.message) for w in caught)
    assert run_status(fallback)["status"] == "finished"
    a, b = load_checkpoint(eager / "checkpoint-last.pt"), load_checkpoint(fallback / "checkpoint-last.pt")
    assert_same_state(a, b)  # the failed step was rewound


@pytest.mark.slow
def test_isolated_modes_run_in_their_own_process(tiny_overrides):
    res = bench_train("dcgan", 16, 4, steps=1, warmup=1, device="cpu", modes=("fp32",), overrides=tiny_overrides, isolate=True)
    r = res["results"][0]
    assert res["isolated"] and r["finite"] and r["mem_kind"] == "cpu_peak_rss_increase" and r["peak_mem_mb"] >= 0
