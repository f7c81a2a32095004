"""Seeded procedural phantoms written in the *real* raw layouts of ACDC, SLiver07 and IDRiD.

The phantoms exist so that every test, the ``quick`` profile and CI run the real loaders
(``medgan.data.formats``) and converters on data that looks like the real thing without
downloading it. They are not the real data: a figure made from them must say "phantom".

* ``acdc``: cardiac cine MR, short axis. ``database/{training,testing}/patientNNN/`` with
  ``Info.cfg``, the ED and ES frames and their ground truth (0 bg, 1 RV, 2 MYO, 3 LV) and the
  ``_4d`` cine. Five groups (NOR, MINF, DCM, HCM, RV) change the LV/RV size, wall and ejection fraction.
* ``sliver07``: abdominal CT in HU, ``liver-orig0NN.mhd/.raw`` (MET_SHORT) and
  ``liver-seg0NN.mhd/.raw`` (MET_UCHAR, 1 = liver, tumours and vessels included).
* ``idrid``: colour fundus JPEGs and optic-disc TIF masks (disc in the red channel).

Orientation: in every dataset the image's column axis is x (left -> right) and its row axis is y
(anterior/top -> posterior/bottom). NIfTI arrays are stored ``[x, y, z(, t)]``, MetaImage ``.raw``
files x-fastest, so ``formats`` (which transposes NIfTI to ``[z, y, x]``) shows the RV and the liver
on the image's left, as in the real data.

Every case draws from its own ``SeedSequence([seed, dataset, case number])``: a case is the same
whatever ``patients`` is, and the same ``(dataset, patients, seed)`` gives byte-identical files.
Besides the real layout, the raw root gets a ``PHANTOM.txt`` marker, which ``prepare`` reads to record
``source: phantom``. CLI twin: ``medgan data phantom {acdc,sliver07,idrid} --out RAW_DIR``;
``preview_phantom`` draws a PNG grid of a few cases with their masks.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from medgan.registry import Registry

PHANTOMS: Registry[Callable[..., None]] = Registry("phantom")
DEFAULT_PATIENTS = {"acdc": 12, "sliver07": 4, "idrid": 10}
REAL_COUNTS = {"acdc": 150, "sliver07": 20, "idrid": 81}
ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
_DATASET_CODE = {"acdc": 1, "sliver07": 2, "idrid": 3}


def write_phantom(
    dataset: str,
    out_dir: str | os.PathLike,
    *,
    patients: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **size_kw,
) -> Path:
    """Write ``patients`` phantom cases of ``dataset`` into ``out_dir`` in the real raw layout.

    ``size_kw`` reaches the dataset's writer: ``acdc`` has none, ``sliver07`` takes ``matrix``
    (256 default, 512 = real size), ``idrid`` takes ``width``/``height`` (1072x712 default,
    4288x2848 = real size). The files are written into a temporary sibling directory that is renamed
    to ``out_dir`` at the end, so a failure never leaves a half-written dataset behind.
    Returns ``out_dir`` as a ``Path``.
    """
    writer = PHANTOMS[dataset]
    n = DEFAULT_PATIENTS[dataset] if patients is None else int(patients)
    if not 1 <= n <= REAL_COUNTS[dataset]:
        raise ValueError(f"{dataset} phantom: patients must be in 1..{REAL_COUNTS[dataset]} (the real count), got {n}")
    if int(seed) < 0:
        raise ValueError(f"phantom seed must be >= 0, got {seed}")
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out}: output directory exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        writer(tmp, n, int(seed), progress=progress, **size_kw)
        # the marker medgan.data.prepare reads to record source: "phantom" in dataset.json
        (tmp / "PHANTOM.txt").write_text(f"medgan phantom: dataset={dataset} patients={n} seed={seed}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _rng(seed: int, dataset: str, case: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _DATASET_CODE[dataset], case]))


def _split_counts(n: int) -> tuple[int, int]:
    """The real datasets split 2:1 (ACDC 100/50, IDRiD 54/27); phantoms keep that ratio."""
    n_train = round(2 * n / 3)
    return n_train, n - n_train


def _run_cases(dataset: str, jobs: list[tuple], work: Callable[..., None], progress: bool) -> None:
    """Run ``work(*job)`` for every case, two at a time: numpy, zlib and Pillow release the GIL, and every case
    has its own random stream, so the files do not depend on the order in which the threads finish."""
    workers = max(1, min(2, os.cpu_count() or 1, len(jobs)))
    with tqdm(total=len(jobs), desc=f"phantom {dataset}", unit="case", disable=None if progress else True) as bar:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, *job) for job in jobs]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std 2-D random field ``[H, W]`` float32 with features about ``scale`` pixels across."""
    from PIL import Image

    h, w = shape
    scale = max(float(scale), 1.0)
    ch, cw = math.ceil(h / scale) + 2, math.ceil(w / scale) + 2
    coarse = rng.standard_normal((ch, cw), dtype=np.float32)
    size = (math.ceil(cw * scale), math.ceil(ch * scale))  # >= (w, h) + one cell: crop the edges away
    big = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC))
    big = big[:h, :w] - big[:h, :w].mean()
    return big / (big.std() + 1e-12)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    """Normalised ellipse radius: < 1 inside. ``angle`` in radians."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    u = (c * dx + s * dy) / max(a, 1e-6)
    v = (-s * dx + c * dy) / max(b, 1e-6)
    return np.sqrt(u * u + v * v)



class _Grid:
    """A regular 2-D grid in mm, arrays ``[rows=y, cols=x]``, that paints shapes inside their bounding box only."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray):
        self.xs = xs.astype(np.float32)
        self.ys = ys.astype(np.float32)
        self.sp = float(xs[1] - xs[0])
        self.shape = (len(ys), len(xs))
        self.y, self.x = np.meshgrid(self.ys, self.xs, indexing="ij")

    def box(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        c0 = max(0, math.floor((cx - r - self.xs[0]) / self.sp))
        c1 = min(self.shape[1], math.ceil((cx + r - self.xs[0]) / self.sp) + 1)
        r0 = max(0, math.floor((cy - r - self.ys[0]) / self.sp))
        r1 = min(self.shape[0], math.ceil((cy + r - self.ys[0]) / self.sp) + 1)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> tuple[tuple[slice, slice], np.ndarray]:
        """(window, normalised ellipse radius inside the window)."""
        sl = self.box(cx, cy, max(a, b))
        return sl, _ellipse(self.xs[sl[1]][None, :], self.ys[sl[0]][:, None], cx, cy, a, b, angle)

    def mask(self, cx: float, cy: float, a: float, b: float | None = None, angle: float = 0.0) -> np.ndarray:
        out = np.zeros(self.shape, bool)
        sl, e = self.ellipse(cx, cy, a, a if b is None else b, angle)
        out[sl] = e < 1
        return out

    def paint(self, img: np.ndarray, value: float, cx: float, cy: float, a: float, b: float | None = None,
              angle: float = 0.0, where: np.ndarray | None = None) -> None:
        sl, e = self.ellipse(cx, cy, a, a if b is None else b, angle)
        m = e < 1
        if where is not None:
            m &= where[sl]
        img[sl][m] = value


# ----------------------------------------------------------------------------------------------------------------
# ACDC: cardiac cine MR, short axis
# ----------------------------------------------------------------------------------------------------------------

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


def _save_nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...]) -> None:
    import nibabel as nib

    affine = np.diag([zooms[0], zooms[1], zooms[2], 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "msec")
    # nibabel writes .nii.gz with a fixed gzip mtime and no file name: byte-identical reruns.
    nib.save(img, str(path))


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
def write_acdc(out: Path, n: int, seed: int, *, progress: bool = True) -> None:
    """``out/database/{training,testing}/patientNNN/``: training 001.., testing 101.., groups round-robin."""
    n_train, n_test = _split_counts(n)
    jobs = [("training", 1 + i, ACDC_GROUPS[i % 5]) for i in range(n_train)]
    jobs += [("testing", 101 + i, ACDC_GROUPS[i % 5]) for i in range(n_test)]

    def work(split: str, number: int, group: str) -> None:
        name = f"patient{number:03d}"
        case = _acdc_patient(_rng(seed, "acdc", number), group)
        _write_acdc_patient(out / "database" / split / name, name, case)

    _run_cases("acdc", jobs, work, progress)


# ----------------------------------------------------------------------------------------------------------------
# SLiver07: contrast-enhanced abdominal CT in HU
# ----------------------------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return format(float(v), ".10g")


def write_mhd(mhd_path: Path, volume: np.ndarray, spacing_xyz: tuple[float, float, float],
              offset_xyz: tuple[float, float, float]) -> None:
    """Write ``volume`` ``[Z, Y, X]`` (int16 or uint8) as a MetaImage header + little-endian ``.raw``, SLiver07 style."""
    element = {np.dtype(np.int16): ("MET_SHORT", "<i2"), np.dtype(np.uint8): ("MET_UCHAR", "u1")}[volume.dtype]
    raw_path = mhd_path.with_suffix(".raw")
    nz, ny, nx = volume.shape
    header = (
        "ObjectType = Image\n"
        "NDims = 3\n"
        "BinaryData = True\n"
        "BinaryDataByteOrderMSB = False\n"
        "CompressedData = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"Offset = {' '.join(_fmt(v) for v in offset_xyz)}\n"
        "CenterOfRotation = 0 0 0\n"
        f"ElementSpacing = {' '.join(_fmt(v) for v in spacing_xyz)}\n"
        f"DimSize = {nx} {ny} {nz}\n"
        f"ElementType = {element[0]}\n"
        f"ElementDataFile = {raw_path.name}\n"
    )
    mhd_path.write_text(header)
    raw_path.write_bytes(np.ascontiguousarray(volume, dtype=element[1]).tobytes())


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
def write_sliver07(out: Path, n: int, seed: int, *, progress: bool = True, matrix: int = 256) -> None:
    """``out/liver-orig0NN.mhd/.raw`` (MET_SHORT, HU) and ``out/liver-seg0NN.mhd/.raw`` (MET_UCHAR), NN from 001."""
    if not 64 <= int(matrix) <= 1024:
        raise ValueError(f"sliver07 phantom: matrix must be in 64..1024, got {matrix}")

    def work(number: int) -> None:
        case = _sliver_volume(_rng(seed, "sliver07", number), int(matrix))
        write_mhd(out / f"liver-orig{number:03d}.mhd", case["ct"], case["spacing"], case["offset"])
        write_mhd(out / f"liver-seg{number:03d}.mhd", case["seg"], case["spacing"], case["offset"])

    _run_cases("sliver07", [(number,) for number in range(1, n + 1)], work, progress)


# ----------------------------------------------------------------------------------------------------------------
# IDRiD: colour fundus photographs with optic-disc masks
# ----------------------------------------------------------------------------------------------------------------

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
    from PIL import Image, ImageDraw

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
def write_idrid(out: Path, n: int, seed: int, *, progress: bool = True, width: int = 1072, height: int = 712) -> None:
    """``A. Segmentation/...`` jpgs and ``5. Optic Disc`` tifs: train IDRiD_01.., test IDRiD_55.."""
    from PIL import Image

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


# ----------------------------------------------------------------------------------------------------------------
# Preview
# ----------------------------------------------------------------------------------------------------------------

_LABEL_COLOURS = np.array([[0, 0, 0], [0.2, 0.5, 1.0], [0.2, 0.9, 0.3], [1.0, 0.25, 0.2]])


def _read_mhd_simple(path: Path) -> tuple[np.ndarray, list[float]]:
    """Minimal MetaImage reader for the preview (the real reader lives in ``medgan.data.formats``)."""
    fields = dict(line.split(" = ", 1) for line in path.read_text().splitlines() if " = " in line)
    nx, ny, nz = (int(v) for v in fields["DimSize"].split())
    dtype = {"MET_SHORT": "<i2", "MET_UCHAR": "u1"}[fields["ElementType"]]
    volume = np.fromfile(path.parent / fields["ElementDataFile"], dtype=dtype).reshape(nz, ny, nx)
    return volume, [float(v) for v in fields["ElementSpacing"].split()]


def _overlay(gray: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, -1)
    colour = _LABEL_COLOURS[np.clip(labels, 0, 3)]
    on = labels[..., None] > 0
    return np.where(on, (1 - alpha) * rgb + alpha * colour, rgb)


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
                panels.append((f"{mhd.stem} z{z} + liver", _overlay(gray, seg[z] * 3)))
            yc = int(np.argmax(seg.sum(axis=(0, 2))))
            cor = np.clip((ct[::-1, yc, :] + 160) / 400.0, 0, 1)
            panels.append((f"{mhd.stem} coronal y{yc}", _overlay(cor, seg[::-1, yc, :] * 3), spacing[2] / spacing[0]))
        ncol = 5
    elif dataset == "idrid":
        from PIL import Image

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
        raise KeyError(f"unknown phantom {dataset!r}; known: {', '.join(PHANTOMS.names())}")
    if not panels:
        raise FileNotFoundError(f"{raw}: no {dataset} cases found to preview")
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
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
