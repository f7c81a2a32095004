"""IDRiD phantom: colour fundus photographs (JPEG) with optic-disc masks (TIF, disc in the red channel)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from medgan.data.phantoms.common import PHANTOMS, _ellipse, _rng, _run_cases, _smooth_noise, _split_counts

IDRID_IMAGES = ("A. Segmentation", "1. Original Images")
IDRID_MASKS = ("A. Segmentation", "2. All Segmentation Groundtruths")
IDRID_SPLITS = {"train": "a. Training Set", "test": "b. Testing Set"}


def _vessel_tree(rng: np.random.Generator, start: tuple[float, float], angle: float, width: float, bend: float,
                 step: float, inside: Callable[[float, float], bool],
                 avoid: tuple[float, float, float]) -> list[tuple[float, float, float, float, float]]:
    """Grow a branching vessel from ``start``: a list of segments (x0, y0, x1, y1, width).

    The direction changes smoothly (a random walk on the curvature) on top of a bend that fades with distance,
    so the arcades curve around the macula and then run straight toward the periphery. Vessels heading into
    the circle ``avoid`` (x, y, radius: the macula) are turned away from its centre.
    """
    ax, ay, ar = avoid
    segs = []
    stack = [(start[0], start[1], angle, width, bend, 0)]
    min_w = max(0.8, step / 7)
    while stack:
        x0, y0, a, w, b, depth = stack.pop()
        curv = 0.0
        for _ in range(600):
            curv = 0.85 * curv + rng.normal(0, 0.012)
            a += b + curv
            b *= 0.975
            vx, vy = x0 - ax, y0 - ay
            dist = math.hypot(vx, vy)
            if dist < ar and vx * math.cos(a) + vy * math.sin(a) < 0:  # heading inward: turn toward outward
                a += 0.12 * (1 - dist / ar) * math.copysign(1.0, math.cos(a) * vy - math.sin(a) * vx)
            x1, y1 = x0 + step * math.cos(a), y0 + step * math.sin(a)
            if not inside(x1, y1):
                break
            segs.append((x0, y0, x1, y1, w))
            x0, y0 = x1, y1
            w *= 0.986
            if w < min_w:
                break
            cw = w * rng.uniform(0.45, 0.75)
            if depth < 4 and cw > 2 * min_w and rng.random() < 0.06:
                side = 1 if rng.random() < 0.5 else -1
                stack.append((x0, y0, a + side * rng.uniform(0.5, 1.1), cw, side * rng.uniform(0, 0.015), depth + 1))
                w *= 0.94
    return segs


def _idrid_image(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    u = rng.uniform
    k = width / 1072.0
    cx, cy = width / 2 + u(-0.01, 0.01) * width, height / 2 + u(-0.015, 0.015) * height
    R = width * u(0.395, 0.42)
    dd = 2 * R * u(0.125, 0.15)  # optic disc diameter
    side = 1 if rng.random() < 0.5 else -1  # +1: macula to the right of the disc (left/right eye)
    mx, my = cx + u(-0.03, 0.03) * width, cy + u(-0.02, 0.05) * height
    dx, dy = mx - side * 2.5 * dd * u(0.95, 1.08), my - u(0.0, 0.3) * dd
    dist = math.hypot(dx - cx, dy - cy)
    if dist + 0.6 * dd > 0.9 * R:  # keep the whole disc inside the fundus circle
        f = (0.9 * R - 0.6 * dd) / dist
        dx, dy = cx + (dx - cx) * f, cy + (dy - cy) * f
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def window(px: float, py: float, r: float) -> tuple[slice, slice]:  # local work for local features
        return (slice(max(0, int(py - r)), max(0, min(height, int(py + r) + 2))),
                slice(max(0, int(px - r)), max(0, min(width, int(px + r) + 2))))

    r = np.hypot(xx - cx, yy - cy) / R
    fundus = np.clip((1 - r) * R / (1.5 * k) + 0.5, 0, 1)  # soft 1.5 px edge
    # Background: orange-red with choroidal texture, a darker periphery and a darker macula.
    base = np.array([u(0.72, 0.9), u(0.30, 0.42), u(0.10, 0.18)], np.float32)
    tex = _smooth_noise(rng, (height, width), 10 * k)
    tex2 = _smooth_noise(rng, (height, width), 90 * k)
    img = base[None, None, :] * (1 + 0.025 * tex[..., None] + 0.045 * tex2[..., None])
    img *= np.clip(1 - u(0.45, 0.65) * r**2.5, 0.15, 1)[..., None]  # vignetting
    sl = window(mx, my, 2.5 * dd)
    macula = 1 - u(0.35, 0.5) * np.exp(-((xx[sl] - mx) ** 2 + (yy[sl] - my) ** 2) / (2 * (0.55 * dd) ** 2))
    img[sl] *= np.stack([macula**0.7, macula, macula], -1)
    sl = window(dx, dy, 3 * dd)
    glow = np.exp(-((xx[sl] - dx) ** 2 + (yy[sl] - dy) ** 2) / (2 * (0.9 * dd) ** 2))
    img[sl] += 0.12 * glow[..., None] * np.array([1.0, 0.7, 0.4], np.float32)
    # Optic disc: yellow-white ellipse, brighter cup, soft rim.
    da, db = dd / 2 * u(0.92, 1.0), dd / 2 * u(1.0, 1.1)
    sl = window(dx, dy, 0.8 * dd)
    ed = _ellipse(xx[sl], yy[sl], dx, dy, da, db, u(-0.2, 0.2))
    alpha = np.clip((1 - ed) / 0.12 + 0.5, 0, 1)[..., None]
    disc_col = np.array([1.0, u(0.78, 0.9), u(0.45, 0.6)], np.float32) * (1 + 0.05 * tex[sl][..., None])
    img[sl] = img[sl] * (1 - alpha) + alpha * disc_col
    cup = np.clip((u(0.35, 0.55) - _ellipse(xx[sl], yy[sl], dx + side * 0.08 * dd, dy, da, db)) / 0.15, 0, 1)[..., None]
    img[sl] = img[sl] * (1 - 0.8 * cup) + 0.8 * cup * np.array([1.0, 0.97, 0.85], np.float32)
    mask = np.zeros((height, width), bool)
    mask[sl] = ed < 1
    # Vessels: arcades curving around the macula, nasal branches, arteries lighter than veins.
    step = 6 * k

    def inside(px: float, py: float) -> bool:  # in the fundus and out of the foveal avascular zone
        return math.hypot(px - cx, py - cy) < 0.985 * R and math.hypot(px - mx, py - my) > 0.3 * dd

    avoid = (mx, my, 1.3 * dd)
    trees = {"vein": [], "artery": []}
    for kind, w0, da0 in (("vein", 8.5 * k, 0.12), ("artery", 6.5 * k, -0.12)):
        for up in (-1, 1):  # superior / inferior
            a_t = math.atan2(up * 1.0, side * u(0.25, 0.45)) + da0 * up
            trees[kind] += _vessel_tree(rng, (dx, dy), a_t, w0, -up * side * u(0.025, 0.035), step, inside, avoid)
            a_n = math.atan2(up * u(0.3, 0.9), -side * 1.0) + da0
            trees[kind] += _vessel_tree(rng, (dx, dy), a_n, w0 * 0.75, rng.normal(0, 0.01), step, inside, avoid)
    for kind, tint in (("vein", (0.42, 0.2, 0.28)), ("artery", (0.8, 0.5, 0.55))):
        # Drawn at twice the size and box-filtered down: smooth, anti-aliased edges on thin vessels.
        layer = Image.new("L", (2 * width, 2 * height), 0)
        draw = ImageDraw.Draw(layer)
        for x0, y0, x1, y1, w in trees[kind]:
            w2 = 2 * w
            if w2 <= 3:
                draw.line((2 * x0, 2 * y0, 2 * x1, 2 * y1), fill=255, width=max(1, round(w2)))
                continue
            n_dabs = max(1, math.ceil(2 * math.hypot(x1 - x0, y1 - y0) / (w2 / 4)))
            for i in range(1, n_dabs + 1):  # a round brush: smooth edges and joints
                px, py = 2 * (x0 + (x1 - x0) * i / n_dabs), 2 * (y0 + (y1 - y0) * i / n_dabs)
                draw.ellipse((px - w2 / 2, py - w2 / 2, px + w2 / 2, py + w2 / 2), fill=255)
        layer = layer.resize((width, height), Image.Resampling.BOX)
        v = ndimage.gaussian_filter(np.asarray(layer, np.float32) / 255.0, 0.5 * k)[..., None]
        img *= 1 - v * (1 - np.array(tint, np.float32))
    # Lesions in some eyes: hard exudates (yellow dots) near the macula, haemorrhages (dark red blots).
    if rng.random() < 0.5:
        lesion = np.zeros((height, width), np.float32)
        ex, ey = mx + u(-1, 1) * dd, my + u(-1, 1) * dd
        for _ in range(int(rng.integers(5, 40))):
            px, py = ex + rng.normal(0, 0.7 * dd), ey + rng.normal(0, 0.5 * dd)
            rr = u(1.2, 4) * k
            sl = window(px, py, 4 * rr)
            blob = np.exp(-(((xx[sl] - px) ** 2 + (yy[sl] - py) ** 2) / (2 * rr**2)) ** 1.5)
            lesion[sl] = np.maximum(lesion[sl], blob)
        img = img * (1 - lesion[..., None]) + lesion[..., None] * np.array([1.0, 0.88, 0.45], np.float32)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(2, 9))):
            ang, rad = u(0, 2 * np.pi), u(0.2, 0.85) * R
            px, py = cx + rad * math.cos(ang), cy + rad * math.sin(ang)
            rr = u(3, 10) * k
            sl = window(px, py, 3 * rr)
            blot = np.exp(-(((xx[sl] - px) ** 2 + (yy[sl] - py) ** 2) / (2 * rr**2)) ** 2)[..., None]
            img[sl] *= 1 - 0.65 * blot * (1 - np.array([0.55, 0.2, 0.25], np.float32))
    img *= u(0.9, 1.1)
    img = img * fundus[..., None] + np.float32(0.008) * rng.standard_normal(img.shape, dtype=np.float32)
    rgb = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    mask_rgb = np.zeros((height, width, 3), np.uint8)
    mask_rgb[..., 0] = np.where(mask, 255, 0)
    return rgb, mask_rgb


@PHANTOMS.register("idrid")
def write_idrid(out: Path, n: int, seed: int, *, progress: bool | None = None, width: int = 1072, height: int = 712) -> None:
    """``A. Segmentation/...`` jpgs and ``5. Optic Disc`` tifs: train IDRiD_01.., test IDRiD_55.."""
    if not (64 <= int(width) <= 8192 and 64 <= int(height) <= 8192 and height <= width):
        raise ValueError(f"idrid phantom: width x height must be within 64..8192 and landscape, got {width}x{height}")
    n_train, n_test = _split_counts(n)
    jobs = [("train", 1 + i) for i in range(n_train)] + [("test", 55 + i) for i in range(n_test)]
    for split in IDRID_SPLITS.values():
        out.joinpath(*IDRID_IMAGES, split).mkdir(parents=True, exist_ok=True)
        out.joinpath(*IDRID_MASKS, split, "5. Optic Disc").mkdir(parents=True, exist_ok=True)

    def work(split: str, number: int) -> None:
        rgb, mask = _idrid_image(_rng(seed, "idrid", number), int(width), int(height))
        Image.fromarray(rgb).save(out.joinpath(*IDRID_IMAGES, IDRID_SPLITS[split], f"IDRiD_{number:02d}.jpg"), quality=90)
        Image.fromarray(mask).save(out.joinpath(*IDRID_MASKS, IDRID_SPLITS[split], "5. Optic Disc", f"IDRiD_{number:02d}_OD.tif"),
                                   compression="tiff_lzw")

    _run_cases("idrid", jobs, work, progress)
