"""SLiver07 phantom: contrast-enhanced abdominal CT in HU.

``liver-orig0NN.mhd/.raw`` (MET_SHORT) and ``liver-seg0NN.mhd/.raw`` (MET_UCHAR, 1 = liver, tumours and vessels
included), written x-fastest so the liver lies on the image's left, as in the real data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from medgan.data.phantoms.common import PHANTOMS, _ellipse, _Grid, _rng, _run_cases, _smooth_noise, write_mhd


class _Tube:
    """A vessel or bowel loop: a circle whose centre drifts linearly along z (mm) from ``z0`` to ``z1``."""

    def __init__(self, x0: float, y0: float, dxdz: float, dydz: float, r: float, z0: float, z1: float):
        self.x0, self.y0, self.dxdz, self.dydz, self.r, self.z0, self.z1 = x0, y0, dxdz, dydz, r, z0, z1

    def at(self, zmm: float) -> tuple[float, float] | None:
        if not self.z0 <= zmm <= self.z1:
            return None
        return self.x0 + self.dxdz * (zmm - self.z0), self.y0 + self.dydz * (zmm - self.z0)


def _sliver_volume(rng: np.random.Generator, matrix: int) -> dict:
    u = rng.uniform
    sp = round(350.0 / matrix * u(0.92, 1.08), 4)
    nz = int(rng.integers(40, 81))
    dz = round(u(2.5, 5.0) if matrix < 384 else u(1.0, 3.0), 1)
    half = (matrix - 1) / 2
    coords = (np.arange(matrix) - half) * sp
    grid = _Grid(coords, coords)  # rows y (anterior at the top), columns x (patient right on the image left)
    x, y = grid.x, grid.y
    zext = (nz - 1) * dz
    # Torso and fixed structures (mm, relative to the FOV centre).
    ty = u(-5, 15)
    ta, tb = u(140, 170), u(100, 125)
    fat_t, mus_t = u(10, 28), u(8, 13)
    inner_a, inner_b = ta - fat_t - mus_t, tb - fat_t - mus_t
    body = _ellipse(x, y, 0, ty, ta, tb) < 1
    wall = _ellipse(x, y, 0, ty, ta - fat_t, tb - fat_t) < 1
    inner_e = _ellipse(x, y, 0, ty, inner_a, inner_b)
    inner = inner_e < 1
    sx, sy = u(-4, 4), ty + tb - u(45, 55)  # vertebral body centre
    aorta = (sx + u(10, 22), sy - u(28, 34), u(9, 12), u(150, 200))
    ivc = (sx - u(22, 32), sy - u(30, 38), u(9, 13), u(110, 140))
    # Liver: a z-block (fraction of the volume), a wedge from the image-left wall tapering to the right.
    lz0, lz1 = u(0.03, 0.15), u(0.85, 0.97)
    liver_hu = u(90, 140)
    L, H = u(175, 215), u(140, 175)
    y0, slope = ty + u(-5, 10), -u(0.15, 0.35)
    kidney_r = (-u(60, 75), sy - u(8, 16), u(0.0, 0.05), u(0.4, 0.5))
    kidney_l = (u(60, 75), sy - u(8, 16), u(0.08, 0.15), u(0.5, 0.6))
    spleen = (u(70, 90), sy - u(25, 45), u(0.5, 0.6), u(0.9, 1.0))
    stomach = (u(30, 60), ty - u(25, 45), u(0.5, 0.62), u(0.9, 1.0))
    gall = (u(0.25, 0.45), u(0.35, 0.5))  # position along the liver's width, z fraction
    bowel = []
    for _ in range(int(rng.integers(8, 16))):  # loops crossing the slices obliquely, in the lower abdomen
        z0 = u(0.0, 0.5) * zext
        bowel.append(_Tube(u(-90, 90), ty + u(-60, 20), u(-0.6, 0.6), u(-0.4, 0.4), u(7, 16), z0, z0 + u(15, 60)))
    bowel_fill = [float(rng.choice([-900.0, 15.0, 60.0])) for _ in bowel]
    rib_angles = np.sort(u(-np.pi, np.pi, size=int(rng.integers(9, 14))))
    fields = [_smooth_noise(rng, grid.shape, 40.0 / sp * s).astype(np.float32) for s in (1.0, 0.4)]

    def zfield(z: int) -> np.ndarray:  # smooth deformation field, varying slowly along z
        a = 0.5 + 0.5 * math.cos(2 * math.pi * z * dz / 120.0)
        return a * fields[0] + (1 - a) * fields[1]

    wall_score = (1 - _ellipse(x, y, 0, ty, inner_a - 2, inner_b - 2)) * 6
    liver = np.zeros((nz, *grid.shape), bool)
    for z in range(nz):
        zn = (z / max(1, nz - 1) - lz0) / (lz1 - lz0)
        if not 0 < zn < 1:
            continue
        q = zn**1.6  # the widest section at zn ~ 0.65: a long taper caudally, a rounded dome cranially
        s = math.sin(math.pi * q) ** (0.45 if q < 0.5 else 0.8)
        left_lobe = float(np.clip((zn - 0.35) / 0.35, 0, 1))
        x_min = -inner_a
        x_tip = x_min + L * s * (0.45 + 0.55 * left_lobe)
        frac = np.clip((x_tip - x) / max(x_tip - x_min, 1e-3), 0, 1)
        h = H * (0.3 + 0.7 * s) * frac**0.6
        yc = y0 + slope * (x - x_min)
        score = np.minimum(1 - np.abs(y - yc) / np.maximum(h / 2, 1e-3), (x_tip - x) / 25.0)
        liver[z] = np.minimum(score, wall_score) + 0.12 * zfield(z) > 0
    tumours = []
    lz_idx = np.flatnonzero(liver.any(axis=(1, 2)))
    for _ in range(int(rng.integers(1, 3))):
        zc = int(lz_idx[int(len(lz_idx) * u(0.35, 0.75))])
        core = ndimage.distance_transform_edt(liver[zc]) * sp > 14
        iy, ix = np.nonzero(core)
        if len(iy) == 0:
            continue
        k = int(rng.integers(len(iy)))
        tumours.append((float(grid.xs[ix[k]]), float(grid.ys[iy[k]]), zc * dz, u(8, 24), u(20, 70)))
    vessels = [_Tube(-inner_a + u(25, 90), y0 + u(-35, 25), u(-0.25, 0.25), u(-0.25, 0.25), u(2.5, 6.0), 0.0, zext)
               for _ in range(int(rng.integers(5, 9)))]
    vessel_hu = liver_hu + u(40, 80)
    noise_sd = u(10, 20)
    ct = np.empty((nz, *grid.shape), np.int16)
    seg = np.zeros((nz, *grid.shape), np.uint8)
    scan = np.hypot(x, y) < half * sp
    table = (np.abs(y - (ty + tb + 12) - 0.0006 * x**2) < 3) & (np.abs(x) < 180)
    base = np.full(grid.shape, -1000.0, np.float32)
    base[body] = -100.0
    base[wall] = 50.0
    for z in range(nz):
        zmm = z * dz
        zf = z / max(1, nz - 1)
        img = base.copy()
        fz = zfield(z)
        img[inner] = np.where(fz[inner] > 0.7, 35.0, -90.0)  # visceral fat with mesenteric strands
        # Ribs: oblique, so they appear at z-dependent angles in the muscle layer.
        if zf > 0.3:
            for ang in rib_angles + 0.6 * zf:
                if math.sin(ang) > 0.6:  # none over the anterior midline
                    continue
                rx, ry = (ta - fat_t - mus_t / 2) * math.cos(ang), ty + (tb - fat_t - mus_t / 2) * math.sin(ang)
                grid.paint(img, 650.0, rx, ry, 7, 4.5, ang + np.pi / 2)
                grid.paint(img, 250.0, rx, ry, 4.5, 2.5, ang + np.pi / 2)
        if zf > 0.75:  # lung bases around the liver's dome
            g = (zf - 0.75) / 0.25
            for side in (-1, 1):
                grid.paint(img, -850.0, side * 75, sy - 30, 55 * g + 5, 45 * g + 5, where=inner)
        # Paraspinal muscles, psoas, spine.
        for side in (-1, 1):
            grid.paint(img, 55.0, sx + side * 30, sy + 38, 24, 18)
            if zf < 0.45:
                grid.paint(img, 50.0, sx + side * 38, sy - 8, 14 * (1 - zf), 12 * (1 - zf) + 3)
        grid.paint(img, 850.0, sx, sy, 19)
        grid.paint(img, 260.0, sx, sy, 16)
        grid.paint(img, 20.0, sx, sy + 27, 8)
        grid.paint(img, 700.0, sx, sy + 44, 5, 12)
        # Kidneys (cortex + medulla), spleen, stomach with an air-fluid level, bowel loops.
        for kx, ky, k0, k1 in (kidney_r, kidney_l):
            if k0 <= zf <= k1:
                g = math.sin(math.pi * (zf - k0) / (k1 - k0)) ** 0.5
                grid.paint(img, 180.0, kx, ky, 28 * g + 2, 38 * g + 2, 0.5 * np.sign(kx))
                grid.paint(img, 110.0, kx, ky, 14 * g + 1, 22 * g + 1, 0.5 * np.sign(kx))
        spx, spy, sp0, sp1 = spleen
        if sp0 <= zf <= sp1:
            g = math.sin(math.pi * (zf - sp0) / (sp1 - sp0)) ** 0.5
            grid.paint(img, liver_hu - 12, spx, spy, 32 * g + 2, 55 * g + 2, -0.6, where=inner)
        stx, sty, st0, st1 = stomach
        if st0 <= zf <= st1:
            g = math.sin(math.pi * (zf - st0) / (st1 - st0)) ** 0.5
            grid.paint(img, 45.0, stx, sty, 45 * g + 6, 32 * g + 6, 0.3)
            grid.paint(img, 15.0, stx, sty, 45 * g + 2, 32 * g + 2, 0.3)
            grid.paint(img, -950.0, stx, sty, 45 * g + 2, 32 * g + 2, 0.3, where=y < sty - 10 * g)
        for tube, fill in zip(bowel, bowel_fill, strict=True):
            c = tube.at(zmm)
            if c is not None:
                grid.paint(img, 40.0, *c, tube.r + 2.5, where=inner)
                grid.paint(img, fill, *c, tube.r, where=inner)
        # Liver with hepatic/portal vessels and hypodense tumours (all part of the liver mask).
        lv = liver[z] & ~grid.mask(sx, sy, 24)
        gx = -inner_a + L * gall[0]
        if abs(zf - (lz0 + gall[1] * (lz1 - lz0))) < 0.08:
            gb = grid.mask(gx, y0 + slope * (gx + inner_a) - 15, 14, 20)
            img[gb] = 10.0
            lv &= ~gb
        kx, ky, k0, k1 = kidney_r
        if k0 <= zf <= k1:
            lv &= ~grid.mask(kx, ky, 32, 42, -0.5)
        ix_, iy_, ir, ihu = ivc
        lv &= ~grid.mask(ix_, iy_, ir)
        img[lv] = liver_hu + 6 * fz[lv]
        for tube in vessels:
            c = tube.at(zmm)
            if c is not None:
                grid.paint(img, vessel_hu, *c, tube.r, where=lv)
        for tx, tyy, tz, tr, thu in tumours:
            rz2 = tr**2 - (zmm - tz) ** 2
            if rz2 > 0:
                grid.paint(img, thu, tx, tyy, math.sqrt(rz2), where=lv)
        ax, ay, ar, ahu = aorta
        grid.paint(img, ahu, ax, ay, ar)
        grid.paint(img, ihu, ix_, iy_, ir)
        img[table] = 150.0  # CT table under the patient
        img = ndimage.gaussian_filter(img, 0.6)
        img += ndimage.gaussian_filter(rng.standard_normal(grid.shape, dtype=np.float32), 0.6) * np.float32(noise_sd * 2.13)
        img[~scan] = -1024.0
        ct[z] = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
        seg[z] = lv
    return {"ct": ct, "seg": seg, "spacing": (sp, sp, dz), "offset": (round(-half * sp, 2), round(-half * sp, 2), -round(u(100, 400), 1))}


@PHANTOMS.register("sliver07")
def write_sliver07(out: Path, n: int, seed: int, *, progress: bool | None = None, matrix: int = 256) -> None:
    """``out/liver-orig0NN.mhd/.raw`` (MET_SHORT, HU) and ``out/liver-seg0NN.mhd/.raw`` (MET_UCHAR), NN from 001."""
    if not 64 <= int(matrix) <= 1024:
        raise ValueError(f"sliver07 phantom: matrix must be in 64..1024, got {matrix}")

    def work(number: int) -> None:
        case = _sliver_volume(_rng(seed, "sliver07", number), int(matrix))
        write_mhd(out / f"liver-orig{number:03d}.mhd", case["ct"], case["spacing"], case["offset"])
        write_mhd(out / f"liver-seg{number:03d}.mhd", case["seg"], case["spacing"], case["offset"])

    _run_cases("sliver07", [(number,) for number in range(1, n + 1)], work, progress)
