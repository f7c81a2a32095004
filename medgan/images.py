"""Image helpers on numpy arrays (no matplotlib): display ranges, label colours, overlays, sample grids.

The trainer writes ``samples-<kimg>.png`` with ``save_grid``; plots and the book reuse the same colours,
so a label has one colour everywhere.
"""

from __future__ import annotations

import math
import os

import numpy as np

from medgan.io import atomic_write

# One colour per label index (0 = background is transparent in overlays).
LABEL_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],  # 1: red   (ACDC RV / liver / optic disc)
        [60, 180, 75],  # 2: green (ACDC MYO)
        [0, 130, 200],  # 3: blue  (ACDC LV)
        [255, 225, 25],
        [145, 30, 180],
    ],
    dtype=np.uint8,
)


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """``mask [H, W]`` int labels -> ``[H, W, 3]`` uint8 RGB (label colours, background black)."""
    mask = np.asarray(mask).astype(np.int64)
    return LABEL_COLOURS[np.clip(mask, 0, len(LABEL_COLOURS) - 1)]


def image_to_display(image: np.ndarray) -> np.ndarray:
    """``image [C, H, W]`` in [-1, 1] -> ``[H, W]`` (gray) or ``[H, W, 3]`` float in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    out = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
    return out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the coloured mask over the image: ``[H, W, 3]`` float in [0, 1]."""
    base = image_to_display(image)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=-1)
    colours = colorize_mask(mask).astype(np.float32) / 255.0
    fg = (np.asarray(mask) > 0)[..., None]
    return np.where(fg, (1 - alpha) * base + alpha * colours, base)



def pairs_grid(images: np.ndarray, masks: np.ndarray, columns: int = 4) -> np.ndarray:
    """``images [n, C, H, W]`` in [-1, 1] + ``masks [n, H, W]`` -> uint8 RGB grid, each pair image|mask."""
    n, _, h, w = images.shape
    rows = max(1, math.ceil(n / columns))
    pad = 2
    cell_w = 2 * w + pad
    grid = np.full((rows * (h + pad) + pad, columns * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        img = image_to_display(images[i])
        img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
        y, x = pad + r * (h + pad), pad + c * (cell_w + pad)
        grid[y : y + h, x : x + w] = (img * 255 + 0.5).astype(np.uint8)
        grid[y : y + h, x + w : x + 2 * w] = colorize_mask(masks[i])
    return grid


def save_grid(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray) -> None:
    """``pairs_grid`` as a PNG, written atomically."""
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(pairs_grid(images, masks)).save(tmp, format="PNG"))
