"""``preview_phantom``: a PNG grid of a few cases of a phantom (or real) raw dataset with their masks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medgan.data.phantoms.common import PHANTOMS, _read_mhd_simple
from medgan.errors import InputNotFoundError, UnknownNameError
from medgan.images import overlay
from medgan.io import atomic_write


def _overlay(gray: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``gray [H, W]`` in [0, 1] + ``labels [H, W]`` -> ``[H, W, 3]``: ``medgan.images.overlay`` (the package's
    label colours, alpha 0.45), which takes an image ``[C, H, W]`` in [-1, 1]."""
    return overlay(2 * gray[None] - 1, labels)


def preview_phantom(dataset: str, raw_dir: str | os.PathLike, png_path: str | os.PathLike, cases: int = 3) -> Path:
    """Save a PNG grid of a few cases of a phantom (or real) raw dataset: images and mask overlays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = Path(raw_dir)
    panels: list[tuple] = []  # (title, RGB image, optional pixel aspect)
    if dataset == "acdc":
        import nibabel as nib

        folders = sorted(raw.glob("database/*/patient*"))[:cases]
        for folder in folders:
            info = dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines())
            for tag, frame in (("ED", int(info["ED"])), ("ES", int(info["ES"]))):
                img = np.asanyarray(nib.load(folder / f"{folder.name}_frame{frame:02d}.nii.gz").dataobj)
                gt = np.asanyarray(nib.load(folder / f"{folder.name}_frame{frame:02d}_gt.nii.gz").dataobj)
                for z in (1, img.shape[2] // 2, img.shape[2] - 2) if tag == "ED" else (img.shape[2] // 2,):
                    gray = np.clip(img[:, :, z].T / np.percentile(img, 99.5), 0, 1)
                    panels.append((f"{folder.name} {info['Group']} {tag} z{z}", _overlay(gray, gt[:, :, z].T)))
                    if tag == "ES" or z == img.shape[2] // 2:
                        panels.append((f"{tag} z{z} image", np.repeat(gray[..., None], 3, -1)))
        ncol = 6
    elif dataset == "sliver07":
        for mhd in sorted(raw.glob("liver-orig*.mhd"))[:cases]:
            ct, spacing = _read_mhd_simple(mhd)
            seg, _ = _read_mhd_simple(mhd.with_name(mhd.name.replace("orig", "seg")))
            zs = np.flatnonzero(seg.any(axis=(1, 2)))
            zmax = int(np.argmax(seg.sum(axis=(1, 2))))
            for z in (zs[len(zs) // 5], zmax):
                gray = np.clip((ct[z] + 160) / 400.0, 0, 1)
                panels.append((f"{mhd.stem} z{z}", np.repeat(gray[..., None], 3, -1)))
                panels.append((f"{mhd.stem} z{z} + liver", _overlay(gray, seg[z])))
            yc = int(np.argmax(seg.sum(axis=(0, 2))))
            cor = np.clip((ct[::-1, yc, :] + 160) / 400.0, 0, 1)
            panels.append((f"{mhd.stem} coronal y{yc}", _overlay(cor, seg[::-1, yc, :]), spacing[2] / spacing[0]))
        ncol = 5
    elif dataset == "idrid":
        for jpg in sorted(raw.glob("A. Segmentation/1. Original Images/*/IDRiD_*.jpg"))[:cases]:
            split = jpg.parent.name
            tif = raw / "A. Segmentation" / "2. All Segmentation Groundtruths" / split / "5. Optic Disc" / f"{jpg.stem}_OD.tif"
            rgb = np.asarray(Image.open(jpg).convert("RGB"), np.float32) / 255
            disc = np.asarray(Image.open(tif).convert("RGB"))[..., 0] > 0
            edge = disc & ~ndimage.binary_erosion(disc, iterations=3)
            over = rgb.copy()
            over[edge] = (0.0, 1.0, 1.0)
            panels.append((jpg.stem, rgb))
            panels.append((f"{jpg.stem} + disc", over))
        ncol = 4
    else:
        raise UnknownNameError(f"unknown phantom {dataset!r}; known: {', '.join(PHANTOMS.names())}")
    if not panels:
        raise InputNotFoundError(f"{raw}: no {dataset} cases found to preview")
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 3 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, im, *aspect) in zip(axes.flat, panels, strict=False):
        ax.imshow(im, interpolation="nearest", aspect=aspect[0] if aspect else "equal")
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{dataset} phantom (not real data)", fontsize=10)
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out
