"""``medgan bench fid``: our FID path vs pytorch-fid's own ``fid_score`` path on the same images, in one run.

Two synthetic sets of ``n`` grayscale images (smooth random fields at two correlation lengths) are
made once as uint8 pixel values v. pytorch-fid's path reads them as PNG files the way its CLI does
(``get_activations`` over files with its DataLoader, then ``calculate_frechet_distance`` with scipy's
``sqrtm``); ours takes the same values as arrays in [-1, 1] (x = v / 127.5 - 1, what a prepared set
holds) through ``extract_features`` and ``fid_from_features``. Both use the same ``InceptionV3``
module object, so the only differences are the pipeline and the Fréchet maths.

Real Inception weights are used when present, else ``inception-random`` (printed as such).
Writing the PNGs is not timed; reading them is (it is part of pytorch-fid's path).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medgan.io import write_json
from medgan.metrics.features import extract_features, get_extractor, inception_weights_path
from medgan.metrics.fid import fid_from_features, fid_route
from medgan.runtime import resolve_device


def make_images(n: int, size: int, corr: float, seed: int) -> np.ndarray:
    """``[n, size, size]`` uint8 smooth random fields (Gaussian-filtered noise, correlation length ``corr`` px)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        f = gaussian_filter(rng.standard_normal((size, size)), corr, mode="wrap")
        f = (f - f.mean()) / (f.std() + 1e-12)
        out[i] = np.clip(127.5 + 50 * f, 0, 255).round().astype(np.uint8)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(n: int = 0, *, device: str | None = "auto", batch: int = 200, size: int = 128, workers: int | None = None,
              seed: int = 0, json_out: str | None = None) -> dict:
    """Time both paths on the same 2 x ``n`` images; returns the numbers printed by ``medgan bench fid``."""
    from PIL import Image
    from pytorch_fid.fid_score import calculate_frechet_distance, get_activations

    dev = resolve_device(device)
    if not n:
        n = 10000 if dev.type == "cuda" else 100
    if workers is None:
        workers = min(8, len(os.sched_getaffinity(0))) if dev.type == "cuda" else 0
    features = "inception" if inception_weights_path().is_file() else "inception-random"
    extractor = get_extractor(features, dev)
    sets = [make_images(n, size, corr, seed + k) for k, corr in enumerate((2.0, 3.0))]

    with tempfile.TemporaryDirectory(prefix="medgan-bench-fid-") as tmp:
        dirs = []
        for k, images in enumerate(sets):
            d = Path(tmp) / f"set{k}"
            d.mkdir()
            for i, v in enumerate(images):
                Image.fromarray(v, mode="L").save(d / f"{i:06d}.png")
            dirs.append(d)

        # --- pytorch-fid's own path: files -> get_activations -> np stats -> scipy sqrtm
        _sync(dev)
        t, c = time.perf_counter(), time.process_time()
        stats = []
        for d in dirs:
            files = sorted(d.glob("*.png"))
            act = get_activations(files, extractor.model, batch_size=batch, dims=2048, device=dev, num_workers=workers)
            stats.append((np.mean(act, axis=0), np.cov(act, rowvar=False)))
        t_act_theirs = time.perf_counter() - t
        fid_theirs = float(calculate_frechet_distance(*stats[0], *stats[1]))
        t_theirs, c_theirs = time.perf_counter() - t, time.process_time() - c

    # --- ours: arrays in [-1, 1] -> extract_features -> fast Fréchet (float64, on the device)
    arrays = [(s.astype(np.float32) / 127.5 - 1)[:, None] for s in sets]
    _sync(dev)
    t, c = time.perf_counter(), time.process_time()
    feats = [extract_features(a, extractor, batch=batch, device=dev, desc=f"set{k}") for k, a in enumerate(arrays)]
    _sync(dev)
    t_act_ours = time.perf_counter() - t
    fid_ours = fid_from_features(feats[0], feats[1], device=dev)
    _sync(dev)
    t_ours, c_ours = time.perf_counter() - t, time.process_time() - c
    route = fid_route(n, n, feats[0].shape[1])

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    result = {
        "n": n, "size": size, "batch": batch, "device": device_name, "features": extractor.name,
        "pytorch_fid_s": t_theirs, "pytorch_fid_features_s": t_act_theirs, "pytorch_fid_frechet_s": t_theirs - t_act_theirs,
        "ours_s": t_ours, "ours_features_s": t_act_ours, "ours_frechet_s": t_ours - t_act_ours,
        "pytorch_fid_cpu_s": c_theirs, "ours_cpu_s": c_ours, "frechet_route": route,
        "speedup": t_theirs / t_ours, "speedup_cpu_time": c_theirs / c_ours, "fid_pytorch_fid": fid_theirs, "fid_ours": fid_ours,
        "abs_delta_fid": abs(fid_theirs - fid_ours), "dataloader_workers": workers,
    }
    print(f"FID benchmark: {n} vs {n} images ({size}² grayscale), batch {batch}, {device_name}, features {extractor.name}"
          + (" (random weights: timings and |ΔFID| are valid, the FID value itself is not comparable)"
             if extractor.random_weights else ""))
    print(f"  pytorch-fid fid_score path  {t_theirs:8.2f} s wall, {c_theirs:8.2f} s CPU  (features {t_act_theirs:.2f} s + "
          f"Fréchet, scipy sqrtm {t_theirs - t_act_theirs:.2f} s)  FID {fid_theirs:.6f}")
    print(f"  medgan path                 {t_ours:8.2f} s wall, {c_ours:8.2f} s CPU  (features {t_act_ours:.2f} s + "
          f"Fréchet, {route} route {t_ours - t_act_ours:.2f} s)  FID {fid_ours:.6f}")
    print(f"  speed-up {result['speedup']:.2f}x wall ({result['speedup_cpu_time']:.2f}x CPU time)   |ΔFID| {result['abs_delta_fid']:.2e}")
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        write_json(json_out, result)
    return result


def run_frechet_bench(n: int = 4096, d: int = 2048, *, device: str | None = "auto", seed: int = 0) -> dict:
    """Fréchet step only, on synthetic full-rank ``[n, d]`` features: pytorch-fid's np.cov + scipy ``sqrtm`` vs ours."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    feats = [np.maximum(rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d)) + shift, 0)
             .astype(np.float32) for shift in (0.0, 0.1)]
    t = time.perf_counter()
    stats = [(np.mean(f.astype(np.float64), axis=0), np.cov(f.astype(np.float64), rowvar=False)) for f in feats]
    theirs = float(calculate_frechet_distance(*stats[0], *stats[1]))
    t_theirs = time.perf_counter() - t
    _sync(dev)
    t = time.perf_counter()
    ours = fid_from_features(feats[0], feats[1], device=dev)
    _sync(dev)
    t_ours = time.perf_counter() - t
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    route = fid_route(n, n, d)
    print(f"Fréchet step only: {n} vs {n} synthetic {d}-d features, {device_name}")
    print(f"  pytorch-fid (np.cov + scipy sqrtm)  {t_theirs:7.2f} s  FID {theirs:.9f}")
    print(f"  medgan ({route} route, torch float64)  {t_ours:7.2f} s  FID {ours:.9f}")
    print(f"  speed-up {t_theirs / t_ours:.2f}x   |ΔFID| {abs(theirs - ours):.2e}")
    return {"n": n, "d": d, "device": device_name, "route": route, "pytorch_fid_s": t_theirs, "ours_s": t_ours,
            "speedup": t_theirs / t_ours, "fid_pytorch_fid": theirs, "fid_ours": ours, "abs_delta_fid": abs(theirs - ours)}


def _cli(a: argparse.Namespace) -> int:
    if a.frechet_only:
        result = run_frechet_bench(a.n or 4096, device=a.device, seed=a.seed)
        if a.json_out:
            Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
            write_json(a.json_out, result)
        return 0
    run_bench(a.n, device=a.device, batch=a.batch, size=a.size, workers=a.workers, seed=a.seed, json_out=a.json_out)
    return 0


def add_bench_cli(sub) -> None:
    p = sub.add_parser("fid", help="our FID path vs pytorch-fid's fid_score on the same images (ratio, |ΔFID|)")
    p.add_argument("--n", type=int, default=0, help="images per set (default 10000 on GPU, 100 on CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--size", type=int, default=128, help="image side in pixels (Inception resizes to 299 anyway)")
    p.add_argument("--workers", type=int, default=None, help="pytorch-fid DataLoader workers (default 8 on GPU, 0 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", default=None, help="also write the numbers as JSON")
    p.add_argument("--frechet-only", action="store_true",
                   help="time only the Fréchet step on synthetic full-rank 2048-d features (n default 4096; no Inception)")
    p.set_defaults(func=_cli)

