"""Shared phantom machinery: the registry, ``write_phantom``, per-case seeding, the worker pool, the shape and
noise helpers every organ uses, and the NIfTI / MetaImage writers.

Every case draws from its own ``SeedSequence([seed, dataset, case number])`` (``_rng``): a case is the same
whatever ``patients`` is, and the same ``(dataset, patients, seed)`` gives byte-identical files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from medgan.errors import ConfigError, OutputExistsError
from medgan.io import atomic_folder
from medgan.registry import Registry
from medgan.runtime import progress_disabled

PHANTOMS: Registry[Callable[..., None]] = Registry("phantom")
DEFAULT_PATIENTS = {"acdc": 12, "sliver07": 4, "idrid": 10}
REAL_COUNTS = {"acdc": 150, "sliver07": 20, "idrid": 81}
_DATASET_CODE = {"acdc": 1, "sliver07": 2, "idrid": 3}


def write_phantom(
    dataset: str,
    out_dir: str | os.PathLike,
    *,
    patients: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
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
        raise ConfigError(f"{dataset} phantom: patients must be in 1..{REAL_COUNTS[dataset]} (the real count), got {n}")
    if int(seed) < 0:
        raise ConfigError(f"phantom seed must be >= 0, got {seed}")
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(f"{out}: output directory exists and is not empty (use --overwrite to replace it)")
    with atomic_folder(out) as tmp:
        writer(tmp, n, int(seed), progress=progress, **size_kw)
        # the marker medgan.data.prepare reads to record source: "phantom" in dataset.json
        (tmp / "PHANTOM.txt").write_text(f"medgan phantom: dataset={dataset} patients={n} seed={seed}\n")
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
    with tqdm(total=len(jobs), desc=f"phantom {dataset}", unit="case", disable=progress_disabled(progress)) as bar:
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


# NIfTI (ACDC) and MetaImage (SLiver07) files

def _save_nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...]) -> None:
    import nibabel as nib

    affine = np.diag([zooms[0], zooms[1], zooms[2], 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "msec")
    # nibabel writes .nii.gz with a fixed gzip mtime and no file name: byte-identical reruns.
    nib.save(img, str(path))


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


def _read_mhd_simple(path: Path) -> tuple[np.ndarray, list[float]]:
    """Minimal MetaImage reader for the preview (the real reader lives in ``medgan.data.formats``)."""
    fields = dict(line.split(" = ", 1) for line in path.read_text().splitlines() if " = " in line)
    nx, ny, nz = (int(v) for v in fields["DimSize"].split())
    dtype = {"MET_SHORT": "<i2", "MET_UCHAR": "u1"}[fields["ElementType"]]
    volume = np.fromfile(path.parent / fields["ElementDataFile"], dtype=dtype).reshape(nz, ny, nx)
    return volume, [float(v) for v in fields["ElementSpacing"].split()]

