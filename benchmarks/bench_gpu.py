"""GPU readiness in one run: every model's training step at 128² and 256² (fp32 = the paper's precision, and the
bf16 fast mode) plus the 10k-vs-10k FID benchmark, written as ONE JSON and one markdown table.

    make bench-gpu                                   # = python3 benchmarks/bench_gpu.py --wheelhouse wheelhouse
    python3 benchmarks/bench_gpu.py --quick          # the same code paths, tiny, on CPU (seconds; tests/test_bench_gpu.py)

Sized to finish in under 8 minutes on one H100/H200: 3 models x 2 sizes x 2 modes of ``medgan bench train``
(each ``--steps`` timed iterations after ``--warmup``) at the paper's batch of each GAN, then ``medgan bench fid
--n 10000``. SPADE's VGG19 term runs on ``vgg19-random`` (seeded random weights: same cost as the pretrained
network, no download), and FID uses the real Inception weights when present, else ``inception-random`` (the
table says which). A benchmark that fails (e.g. out of memory) is recorded with its error and the rest go on.

``--wheelhouse DIR`` first installs, from ``DIR`` only (``pip install --no-index --find-links DIR --no-deps``), the
packages whose import fails (a GPU machine with its own python3 + torch but no registry access; ``make wheelhouse``
fills ``DIR`` on a machine that has one). medgan itself is imported from this checkout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution, in install order; the bench's import chain (medgan.train_bench, medgan.metrics.bench)
NEEDED = {"numpy": "numpy", "PIL": "Pillow", "scipy": "scipy", "tqdm": "tqdm", "pytorch_fid": "pytorch-fid"}
MODELS = ("dcgan", "stylegan2", "spade")
SIZES = (128, 256)
MODES = ("fp32", "bf16")
# every model at the paper's defaults; only the substitutes that need no download
OVERRIDES = {"dcgan": [], "stylegan2": [], "spade": ["loss.vgg_features=vgg19-random"]}
# --quick: the same code paths, tiny enough for a CPU test
QUICK_SIZES = (32, 64)
QUICK_OVERRIDES = {
    "dcgan": ["model.g_filters=8", "model.d_filters=8"],
    "stylegan2": ["model.channel_max=16", "model.latent_dim=32", "model.w_dim=32", "model.mapping_layers=2"],
    "spade": ["loss.vgg_features=vgg19-random", "model.g_filters=8", "model.d_filters=8", "model.spade_hidden=8",
              "model.channel_max=16"],
}


def ensure_deps(wheelhouse: Path) -> list[str]:
    """Install, from ``wheelhouse`` only, the distributions whose module does not import; returns what was installed."""
    missing = []
    for module, dist in NEEDED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        if not wheelhouse.is_dir():
            raise SystemExit(f"missing {missing} and no wheelhouse at {wheelhouse}: run `make wheelhouse` on a machine "
                             f"with registry access and copy {wheelhouse.name}/ here")
        print(f"installing {missing} from {wheelhouse} (no index, no deps)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse), "--no-deps",
                        *missing], check=True)
        importlib.invalidate_caches()
    return missing


def paper_batch(gan: str) -> int:
    from medgan.config import TrainConfig
    from medgan.training import apply_gan

    return apply_gan(TrainConfig(), gan).batch


def run_all(*, quick: bool, device: str, steps: int | None, warmup: int | None, fid_n: int | None,
            models=MODELS, log=print) -> dict:
    import torch

    from medgan.metrics.bench import run_bench
    from medgan.runtime import device_name, resolve_device
    from medgan.train_bench import bench_train

    dev = resolve_device("cpu" if quick else device)
    sizes = QUICK_SIZES if quick else SIZES
    overrides = QUICK_OVERRIDES if quick else OVERRIDES
    steps = steps or (1 if quick else 20)
    warmup = warmup if warmup is not None else (0 if quick else 5)
    t_start = time.perf_counter()
    out: dict = {"bench": "gpu-readiness", "quick": quick, "device": str(dev), "device_name": device_name(dev),
                 "torch": torch.__version__, "python": sys.version.split()[0], "steps": steps, "warmup": warmup,
                 "train": [], "fid": None}
    for model in models:
        batch = 2 if quick else paper_batch(model)
        for size in sizes:
            t0 = time.perf_counter()
            entry = {"model": model, "size": size, "batch": batch, "overrides": overrides[model]}
            try:
                res = bench_train(model, size, batch, steps=steps, warmup=warmup, device=str(dev), modes=MODES,
                                  overrides=overrides[model], isolate=False)
                entry["results"] = [{k: r[k] for k in ("mode", "amp", "img_per_s", "s_per_kimg", "step_ms", "peak_mem_mb",
                                                        "mem_kind", "finite", "n_critic", "speed_vs_fp32", "mem_vs_fp32")}
                                    for r in res["results"]]
            except Exception as e:  # noqa: BLE001 — one failed benchmark (e.g. OOM) must not lose the others
                entry["error"] = f"{type(e).__name__}: {e}"
                entry["traceback"] = traceback.format_exc()[-2000:]
            finally:
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            entry["wall_s"] = time.perf_counter() - t0
            out["train"].append(entry)
            log(f"train {model} {size}²: " + (entry.get("error") or ", ".join(
                f"{r['mode']} {r['img_per_s']:.1f} img/s" for r in entry["results"])) + f"  ({entry['wall_s']:.0f} s)")
    t0 = time.perf_counter()
    n = fid_n or (8 if quick else 10000)
    try:
        r = run_bench(n, device=str(dev), size=64 if quick else 128)
        out["fid"] = {k: r[k] for k in ("n", "size", "batch", "features", "ours_s", "ours_features_s", "ours_frechet_s",
                                        "pytorch_fid_s", "speedup", "abs_delta_fid", "fid_ours", "fid_pytorch_fid",
                                        "frechet_route")}
    except Exception as e:  # noqa: BLE001
        out["fid"] = {"n": n, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    out["fid"]["wall_s"] = time.perf_counter() - t0
    out["wall_s"] = time.perf_counter() - t_start
    return out


def markdown(res: dict) -> str:
    lines = [f"# GPU readiness benchmark{' (--quick: tiny CPU smoke run, numbers meaningless)' if res['quick'] else ''}",
             "",
             f"{res['device_name']} — torch {res['torch']}, python {res['python']}; {res['steps']} timed steps after "
             f"{res['warmup']} warm-up per mode; total {res['wall_s']:.0f} s.",
             "",
             "| model | size | batch | mode | img/s | s/kimg | peak MiB | speed vs fp32 | memory vs fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in res["train"]:
        if "error" in e:
            lines.append(f"| {e['model']} | {e['size']}² | {e['batch']} | — | failed: {e['error'][:80]} | | | | |")
            continue
        for r in e["results"]:
            mem = f"{r['mem_vs_fp32']:.2f}×" if r.get("mem_vs_fp32") is not None else "n/a"
            lines.append(f"| {e['model']} | {e['size']}² | {e['batch']} | {r['mode']} | {r['img_per_s']:.1f} | "
                         f"{r['s_per_kimg']:.2f} | {r['peak_mem_mb']:.0f} | {r['speed_vs_fp32']:.2f}× | {mem} |")
    f = res["fid"]
    lines += ["", "| FID benchmark | n per set | features | medgan s | pytorch-fid s | speed-up | \\|ΔFID\\| |",
              "|---|---|---|---|---|---|---|"]
    if "error" in f:
        lines.append(f"| `medgan bench fid` | {f['n']} | failed: {f['error'][:80]} | | | | |")
    else:
        lines.append(f"| `medgan bench fid` | {f['n']} | {f['features']} | {f['ours_s']:.1f} | {f['pytorch_fid_s']:.1f} | "
                     f"{f['speedup']:.2f}× | {f['abs_delta_fid']:.1e} |")
    overrides = sorted({o for e in res["train"] for o in e["overrides"]})
    lines += ["", f"Overrides of the paper defaults: {', '.join(f'`{o}`' for o in overrides) or 'none'} "
              "(vgg19-random: SPADE's VGG19 term with seeded random weights, same cost as the pretrained network)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-gpu"), help="folder for bench-gpu.json and bench-gpu.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes and widths on CPU: the same code paths in seconds")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 20; 1 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per mode (default 5; 0 with --quick)")
    p.add_argument("--fid-n", type=int, default=None, help="images per FID set (default 10000; 8 with --quick)")
    p.add_argument("--models", default=",".join(MODELS), help="comma list (default: all three)")
    p.add_argument("--wheelhouse", default=None, metavar="DIR",
                   help="install missing dependencies from DIR (no index, no deps) before importing medgan")
    a = p.parse_args(argv)
    if a.wheelhouse:
        ensure_deps(Path(a.wheelhouse))
    sys.path.insert(0, str(ROOT))
    res = run_all(quick=a.quick, device=a.device, steps=a.steps, warmup=a.warmup, fid_n=a.fid_n,
                  models=tuple(m.strip() for m in a.models.split(",") if m.strip()))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-gpu.json").write_text(json.dumps(res, indent=2, allow_nan=True) + "\n")
    (out / "bench-gpu.md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {out / 'bench-gpu.json'} and {out / 'bench-gpu.md'}")
    failed = [e for e in res["train"] if "error" in e] + ([res["fid"]] if "error" in res["fid"] else [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
