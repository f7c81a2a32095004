"""``medgan bench train``: throughput and peak memory of the real training step, fp32 vs bf16 vs compiled.

Runs the trainer's own ``Trainer.train_step`` (D step(s) + G step + EMA, everything the loop does per
iteration) on synthetic data that already sits on the device, in several precision modes one after the
other in the same process, and prints ratios against fp32. Absolute numbers are printed together with
the device's name, since they mean nothing without it.

Modes: ``fp32`` (no autocast), ``bf16`` (bf16 autocast, channels_last on CUDA), ``compiled`` (bf16 +
``torch.compile`` of G and D; the trainer falls back to eager with a warning when compilation fails, and
the table says so). img/s counts real images shown to D (``batch * n_critic`` per iteration), the same
unit as the trainer's kimg; s/kimg is its inverse (the figure StyleGAN2-ADA reports per GPU).

Peak memory: CUDA ``max_memory_allocated`` from the start of each mode (model, optimiser, activations);
on CPU the rise of the process' peak resident set over its size before the mode (``/proc``).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medgan.config import TrainConfig, apply_overrides, replace
from medgan.data.prepared import to_joint
from medgan.errors import UnknownNameError
from medgan.io import write_json
from medgan.models import GANS, MODELS
from medgan.runtime import device_name, peak_memory_mb, peak_memory_reset, resolve_device, rss_mb
from medgan.training import Trainer, apply_gan

MODES = {
    # name -> (amp, compile)
    "fp32": ("off", False),
    "bf16": ("bf16", False),
    "compiled": ("bf16", True),
}


def _synthetic_joint(n: int, channels: int, num_labels: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    """``[n, C + K, size, size]``: uniform images in [-1, 1] and a random (blocky) one-hot mask."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, channels, size, size, generator=g) * 2 - 1
    coarse = torch.randint(num_labels, (n, 1, max(1, size // 8), max(1, size // 8)), generator=g).float()
    mask = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return to_joint(image, mask, num_labels).to(device, dtype)


def _bench_config(model: str, gan: str, size: int, batch: int, mode: str, device: str, overrides: Sequence[str]) -> TrainConfig:
    amp, compile_ = MODES[mode]
    cfg = apply_gan(TrainConfig(batch=batch, device=device, grid=0), gan)
    if cfg.model.name != model:
        cfg = replace(cfg, model=replace(cfg.model, name=model))
    cfg = apply_overrides(cfg, {"amp": amp, "compile": compile_, "resolution": size})
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_mode(mode: str, *, model: str, gan: str, size: int, batch: int, device: str, channels: int, num_labels: int,
              overrides: Sequence[str], steps: int, warmup: int, seed: int) -> dict[str, Any]:
    """Build a trainer for one mode, warm it up, time ``steps`` iterations."""
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    cfg = _bench_config(model, gan, size, batch, mode, device, overrides)
    joint = _synthetic_joint(max(2 * batch, 8), channels, num_labels, size, dev, seed)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    base_rss = rss_mb()
    peak_memory_reset(dev)
    torch.manual_seed(seed)
    trainer = Trainer(cfg, joint, channels=channels, num_labels=num_labels, device=dev)
    t0 = time.perf_counter()
    for _ in range(max(1, warmup)):
        trainer.train_step()
    _sync(dev)
    warmup_s = time.perf_counter() - t0
    compiled = bool(cfg.compile) and isinstance(trainer.loss.G, torch._dynamo.eval_frame.OptimizedModule)
    t0 = time.perf_counter()
    for _ in range(steps):
        stats = trainer.train_step()
    _sync(dev)
    dt = time.perf_counter() - t0
    peak, kind = peak_memory_mb(dev)
    if not cuda:
        peak = max(0.0, peak - base_rss)
        kind = "cpu_peak_rss_increase"
    img_s = trainer.images_per_step * steps / dt
    finite = all(bool(torch.isfinite(v).all()) for v in stats.values())
    return {
        "mode": mode, "amp": cfg.amp, "compile_requested": cfg.compile, "compiled": compiled,
        "img_per_s": img_s, "s_per_kimg": 1000.0 / img_s, "step_ms": 1000 * dt / steps,
        "peak_mem_mb": peak, "mem_kind": kind, "warmup_s": warmup_s, "finite": finite,
        "n_critic": trainer.loss.n_critic,
    }


def _run_mode_isolated(mode: str, **kw) -> dict[str, Any]:
    """``_run_mode`` in a fresh interpreter, so the CPU peak-RSS rise of one mode is not hidden by another's."""
    import subprocess
    import sys

    code = ("import json, sys; from medgan.train_bench import _run_mode; "
            "kw = json.loads(sys.argv[1]); print('@@' + json.dumps(_run_mode(kw.pop('mode'), **kw)))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps({"mode": mode, **kw, "overrides": list(kw["overrides"])})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench mode {mode} failed:\n{proc.stderr[-2000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


def bench_train(
    model: str = "dcgan",
    size: int = 128,
    batch: int = 64,
    *,
    gan: str | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    device: str = "auto",
    channels: int = 1,
    num_labels: int = 4,
    modes: Sequence[str] = ("fp32", "bf16", "compiled"),
    overrides: Sequence[str] = (),
    seed: int = 0,
    isolate: bool | None = None,
) -> dict[str, Any]:
    """Time ``steps`` training iterations per mode after ``warmup`` ones; return a JSON-able dict.

    ``isolate`` (default: on CPU) runs each mode in its own process so peak-RSS figures are comparable.
    """
    MODELS[model]  # unknown model -> KeyError listing the known ones
    gan = gan or (model if model in GANS else "dcgan")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    steps = steps or (50 if cuda else 3)
    warmup = warmup if warmup is not None else (10 if cuda else 1)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise UnknownNameError(f"unknown bench mode(s) {unknown}; known: {', '.join(MODES)}")
    isolate = (not cuda) if isolate is None else isolate
    kw = dict(model=model, gan=gan, size=size, batch=batch, device=str(dev), channels=channels, num_labels=num_labels,
              overrides=list(overrides), steps=steps, warmup=warmup, seed=seed)
    results = [(_run_mode_isolated if isolate else _run_mode)(mode, **kw) for mode in modes]
    ref = next((r for r in results if r["mode"] == "fp32"), results[0])
    for r in results:
        r["speed_vs_" + ref["mode"]] = r["img_per_s"] / ref["img_per_s"]
        r["mem_vs_" + ref["mode"]] = r["peak_mem_mb"] / ref["peak_mem_mb"] if ref["peak_mem_mb"] > 0 else None
    return {
        "bench": "train", "model": model, "gan": gan, "size": size, "batch": batch, "channels": channels,
        "num_labels": num_labels, "steps": steps, "warmup": warmup, "device": str(dev), "device_name": device_name(dev),
        "torch": torch.__version__, "overrides": list(overrides), "reference": ref["mode"], "isolated": isolate,
        "results": results,
    }


def format_table(res: dict[str, Any]) -> str:
    ref = res["reference"]
    lines = [
        f"medgan bench train: {res['model']} (gan {res['gan']}), {res['size']}x{res['size']}, batch {res['batch']}, "
        f"{res['channels']}+{res['num_labels']} channels, {res['steps']} timed steps after {res['warmup']} warm-up",
        f"absolute numbers measured on: {res['device_name']} (torch {res['torch']})",
        f"{'mode':<10} {'speed vs ' + ref:>13} {'mem vs ' + ref:>11} {'img/s':>10} {'s/kimg':>9} {'peak MiB':>9} {'warm-up s':>9}  note",
    ]
    for r in res["results"]:
        mem_ratio = r["mem_vs_" + ref]
        note = []
        if r["compile_requested"] and not r["compiled"]:
            note.append("compile failed: ran eagerly")
        if not r["finite"]:
            note.append("non-finite loss")
        lines.append(
            f"{r['mode']:<10} {r['speed_vs_' + ref]:>12.2f}x {f'{mem_ratio:.2f}x' if mem_ratio is not None else 'n/a':>11} "
            f"{r['img_per_s']:>10.1f} {r['s_per_kimg']:>9.2f} {r['peak_mem_mb']:>9.1f} {r['warmup_s']:>9.1f}  {'; '.join(note)}"
        )
    kind = res["results"][0]["mem_kind"]
    lines.append(f"(peak memory: {kind}; img/s counts real images shown to D)")
    return "\n".join(lines)


def add_bench_cli(sub) -> None:
    p = sub.add_parser("train", help="training-step img/s, s/kimg and peak memory: fp32 vs bf16 vs compiled")
    p.add_argument("--model", default="dcgan", help="a MODELS entry (dcgan, stylegan2, spade, ...)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--gan", default=None, help="GANS entry for the loss (default: the model's own, else dcgan)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 50 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per mode (default 10 on CUDA, 1 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--channels", type=int, default=1, help="image channels of the synthetic data")
    p.add_argument("--labels", type=int, default=4, help="mask labels (background included)")
    p.add_argument("--modes", default="fp32,bf16,compiled", help="comma list of " + ",".join(MODES))
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KNOB=VALUE")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="run each mode in its own process (default: on CPU, where peak RSS is per process)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    p.set_defaults(func=_cmd_bench_train)


def _cmd_bench_train(args) -> int:
    res = bench_train(args.model, args.size, args.batch, gan=args.gan, steps=args.steps, warmup=args.warmup,
                      device=args.device, channels=args.channels, num_labels=args.labels,
                      modes=[m.strip() for m in args.modes.split(",") if m.strip()], overrides=args.overrides,
                      isolate=args.isolate)
    print(format_table(res))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, res)
    return 0
