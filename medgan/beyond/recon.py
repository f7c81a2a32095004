"""Reconstruction as image-to-image translation: undersampled Cartesian k-space MRI -> full image (pix2pix).

Section "Reconstruction" of ``notebooks/08_beyond_the_paper.ipynb``. The networks and the loss are medgan's own
(``MODELS["pix2pix"]``: U-Net G + 70×70 PatchGAN D; ``LOSSES["pix2pix"]``: L1 + conditional GAN; the k-space
simulation is ``medgan.data.kspace``) and train through ``medgan train``:

    medgan train --data data/prepared/acdc-64 --gan pix2pix  --out runs/recon-4x/acdc-64-pix2pix  --set loss.acceleration=4
    medgan train --data data/prepared/acdc-64 --gan recon-l1 --out runs/recon-4x/acdc-64-recon-l1 --set loss.acceleration=4
    medgan recon runs/recon-4x/acdc-64-pix2pix runs/recon-4x/acdc-64-recon-l1 --data data/prepared/acdc-64

``evaluate`` (the twin of ``medgan recon``) undersamples every slice of the test split with a seeded fastMRI
mask (the same masks for every method), reconstructs it with each run's ``G_ema`` (eval mode: batch-norm
running statistics, no dropout) and scores zero-filled and every run against the fully sampled slice: PSNR and
SSIM (``medgan.metrics.image_quality``) on the magnitude scale [0, 1] (data range 1; every reconstruction
clipped to it), mean ± the half-width of a Student-t 95 % interval over the test slices. Slices of one patient
are not independent, so the interval is narrower than a patient-level one would be (book/deviations.md).
``demo`` trains pix2pix and the L1-only U-Net at the profile's accelerations and evaluates them; ``plot_demo``
draws one test slice: fully sampled, mask, zero-filled, L1, pix2pix and their error maps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.config import TrainConfig, get_profile
from medgan.data.kspace import default_center_fraction, seeded_masks, zero_filled_signed
from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import ConfigError
from medgan.experiments import prepared_set, trained_run
from medgan.generate import load_generator
from medgan.io import write_json
from medgan.metrics.image_quality import psnr, ssim
from medgan.runtime import resolve_device
from medgan.segmentation.dice import mean_ci

ZERO_FILLED = "zero-filled"
GANS_COMPARED = ("recon-l1", "pix2pix")  # the L1-only U-Net, then the same U-Net with the GAN term
# The sizes of the demo per profile. quick: 64² ACDC phantom on a 2-core CPU (≤ 120 s for the whole demo):
# pix2pix's U-Net and 70×70 PatchGAN at a quarter of the widths (ngf = ndf = 16 instead of 64), batch 16
# (pix2pix: 1), 200 iterations (3.2 kimg, ~20 epochs of the 158 phantom slices) at lr 1e-3 (pix2pix: 2e-4,
# too slow for 200 steps), 4x only; paper: pix2pix's widths and lr on real ACDC at 128², 4x and 8x, on a GPU.
DEMO = {
    "quick": {"kimg": 3.2, "batch": 16, "knobs": ("g_filters=16", "d_filters=16", "lr=0.001", "tick_kimg=0.8",
                                                  "snapshot_kimg=3.2"),
              "accelerations": (4,)},
    "paper": {"kimg": 200.0, "batch": 16, "knobs": ("g_filters=64", "d_filters=64", "tick_kimg=4",
                                                    "snapshot_kimg=20"),
              "accelerations": (4, 8)},
}


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def _as_prepared(prepared) -> PreparedSet:
    return prepared if isinstance(prepared, PreparedSet) else load_prepared(prepared)


def _load_runs(runs, device: torch.device, checkpoint: str) -> dict[str, tuple[torch.nn.Module, TrainConfig, Path]]:
    """``{label: (G_ema, config, run folder)}``; a bare path is labelled with its ``--gan`` name."""
    items = list(runs.items()) if isinstance(runs, Mapping) else [(None, r) for r in (
        [runs] if isinstance(runs, (str, os.PathLike)) else runs)]
    out = {}
    for label, run in items:
        G, info, _, path = load_generator(run, checkpoint, device)
        cfg = TrainConfig.from_dict(info["config"])
        if cfg.model.name != "pix2pix":
            raise ConfigError(f"{run} is a {cfg.gan or cfg.model.name} run, not a reconstruction run "
                              "(train one with --gan pix2pix or --gan recon-l1)")
        label = label or cfg.gan or "pix2pix"
        if label in out or label == ZERO_FILLED:
            raise ConfigError(f"two runs are labelled {label!r}; pass a mapping {{label: run folder}}")
        out[label] = (G, cfg, path.parent)
    return out


@torch.no_grad()
def reconstruct(G: torch.nn.Module, inputs: torch.Tensor, *, batch: int = 64, device="cpu") -> torch.Tensor:
    """``G(inputs)`` in batches: zero-filled ``[N, C, H, W]`` in [-1, 1] -> reconstruction, float32 on CPU."""
    device = torch.device(device)
    return torch.cat([G(inputs[s : s + batch].to(device)).float().cpu() for s in range(0, len(inputs), batch)])


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] image -> the [0, 1] magnitude scale the scores use (clipped: what a display shows)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def evaluate(
    runs,
    prepared,
    acceleration: float | None = None,
    *,
    center_fraction: float | None = None,
    split: str = "test",
    seed: int = 0,
    checkpoint: str = "last",
    device: str = "cpu",
    example: int | None = None,
) -> dict[str, Any]:
    """PSNR/SSIM of zero-filled and of each run's reconstruction on ``split`` of ``prepared``.

    ``runs``: one run folder, a list of them (labelled by their ``--gan``), or ``{label: run folder}``.
    ``acceleration``/``center_fraction``: None = the runs' (which must then agree). The masks are
    ``seeded_masks(..., seed=seed, index=0)``, one per slice, the same for every method.
    Returns ``{"acceleration", "center_fraction", "split", "seed", "n_slices", "n_patients", "data_range",
    "methods": {name: {"psnr": mean_ci, "ssim": mean_ci, "psnr_per_slice", "ssim_per_slice", "run"}},
    "example": {"index", "patient", "target", "mask", name: image ...}}`` (``mean_ci``: ``mean``, ``ci95``, ...;
    example images are ``[H, W]`` float32 arrays of the first channel on the [0, 1] scale).
    """
    dev = resolve_device(device)
    loaded = _load_runs(runs, dev, checkpoint)
    ps = _as_prepared(prepared)
    if acceleration is None:
        accels = {cfg.loss.acceleration for _, cfg, _ in loaded.values()}
        if len(accels) != 1:
            raise ConfigError(f"the runs were trained at different accelerations {sorted(accels)}; pass acceleration=")
        acceleration = accels.pop()
    if center_fraction is None:
        cfs = {cfg.loss.center_fraction for _, cfg, _ in loaded.values()}
        cf = cfs.pop() if len(cfs) == 1 else 0.0
        center_fraction = cf if cf > 0 else default_center_fraction(acceleration)
    images, _ = ps.load(split)
    if len(images) == 0:
        raise ConfigError(f"split {split!r} of {ps.root} is empty: nothing to evaluate")
    target = torch.from_numpy(images)
    masks = seeded_masks(len(target), target.shape[-1], acceleration, center_fraction, seed=seed, index=0)
    inputs = zero_filled_signed(target, masks)
    outputs = {ZERO_FILLED: inputs}
    for label, (G, _cfg, _) in loaded.items():
        if G.channels != ps.channels or G.resolution != ps.image_size:
            raise ConfigError(f"run {label!r} was trained on {G.channels}-channel {G.resolution}² images; "
                              f"{ps.root} holds {ps.channels}-channel {ps.image_size}² images")
        outputs[label] = reconstruct(G, inputs, device=dev)
    ref = _magnitude(target)
    methods = {}
    for name, out in outputs.items():
        p, s = psnr(_magnitude(out), ref, 1.0).numpy(), ssim(_magnitude(out), ref, 1.0).numpy()
        methods[name] = {"psnr": mean_ci(p), "ssim": mean_ci(s), "psnr_per_slice": p.tolist(),
                         "ssim_per_slice": s.tolist(), "run": str(loaded[name][2]) if name in loaded else None}
    patients = ps.patients[ps.indices(split)]
    i = len(target) // 2 if example is None else int(example)
    shown = {name: _magnitude(out[i, 0]).numpy() for name, out in outputs.items()}
    return {
        "acceleration": float(acceleration), "center_fraction": float(center_fraction), "split": split, "seed": seed,
        "n_slices": len(target), "n_patients": len(set(patients.tolist())), "data_range": 1.0, "source": ps.source,
        "sampled_fraction": float(masks.mean()), "methods": methods,
        "example": {"index": i, "patient": str(patients[i]), "target": ref[i, 0].numpy(),
                    "mask": masks[i, 0].expand(target.shape[-2], -1).numpy(), **shown},
    }


def table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (acceleration, method): PSNR and SSIM mean and 95 % half-width, from ``evaluate`` results
    (``result`` is one, or ``demo``'s ``{"evaluations": {accel: result}}``)."""
    evals = result["evaluations"].values() if "evaluations" in result else [result]
    rows = []
    for ev in evals:
        for name, m in ev["methods"].items():
            rows.append({"acceleration": ev["acceleration"], "method": name, "psnr": m["psnr"]["mean"],
                         "psnr_ci95": m["psnr"]["ci95"], "ssim": m["ssim"]["mean"], "ssim_ci95": m["ssim"]["ci95"],
                         "n_slices": ev["n_slices"]})
    return rows


def _fmt(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)


def summary(result: dict[str, Any]) -> str:
    """The table as stable text (rounded, no paths or timings): what the notebook prints."""
    lines = [f"{'accel':>5}  {'method':<12} {'PSNR dB':>16} {'SSIM':>17}"]
    for r in table(result):
        lines.append(f"{r['acceleration']:>4g}x  {r['method']:<12} {_fmt(r['psnr'], '.2f'):>7} ± "
                     f"{_fmt(r['psnr_ci95'], '.2f'):<6} {_fmt(r['ssim'], '.4f'):>7} ± {_fmt(r['ssim_ci95'], '.4f'):<6}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the notebook's demo
# ---------------------------------------------------------------------------------------------
def demo(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
         accelerations: Sequence[float] | None = None, progress: bool | None = False) -> dict[str, Any]:
    """Train the L1-only U-Net and pix2pix on ACDC at each acceleration (reusing current runs), evaluate both
    and zero-filled on the test split. Returns ``{"profile", "evaluations": {accel: evaluate result},
    "runs": {accel: {gan: run folder}}, "seconds": {accel: {gan: training seconds}}, "table": table rows}``.

    Runs live in ``{runs_root}/recon-<accel>x/`` under ``medgan.experiments.trained_run``'s names.
    """
    size = DEMO[get_profile(profile).name]
    real = prepared_set("acdc", profile, data_root=data_root)
    evaluations, runs, seconds = {}, {}, {}
    for accel in accelerations or size["accelerations"]:
        root = Path(runs_root) / f"recon-{accel:g}x"
        runs[accel], seconds[accel] = {}, {}
        for gan in GANS_COMPARED:
            t0 = time.perf_counter()
            knobs = [*size["knobs"], f"loss.acceleration={accel}"]
            runs[accel][gan] = trained_run(real, gan, profile, runs_root=root, seed=seed, kimg=size["kimg"],
                                           batch=size["batch"], overrides=knobs, progress=progress)
            seconds[accel][gan] = time.perf_counter() - t0
        evaluations[accel] = evaluate(runs[accel], real, accel, seed=seed)
    result = {"profile": profile, "evaluations": evaluations, "runs": runs, "seconds": seconds}
    result["table"] = table(result)
    write_json(Path(runs_root) / f"recon-{profile}.json", {k: v for k, v in result.items() if k != "evaluations"})
    return result


def plot_demo(result: dict[str, Any], acceleration: float | None = None):
    """One test slice at ``acceleration`` (default: the first): fully sampled, k-space mask, zero-filled and each
    reconstruction (top), and each method's absolute error (bottom), with its PSNR/SSIM."""
    import matplotlib.pyplot as plt

    evals = result["evaluations"] if "evaluations" in result else {result["acceleration"]: result}
    ev = evals[acceleration if acceleration is not None else next(iter(evals))]
    ex = ev["example"]
    names = list(ev["methods"])
    fig, axes = plt.subplots(2, len(names) + 2, figsize=(2.0 * (len(names) + 2), 4.3))
    axes[0, 0].imshow(ex["target"], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("fully sampled", fontsize=8)
    axes[0, 1].imshow(ex["mask"], cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title(f"mask {ev['acceleration']:g}x (k-space)", fontsize=8)
    err_max = max(float(np.abs(ex[n] - ex["target"]).max()) for n in names) or 1.0
    for j, name in enumerate(names, start=2):
        i = ex["index"]
        p, s = ev["methods"][name]["psnr_per_slice"][i], ev["methods"][name]["ssim_per_slice"][i]
        axes[0, j].imshow(ex[name], cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"{name}\n{p:.1f} dB, SSIM {s:.3f}", fontsize=8)
        axes[1, j].imshow(np.abs(ex[name] - ex["target"]), cmap="magma", vmin=0, vmax=err_max)
        axes[1, j].set_title(f"|error| {name}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"{ev['split']} slice {ex['index']} ({ex['patient']}, {ev.get('source', '?')} data): "
                 f"{ev['acceleration']:g}x Cartesian undersampling", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# CLI: medgan recon
# ---------------------------------------------------------------------------------------------
def add_cli(sub) -> None:
    p = sub.add_parser("recon", help="PSNR/SSIM of reconstruction runs (pix2pix, recon-l1) against zero-filled",
                       description="Undersample the test split with seeded Cartesian masks and score zero-filled and "
                                   "each run's reconstruction (PSNR, SSIM, mean ± 95%% CI over slices).")
    p.add_argument("runs", nargs="+", help="run folders trained with --gan pix2pix or --gan recon-l1")
    p.add_argument("--data", required=True, help="prepared dataset folder to evaluate on")
    p.add_argument("--acceleration", type=float, help="k-space acceleration (default: the runs')")
    p.add_argument("--center-fraction", type=float, help="centre lines / width (default: the runs')")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation masks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the result (without the example images) as JSON here")
    p.set_defaults(func=_cmd_recon)


def _cmd_recon(args) -> int:
    result = evaluate(args.runs, args.data, args.acceleration, center_fraction=args.center_fraction,
                      split=args.split, seed=args.seed, device=args.device)
    if args.out:
        write_json(args.out, {k: v for k, v in result.items() if k != "example"})
    print(summary(result))
    return 0
