"""Conditional GAN and InfoGAN on the ACDC set (notebook 08): train through ``run_training``, generate, measure.

- ``demo_conditional``: a DCGAN-backbone GAN conditioned on the pathology group (projection discriminator,
  Miyato & Koyama 2018) on the ACDC phantom; one generated set per group (``conditional_set``); the mean
  LV / MYO / RV area of the generated masks per group next to the real masks'. The phantom's groups differ
  by construction (``medgan.data.phantoms.cardiac``: DCM dilates the LV, HCM thickens the wall, RV enlarges
  the RV), so a GAN that uses the label reproduces the ordering of the real areas.
- ``demo_infogan``: an InfoGAN (categorical + continuous codes, ``medgan.models.conditional``) on the same
  set; a latent-traversal figure and, per continuous code, the Pearson correlation between the code's value
  and the LV area of the generated mask (the phantom factor: the LV cavity radius, which the phantom sets per
  patient, per group, per slice position and per ED/ES phase).

Sizes (``DEMO_SIZES``): ``quick`` trains a 16-filter DCGAN on 32×32 slices of the 12-patient phantom for 16 kimg
(500 steps of 32), so that each demo fits in ~90 s on a 2-core CPU once the prepared set exists; ``paper`` uses
the real ACDC download at the paper's 128×128. Runs and sets are reused when current (``medgan.experiments``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medgan.data.prepared import PreparedSet, load_prepared, split_joint
from medgan.experiments import generated_staleness, move_aside, prepared_set, run_staleness
from medgan.generate import generate, load_generator
from medgan.images import overlay
from medgan.models.conditional import LABEL_FIELDS, codes_from_z, z_for_codes
from medgan.training import make_config, run_training

STRUCTURES = ("LV", "MYO", "RV")


@dataclass(frozen=True)
class DemoSize:
    size: int | None  # prepared image size (None = the paper's 128)
    kimg: float
    batch: int
    filters: int
    n_per_label: int  # generated pairs per label (conditional) / samples for the correlation (InfoGAN)


DEMO_SIZES = {
    # 500 G steps: ~35 s of one CPU core (0.07 s/step measured); the per-group LV ordering appears from ~400 steps
    "quick": DemoSize(size=32, kimg=16.0, batch=32, filters=16, n_per_label=64),
    "paper": DemoSize(size=None, kimg=500.0, batch=64, filters=64, n_per_label=1000),
}


def _size(profile: str) -> DemoSize:
    try:
        return DEMO_SIZES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; use one of {sorted(DEMO_SIZES)}") from None


def _real(profile: str, data_root, seed: int) -> PreparedSet:
    return prepared_set("acdc", profile, data_root=data_root, size=_size(profile).size, seed=seed)


def _train(real: PreparedSet, name: str, profile: str, knobs: list[str], *, runs_root, seed: int,
           gan: str = "hinge", progress: bool | None = None) -> Path:
    """Train ``gan`` with ``knobs`` unless a current run ``<set>-<name>-<profile>`` exists (stale: moved aside)."""
    d = _size(profile)
    run_dir = Path(runs_root) / f"{real.root.name}-{name}-{profile}"
    sets = [f"model.g_filters={d.filters}", f"model.d_filters={d.filters}", "tick_kimg=0.5",
            f"snapshot_kimg={d.kimg}", "grid=16", f"seed={seed}", *knobs]
    cfg = make_config(out=run_dir, data=real.root, gan=gan, kimg=d.kimg, batch=d.batch, overrides=sets)
    reason = run_staleness(run_dir, cfg, real)
    if reason is None:
        return run_dir
    if run_dir.exists():
        dest = move_aside(run_dir, _recorded(run_dir / "config.json", "config_hash"))
        print(f"{run_dir.name}: not reused ({reason}); kept as {dest.name}")
    return run_training(cfg, progress=progress)


def _recorded(path: Path, key: str) -> str:
    """What names a stale folder (``<name>.stale-<tag>``): the config hash it recorded, else "unknown"."""
    try:
        return str(json.loads(path.read_text()).get(key) or "unknown")
    except (OSError, ValueError, AttributeError):
        return "unknown"


# ---------------------------------------------------------------------------------------------- conditional GAN
def conditional_run(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
                    condition: str = "group", cond_d: str = "projection", progress: bool | None = None) -> Path:
    """The conditional GAN's run folder (trained on the profile's ACDC set unless a current one exists)."""
    real = _real(profile, data_root, seed)
    name = f"cgan-{condition.replace(',', '+')}-{cond_d}"
    return _train(real, name, profile, [f"model.condition={condition}", f"model.cond_d={cond_d}"],
                  runs_root=runs_root, seed=seed, progress=progress)


def conditional_set(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
                    label: str | None = None, n: int | None = None, condition: str = "group",
                    cond_d: str = "projection", progress: bool | None = None) -> Path:
    """A labelled synthetic set from the conditional GAN: ``n`` pairs for ``label`` (e.g. ``"DCM"``), or with
    ``label=None`` for labels drawn from the training set's proportions. Returns the prepared folder
    ``{data_root}/generated/<run>-<label|prior>-n<n>-s<seed>``: per-pair ``group`` (and ``phase`` when
    conditioned on it) arrays exactly as in the real prepared ACDC set; reused when current."""
    run_dir = conditional_run(profile, data_root=data_root, runs_root=runs_root, seed=seed, condition=condition,
                              cond_d=cond_d, progress=progress)
    n = n or _size(profile).n_per_label * (len(LABEL_FIELDS["group"]) if label is None else 1)
    tag = "prior" if label is None else label.replace(",", "+")
    out = Path(data_root) / "generated" / f"{run_dir.name}-{tag}-n{n}-s{seed}"
    reason = generated_staleness(out, run_dir, n=n, seed=seed)
    if reason is None and load_prepared(out).meta.get("label") != label:
        reason = "another label"
    if reason is not None:
        if out.exists():
            move_aside(out, _recorded(out / "dataset.json", "config_hash"))
        generate(run_dir, n, out, seed=seed, label=label, progress=progress)
    return out


def structure_areas(masks: np.ndarray, labels: dict[str, str]) -> dict[str, float]:
    """Mean area of each cardiac structure as a fraction of the image (``masks [n, H, W]``), by label name."""
    masks = np.asarray(masks)
    index = {name: int(k) for k, name in labels.items()}
    return {s: float((masks == index[s]).mean()) for s in STRUCTURES if s in index}


def demo_conditional(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
                     progress: bool | None = False) -> dict:
    """Train the group-conditional GAN, generate one set per group, compare per-group structure areas.

    Returns ``{"run", "condition", "profile", "source", "n_per_group", "seconds", "groups": {group: {"real":
    {LV, MYO, RV}, "generated": {...}, "set": path}}, "lv_rank_agreement"}`` (areas are pixel fractions;
    ``lv_rank_agreement`` is the Spearman correlation of the per-group LV areas, real vs generated).
    """
    t0 = time.perf_counter()
    real = _real(profile, data_root, seed)
    idx = real.indices("train+val")
    real_groups = np.asarray(real.extra["group"])[idx]
    real_masks = np.asarray(real.masks[idx])
    groups: dict[str, dict] = {}
    for group in LABEL_FIELDS["group"]:
        out = conditional_set(profile, data_root=data_root, runs_root=runs_root, seed=seed, label=group,
                              progress=progress)
        gen = load_prepared(out)
        present = real_groups == group
        groups[group] = {
            "real": structure_areas(real_masks[present], real.labels) if present.any() else None,
            "generated": structure_areas(np.asarray(gen.masks), gen.labels),
            "n_real": int(present.sum()),
            "set": str(out),
        }
    both = [g for g in groups if groups[g]["real"] is not None]
    lv_real = [groups[g]["real"]["LV"] for g in both]
    lv_gen = [groups[g]["generated"]["LV"] for g in both]
    return {
        "run": str(conditional_run(profile, data_root=data_root, runs_root=runs_root, seed=seed)),
        "condition": "group", "profile": profile, "source": real.source,
        "n_per_group": len(load_prepared(groups[both[0]]["set"])) if both else 0,
        "groups": groups, "lv_rank_agreement": _spearman(lv_real, lv_gen),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _spearman(a, b) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return pearson(ra, rb)


def pearson(a, b) -> float:
    """Pearson's r of two 1-D arrays (NaN when either is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def plot_conditional_areas(result: dict):
    """Grouped bars: mean LV / MYO / RV area per group, real (hatched) vs generated."""
    groups = list(result["groups"])
    import matplotlib.pyplot as plt  # lazily, as medgan.plots: importing the module needs no matplotlib

    fig, axes = plt.subplots(1, len(STRUCTURES), figsize=(4 * len(STRUCTURES), 3.2), sharey=True)
    x = np.arange(len(groups))
    for ax, s in zip(axes, STRUCTURES, strict=True):
        real = [(result["groups"][g]["real"] or {}).get(s, np.nan) for g in groups]
        gen = [result["groups"][g]["generated"].get(s, np.nan) for g in groups]
        ax.bar(x - 0.2, real, 0.4, label="real", color="0.7", hatch="//")
        ax.bar(x + 0.2, gen, 0.4, label="generated for the group", color="tab:blue")
        ax.set_xticks(x, groups)
        ax.set_title(f"{s} area")
    axes[0].set_ylabel("fraction of the image")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Conditional GAN ({result['condition']}), {result['source']} data, profile {result['profile']}")
    fig.tight_layout()
    return fig


def plot_conditional_samples(result: dict, n: int = 4):
    """One row per group: ``n`` generated images with their masks overlaid."""
    groups = list(result["groups"])
    import matplotlib.pyplot as plt  # lazily, as medgan.plots: importing the module needs no matplotlib

    fig, axes = plt.subplots(len(groups), n, figsize=(1.6 * n, 1.6 * len(groups)), squeeze=False)
    for r, g in enumerate(groups):
        gen = load_prepared(result["groups"][g]["set"])
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(overlay(np.asarray(gen.images[c], np.float32), np.asarray(gen.masks[c])))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(g)
    fig.suptitle(f"Generated for each group ({result['source']})", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- InfoGAN
INFO_KNOBS = ("model.info_cat=5", "model.info_cont=2")


def infogan_run(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
                progress: bool | None = None) -> Path:
    """The InfoGAN's run folder (5 categories, 2 continuous codes) on the profile's ACDC set."""
    return _train(_real(profile, data_root, seed), "infogan", profile, list(INFO_KNOBS), runs_root=runs_root,
                  seed=seed, progress=progress)


@torch.no_grad()
def sample_codes(run_dir, n: int, *, seed: int = 0, cat: int | None = None, cont: dict[int, float] | None = None):
    """``n`` pairs from an InfoGAN run with codes from z (some fixed by ``cat``/``cont``):
    ``(images [n, C, H, W], masks [n, H, W], cat [n] | None, cont [n, L] | None)``."""
    G, info, _, _ = load_generator(run_dir)
    channels = int(info["dataset"]["channels"])
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    z = z_for_codes(z, G.info_cat, G.info_cont, cat=cat, cont=cont)
    image, mask = split_joint(G(z).clamp(-1, 1), channels)
    c_cat, c_cont = codes_from_z(z, G.info_cat, G.info_cont)
    return image.numpy(), mask.numpy(), None if c_cat is None else c_cat.numpy(), None if c_cont is None else c_cont.numpy()


def latent_traversal(run_dir, code: str = "c0", *, steps: int = 7, rows: int = 4, seed: int = 0) -> dict:
    """A grid that varies one code along its range while each row keeps its z and the other codes.

    ``code``: ``"c<j>"`` (values evenly in (-1, 1)) or ``"cat"`` (every category). Returns ``{"code",
    "values", "images" [rows, steps, C, H, W], "masks" [rows, steps, H, W]}``.
    """
    G, _, _, _ = load_generator(run_dir)
    if code == "cat":
        values = list(range(G.info_cat))
    else:
        values = [v + 0.0 for v in np.linspace(-0.9, 0.9, steps).round(3).tolist()]  # + 0.0: no "-0.0" title
    images, masks = [], []
    for v in values:
        kw = {"cat": v} if code == "cat" else {"cont": {int(code[1:]): v}}
        image, mask, _, _ = sample_codes(run_dir, rows, seed=seed, **kw)
        images.append(image)
        masks.append(mask)
    return {"code": code, "values": values, "images": np.stack(images, 1), "masks": np.stack(masks, 1)}


def plot_traversal(traversal: dict):
    """The traversal grid: rows = fixed z, columns = the code's values, masks overlaid."""
    images, masks = traversal["images"], traversal["masks"]
    rows, cols = images.shape[:2]
    import matplotlib.pyplot as plt  # lazily, as medgan.plots: importing the module needs no matplotlib

    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            axes[r, c].imshow(overlay(images[r, c], masks[r, c]))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[0, c].set_title(f"{traversal['code']}={traversal['values'][c]}", fontsize=7)
    fig.suptitle(f"InfoGAN latent traversal of {traversal['code']} (each row: one z)", fontsize=9)
    fig.tight_layout()
    return fig


def lv_area(masks: np.ndarray, labels: dict[str, str]) -> np.ndarray:
    """Per-mask LV area in pixels (``masks [n, H, W]``): the phantom factor the codes are compared with."""
    lv = {name: int(k) for k, name in labels.items()}["LV"]
    return (np.asarray(masks) == lv).reshape(len(masks), -1).sum(1).astype(np.float64)


def demo_infogan(profile: str = "quick", *, data_root="data", runs_root="runs", seed: int = 0,
                 progress: bool | None = False) -> dict:
    """Train the InfoGAN, traverse its codes, correlate each continuous code with the generated LV area.

    Returns ``{"run", "profile", "source", "n", "seconds", "correlation": {"c0": r, ...}, "best_code",
    "best_r", "cat_lv_area": [mean LV area per category], "samples": {"code", "lv_area"} (the scatter's points),
    "traversal": latent_traversal(best code)}``.
    """
    t0 = time.perf_counter()
    real = _real(profile, data_root, seed)
    run_dir = infogan_run(profile, data_root=data_root, runs_root=runs_root, seed=seed, progress=progress)
    n = _size(profile).n_per_label * 4
    _, masks, cat, cont = sample_codes(run_dir, n, seed=seed + 10)
    area = lv_area(masks, real.labels)
    corr = {f"c{j}": pearson(cont[:, j], area) for j in range(cont.shape[1])}
    best = max(corr, key=lambda k: abs(corr[k]) if np.isfinite(corr[k]) else -1.0)
    cat_area = [float(area[cat == k].mean()) if (cat == k).any() else float("nan") for k in range(int(cat.max()) + 1)]
    return {"run": str(run_dir), "profile": profile, "source": real.source, "n": n,
            "correlation": corr, "best_code": best, "best_r": corr[best], "cat_lv_area": cat_area,
            "samples": {"code": cont[:, int(best[1:])].tolist(), "lv_area": area.tolist()},
            "traversal": latent_traversal(run_dir, best, seed=seed), "seconds": round(time.perf_counter() - t0, 1)}


def plot_code_factor(result: dict):
    """Scatter of the best continuous code vs the generated LV area, with Pearson's r."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.scatter(result["samples"]["code"], result["samples"]["lv_area"], s=8, alpha=0.6)
    ax.set_xlabel(f"continuous code {result['best_code']}")
    ax.set_ylabel("LV area of the generated mask (px)")
    ax.set_title(f"InfoGAN: r = {result['best_r']:.2f} ({result['source']} data, profile {result['profile']})",
                 fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["DEMO_SIZES", "conditional_run", "conditional_set", "demo_conditional", "demo_infogan",
           "infogan_run", "latent_traversal", "lv_area", "pearson", "plot_code_factor", "plot_conditional_areas",
           "plot_conditional_samples", "plot_traversal", "sample_codes", "structure_areas"]
