"""ACDC phantom: cardiac cine MR, short axis.

``database/{training,testing}/patientNNN/`` with ``Info.cfg``, the ED and ES frames and their ground truth
(0 bg, 1 RV, 2 MYO, 3 LV) and the ``_4d`` cine. Five groups (NOR, MINF, DCM, HCM, RV) change the LV/RV size,
wall and ejection fraction. NIfTI arrays are stored ``[x, y, z(, t)]`` with the RV on the image's left.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from medgan.data.phantoms.common import (
    PHANTOMS,
    _ellipse,
    _Grid,
    _rng,
    _run_cases,
    _save_nifti,
    _smooth_noise,
    _split_counts,
)

ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")

# Group -> (LV cavity radius at ED mm, wall thickness mm, LV ejection fraction, RV scale, RV ejection fraction).
_ACDC_GROUP_RANGES = {
    "NOR": ((23, 27), (8, 10), (0.55, 0.70), (0.95, 1.1), (0.45, 0.60)),
    "MINF": ((26, 31), (8, 10), (0.30, 0.45), (0.95, 1.1), (0.40, 0.55)),
    "DCM": ((31, 37), (6, 8), (0.12, 0.30), (1.0, 1.15), (0.30, 0.50)),
    "HCM": ((16, 20), (15, 21), (0.68, 0.80), (0.85, 1.0), (0.50, 0.62)),
    "RV": ((22, 26), (8, 10), (0.50, 0.65), (1.45, 1.8), (0.20, 0.35)),
}


class _Heart:
    """One patient's cardiac geometry (mm) and how it moves between ED (phase 0) and ES (phase 1)."""

    def __init__(self, rng: np.random.Generator, group: str):
        (r0, r1), (t0, t1), (e0, e1), (s0, s1), (f0, f1) = _ACDC_GROUP_RANGES[group]
        u = rng.uniform
        self.group = group
        self.r_ed = u(r0, r1)
        self.thick = u(t0, t1)
        self.ef = u(e0, e1)
        self.rv_scale = u(s0, s1)
        self.rv_ef = u(f0, f1)
        self.center = (u(8, 22), u(-10, 10))  # LV centre relative to the FOV centre
        self.drift = (u(-6, 6), u(-6, 6))  # LV centre moves this much from apex to base (oblique long axis)
        self.harm = (u(0.03, 0.07), u(-np.pi, np.pi), u(0.0, 0.035), u(-np.pi, np.pi), u(0.01, 0.03), u(-np.pi, np.pi))
        self.thick_var = (u(0.04, 0.12), u(-np.pi, np.pi))
        self.fat_phase = u(-np.pi, np.pi, size=3)
        self.rv_angle = u(-0.25, 0.1)
        self.rv_start = u(0.12, 0.32)  # apical slices below this have no RV
        # MINF: a thinned, akinetic sector of the wall (the infarct).
        self.scar = (u(-np.pi, np.pi), u(0.5, 0.9)) if group == "MINF" else None
        self.papillary = (u(-0.9, -0.4), u(1.4, 2.0))  # anterolateral and posteromedial papillary muscles
        # Radius ratio ES/ED from the ejection fraction (volume ~ area x length, ~10 % long-axis shortening).
        self.k = math.sqrt((1 - self.ef) / (1 - 0.1 * self.ef))

    def profile(self, u: float) -> float:
        """LV radius factor along the long axis: a half-ellipsoid, 1 at the base (u=1), small at the apex (u=0)."""
        return math.sqrt(max(0.0, 1.0 - ((u - 1.0) / 1.06) ** 2))

    def geometry(self, x: np.ndarray, y: np.ndarray, u: float) -> dict:
        """Everything about slice ``u`` (0 apex .. 1 base) that does not change over the cycle."""
        f = self.profile(u)
        cx = self.center[0] + self.drift[0] * (u - 0.5)
        cy = self.center[1] + self.drift[1] * (u - 0.5)
        dx, dy = x - cx, y - cy
        theta = np.arctan2(dy, dx)
        a2, p2, a3, p3, a7, p7 = self.harm
        shape = 1 + a2 * np.cos(2 * (theta - p2)) + a3 * np.cos(3 * (theta - p3)) + a7 * np.cos(7 * theta - p7)
        if self.scar is None:
            w = np.zeros_like(theta)
        else:
            d = np.angle(np.exp(1j * (theta - self.scar[0])))
            w = np.clip(1.5 - np.abs(d) / self.scar[1] * 1.5, 0, 1)
        tv, tp = self.thick_var
        r_ed = self.r_ed * f * shape
        thick = self.thick * (0.7 + 0.3 * f) * (1 + tv * np.cos(theta - tp)) * (1 - 0.6 * w)
        p1, p2_, p3_ = self.fat_phase
        fat = np.clip(0.5 + 0.5 * np.cos(theta - p1) + 0.3 * np.cos(2 * theta - p2_) + 0.3 * np.cos(3 * theta - p3_), 0, 1)
        return {"u": u, "f": f, "cx": cx, "cy": cy, "rho": np.hypot(dx, dy), "r_ed": r_ed, "thick": thick,
                "move": (1 - self.k) * (1 - w), "fat": fat}  # the scar does not move (akinetic)

    def render(self, g: dict, x: np.ndarray, y: np.ndarray, phase: float) -> tuple[np.ndarray, ...]:
        """(labels 0 bg/1 RV/2 MYO/3 LV, heart incl. RV wall, papillary muscles, epicardial fat weight)."""
        u, f, cx, cy, rho = g["u"], g["f"], g["cx"], g["cy"], g["rho"]
        r_endo = g["r_ed"] * (1 - phase * g["move"])
        r_epi = np.sqrt(r_endo**2 + (g["r_ed"] + g["thick"]) ** 2 - g["r_ed"] ** 2)  # the wall keeps its area
        labels = np.zeros(x.shape, np.uint8)
        myo = rho < r_epi
        labels[myo] = 2
        labels[rho < r_endo] = 3
        fat = (rho < r_epi + 3.0) & ~myo
        # Papillary muscles: myocardium-like signal inside the cavity, labelled LV as in ACDC.
        pap = np.zeros(x.shape, bool)
        if 0.3 < u < 0.9:
            r_cav = self.r_ed * f * (1 - phase * (1 - self.k))
            for ang in self.papillary:
                px, py = cx + 0.62 * r_cav * math.cos(ang), cy + 0.62 * r_cav * math.sin(ang)
                pap |= (np.hypot(x - px, y - py) < 0.13 * self.r_ed * f * (1 + 0.4 * phase)) & (labels == 3)
        # RV: an ellipse to the image left of the LV with the LV (+ septum) cut out -> a crescent.
        heart = myo.copy()
        if u > self.rv_start:
            fr = math.sqrt((u - self.rv_start) / (1 - self.rv_start))
            r_out = (self.r_ed + self.thick) * (0.75 + 0.25 * f)
            # Crescent: an ellipse whose septal end lies past the LV's edge, so the LV bites a concave septum
            # out of it and its tips wrap the anterior and inferior walls. `depth` is the free wall's distance
            # from the septum; it shrinks at ES (the free wall moves in).
            depth = r_out * 0.55 * self.rv_scale * (0.45 + 0.55 * fr) * (1 - 0.8 * self.rv_ef * phase)
            b = r_out * (0.85 + 0.4 * self.rv_scale) * (0.6 + 0.4 * fr)
            b_t = b * (1 - 0.1 * self.rv_ef * phase)
            a_t = (depth + 1.15 * r_out) / 2
            ex, ey = cx + 0.15 * r_out - a_t, cy - 0.1 * b
            e = _ellipse(x, y, ex, ey, a_t, b_t, self.rv_angle)
            rv = (e < 1) & ~myo
            labels[rv] = 1
            wall = (e < 1 + 3.0 / a_t) & ~rv & ~myo
            heart |= rv | wall
            fat |= (e < 1 + 6.0 / a_t) & ~heart
        fat &= ~heart
        return labels, heart, pap, np.where(fat, g["fat"], 0.0)


def _acdc_background(rng: np.random.Generator, grid: _Grid, heart: _Heart, ed_hearts: list[np.ndarray]) -> list[np.ndarray]:
    """Per-slice MR signal of everything but the heart: body, fat, chest wall, lungs, liver, spine, aorta.

    ``ed_hearts``: the heart (with its epicardial fat) at ED per slice; the lungs stop a few mm from it.
    """
    u = rng.uniform
    x, y = grid.x, grid.y
    hx, hy = heart.center
    bx, by = hx - u(15, 30), hy + u(35, 55)
    ba, bb, bang = u(145, 190), u(100, 135), u(-0.12, 0.12)
    fat_t, mus_t = u(6, 18), u(8, 14)
    lungs = [(hx - u(70, 90), hy + u(15, 35), u(55, 70), u(85, 105), u(-0.3, 0.3)),
             (hx + u(65, 85), hy + u(15, 35), u(50, 62), u(85, 105), u(-0.3, 0.3))]
    gap = u(4, 12)  # mediastinal tissue between heart and lungs
    spine = (bx + u(-5, 5), by + bb - u(40, 50))
    patches = _smooth_noise(rng, grid.shape, 6.0 / grid.sp)
    lung_tex = _smooth_noise(rng, grid.shape, 2.5 / grid.sp)
    body = _ellipse(x, y, bx, by, ba, bb, bang)
    inner = _ellipse(x, y, bx, by, ba - fat_t, bb - fat_t, bang) < 1
    thorax = _ellipse(x, y, bx, by, ba - fat_t - mus_t, bb - fat_t - mus_t, bang) < 1
    filler = np.where(patches > 1.3, 650.0, 240.0).astype(np.float32)  # mediastinal tissue, a little fat
    nz = len(ed_hearts)
    out = []
    for z, ed_heart in enumerate(ed_hearts):
        uz = (z + 0.5) / nz
        img = np.full(grid.shape, 6.0, np.float32)  # air
        img[body < 1] = 900.0  # subcutaneous fat, bright in bSSFP
        img[inner] = 170.0  # chest-wall muscle
        img[thorax] = filler[thorax]
        near_heart = ndimage.distance_transform_edt(~ed_heart, sampling=grid.sp) < gap + 4 * patches.clip(0, 1)
        near_heart |= grid.mask(spine[0], spine[1] - 20, 38, 42)  # posterior mediastinum: spine, aorta
        for lx, ly, la, lb, lang in lungs:
            lung = thorax & (_ellipse(x, y, lx, ly, la * (0.85 + 0.15 * uz), lb, lang) < 1) & ~near_heart
            img[lung] = 25.0 + 25.0 * np.clip(lung_tex[lung] - 1.2, 0, None)  # dark, a few vessels
        if uz < 0.4:  # apical slices cut through the liver under the diaphragm
            g = (0.4 - uz) / 0.4
            grid.paint(img, 190.0, hx - 55, hy + 85, 95 * g + 20, 60 * g + 10, 0.3, where=thorax & ~near_heart)
        sx, sy = spine
        grid.paint(img, 90.0, sx, sy, 17)  # cortical bone: dark
        grid.paint(img, 380.0, sx, sy, 14)  # marrow
        grid.paint(img, 850.0, sx, sy + 27, 7)  # CSF: bright
        grid.paint(img, 780.0, sx + 24, sy - 28, 11)  # descending aorta
        grid.paint(img, 300.0, bx, by - bb + fat_t + 10, 14, 7)  # sternum
        out.append(img)
    return out


def _acdc_patient(rng: np.random.Generator, group: str) -> dict:
    u = rng.uniform
    nx, ny = int(rng.integers(160, 221)), int(rng.integers(160, 221))
    sp = round(u(1.2, 1.8), 4)
    nz = int(rng.integers(6, 13))
    dz = float(np.clip(round(u(65, 100) / nz * 2) / 2, 5.0, 10.0))
    n_frames = int(rng.integers(12, 31))
    es = int(np.clip(round(n_frames * u(0.3, 0.42)) + 1, 3, n_frames - 1))
    heart = _Heart(rng, group)
    grid = _Grid((np.arange(nx) - (nx - 1) / 2) * sp, (np.arange(ny) - (ny - 1) / 2) * sp)
    x, y = grid.x, grid.y
    geos = [heart.geometry(x, y, (z + 0.5) / nz) for z in range(nz)]
    ed_hearts = []
    for geo in geos:
        labels, outer, _, fat = heart.render(geo, x, y, 0.0)
        ed_hearts.append(outer | (labels > 0) | (fat > 0))
    background = _acdc_background(rng, grid, heart, ed_hearts)
    blood_lv, blood_rv, myo_sig, fat_sig = u(720, 900), u(650, 840), u(140, 210), u(650, 820)
    # Phase through the cycle: ED (frame 1) -> ES (frame `es`) -> back toward ED.
    t = np.arange(n_frames)
    e = es - 1
    phase = np.where(t <= e, 0.5 * (1 - np.cos(np.pi * t / e)), 0.5 * (1 + np.cos(np.pi * (t - e) / (n_frames - e))))
    cine = np.empty((n_frames, nz, ny, nx), np.float32)  # [T, Z, Y, X]; NIfTI wants [X, Y, Z, T]
    gt = {0: np.zeros((nz, ny, nx), np.uint8), e: np.zeros((nz, ny, nx), np.uint8)}
    for z, geo in enumerate(geos):
        for ti, p in enumerate(phase):
            labels, outer, pap, fat = heart.render(geo, x, y, float(p))
            img = background[z].copy()
            img += fat * (fat_sig - img)  # patchy epicardial fat just outside the heart
            img[outer] = myo_sig
            img[labels == 1] = blood_rv
            img[labels == 3] = blood_lv
            img[pap] = myo_sig
            cine[ti, z] = img
            if ti in gt:
                gt[ti][z] = labels
    # Acquisition: partial volume blur, coil bias field, gain, Rician noise.
    cine = ndimage.gaussian_filter(cine, sigma=(0, 0, 0.7, 0.7))
    xn, yn = x / np.abs(grid.xs).max(), y / np.abs(grid.ys).max()
    c1, c2, c3 = u(-0.35, 0.35), u(-0.45, -0.05), u(-0.5, -0.1)
    bias = np.exp(c1 * xn + c2 * yn + c3 * (xn**2 + yn**2)).astype(np.float32)
    bias /= bias[np.hypot(x - heart.center[0], y - heart.center[1]) < 40].mean()
    tex = 1 + 0.06 * _smooth_noise(rng, grid.shape, 5.0 / sp)  # tissue / flow inhomogeneity
    cine *= (bias * tex).astype(np.float32) * np.float32(u(0.85, 1.1))
    sigma = np.float32(u(10, 22))
    # Rician magnitude |signal + sigma (n1 + i n2)|, in place: the cine is the biggest array we make.
    real = rng.standard_normal(cine.shape, dtype=np.float32)
    real *= sigma
    real += cine
    np.square(real, out=real)
    imag = rng.standard_normal(cine.shape, dtype=np.float32, out=cine)
    imag *= sigma
    np.square(imag, out=imag)
    real += imag
    np.sqrt(real, out=real)
    np.rint(real, out=real)
    cine = np.clip(real, 0, 32767, out=real).astype(np.int16)
    del real, imag
    return {
        "cine": cine.transpose(3, 2, 1, 0), "gt_ed": gt[0].transpose(2, 1, 0), "gt_es": gt[e].transpose(2, 1, 0),
        "es": es, "n_frames": n_frames, "group": group,
        "spacing": (sp, sp, dz), "dt": round(u(800, 1100) / n_frames, 2),
        "height": float(round(u(150, 195))), "weight": float(round(u(50, 110))),
    }


def _write_acdc_patient(folder: Path, name: str, case: dict) -> None:
    folder.mkdir(parents=True)
    es, nf = case["es"], case["n_frames"]
    (folder / "Info.cfg").write_text(
        f"ED: 1\nES: {es}\nGroup: {case['group']}\nHeight: {case['height']:.1f}\n"
        f"NbFrame: {nf}\nWeight: {case['weight']:.1f}\n"
    )
    sp = case["spacing"]
    cine = case["cine"]
    for frame, gt in ((1, case["gt_ed"]), (es, case["gt_es"])):
        _save_nifti(folder / f"{name}_frame{frame:02d}.nii.gz", cine[..., frame - 1], sp)
        _save_nifti(folder / f"{name}_frame{frame:02d}_gt.nii.gz", gt, sp)
    _save_nifti(folder / f"{name}_4d.nii.gz", cine, (*sp, case["dt"]))


@PHANTOMS.register("acdc")
def write_acdc(out: Path, n: int, seed: int, *, progress: bool | None = None) -> None:
    """``out/database/{training,testing}/patientNNN/``: training 001.., testing 101.., groups round-robin."""
    n_train, n_test = _split_counts(n)
    jobs = [("training", 1 + i, ACDC_GROUPS[i % 5]) for i in range(n_train)]
    jobs += [("testing", 101 + i, ACDC_GROUPS[i % 5]) for i in range(n_test)]

    def work(split: str, number: int, group: str) -> None:
        name = f"patient{number:03d}"
        case = _acdc_patient(_rng(seed, "acdc", number), group)
        _write_acdc_patient(out / "database" / split / name, name, case)

    _run_cases("acdc", jobs, work, progress)
