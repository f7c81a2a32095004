"""Full-reference image quality: PSNR and SSIM per image, for paired reconstructions (``medgan.beyond.recon``).

- ``psnr(x, y, data_range)``: ``10 log10(range² / MSE)``, MSE over every channel and pixel of one image
  (``inf`` for identical images).
- ``ssim(x, y, data_range)``: Wang et al. 2004 (IEEE TIP 13(4)): local statistics under an 11×11 Gaussian
  window with σ = 1.5 (truncated at 3.5 σ, normalised), ``K1 = 0.01``, ``K2 = 0.03``,
  ``C1 = (K1 L)²``, ``C2 = (K2 L)²``, population (not sample) variances, and the mean of the SSIM map over
  the positions where the window lies inside the image (a "valid" filter; no padding). This is
  scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=L)``, which computes the map with reflected borders and then drops the 5-pixel border that the
  padding touched (tests/test_image_quality.py compares the two when scikit-image is importable).
  Multi-channel images: the mean over channels of the per-channel SSIM.

Inputs are ``[N, C, H, W]`` (or ``[C, H, W]`` / ``[H, W]`` for one image) tensors or arrays; outputs a float64
tensor ``[N]``. Computed in float64 on the inputs' device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WIN_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def _as_batch(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    if t.dim() == 2:
        t = t[None, None]
    elif t.dim() == 3:
        t = t[None]
    if t.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], [C, H, W] or [H, W], got shape {tuple(t.shape)}")
    return t


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_batch(x), _as_batch(y)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def _check_range(data_range: float) -> float:
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return float(data_range)


def psnr(x, y, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio per image ``[N]`` in dB: ``10 log10(data_range² / mean((x - y)²))``."""
    x, y = _pair(x, y)
    data_range = _check_range(data_range)
    mse = (x - y).square().flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse 0 -> inf


def gaussian_window(size: int = WIN_SIZE, sigma: float = SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian ``[size]`` whose outer product is SSIM's window."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filter of ``[N, C, H, W]`` (channels independently)."""
    c = x.shape[1]
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


def ssim_map(x, y, data_range: float, *, win_size: int = WIN_SIZE, sigma: float = SIGMA) -> torch.Tensor:
    """The SSIM map ``[N, C, H - win + 1, W - win + 1]`` (Wang et al. 2004, Gaussian window, valid positions)."""
    x, y = _pair(x, y)
    data_range = _check_range(data_range)
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM's {win_size}x{win_size} window does not fit images of size {tuple(x.shape[-2:])}")
    g = gaussian_window(win_size, sigma).to(x.device)
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    var_x = _filter(x * x, g) - mu_x**2
    var_y = _filter(y * y, g) - mu_y**2
    cov = _filter(x * y, g) - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(x, y, data_range: float, *, win_size: int = WIN_SIZE, sigma: float = SIGMA) -> torch.Tensor:
    """Mean SSIM per image ``[N]`` (over channels and valid window positions); 1 for identical images."""
    return ssim_map(x, y, data_range, win_size=win_size, sigma=sigma).flatten(1).mean(1)

