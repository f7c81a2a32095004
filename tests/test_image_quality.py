"""PSNR and SSIM (medgan.metrics.image_quality) against closed forms and, when importable, scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medgan.metrics.image_quality import gaussian_window, psnr, ssim

C1, C2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # K1, K2 at data range 1


def test_psnr_of_a_known_mse_by_hand():
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)  # float64: 0.1 exactly as the closed form's
    y = torch.full((2, 1, 8, 8), 0.1, dtype=torch.float64)
    y[1] = 0.2
    got = psnr(y, x, data_range=1.0)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(10 * math.log10(1 / 0.01), abs=1e-9)  # 20 dB
    assert got[1].item() == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-9)
    # the data range enters squared: range 2 adds 20 log10(2) dB
    assert psnr(y, x, data_range=2.0)[0].item() == pytest.approx(20 + 20 * math.log10(2), abs=1e-9)
    # MSE over every channel and pixel of an image: half the pixels off by 0.2 -> MSE 0.02
    z = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    z[:, 0] = 0.2
    assert psnr(z, torch.zeros_like(z), 1.0).item() == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-9)
    assert math.isinf(psnr(x, x, 1.0)[0].item())


def test_ssim_of_an_image_with_itself_is_one():
    x = torch.rand(3, 2, 20, 24, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(ssim(x, x, 1.0).numpy(), 1.0, atol=1e-12)
    assert (ssim(x, x.flip(-1), 1.0) < 0.5).all()


def test_ssim_of_constant_images_by_hand():
    # no variance: the structure term is C2/C2 = 1, the luminance term (2ab + C1) / (a² + b² + C1)
    a, b = 0.3, 0.7
    f64 = torch.float64
    got = ssim(torch.full((16, 16), a, dtype=f64), torch.full((16, 16), b, dtype=f64), 1.0).item()
    assert got == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), abs=1e-12)


def test_ssim_of_a_scaled_ramp_by_hand():
    # x = s·j + t along columns, y = α x: under a symmetric window the local mean is x at the window's centre
    # column, var_x = s² v with v = Σ_k g_k k² (the 1-D window's variance), var_y = α² s² v, cov = α s² v
    s, t, alpha, h, w = 0.02, 0.1, 0.8, 13, 30
    j = np.arange(w, dtype=np.float64)
    x = np.tile(s * j + t, (h, 1))
    y = alpha * x
    g = gaussian_window().numpy()
    k = np.arange(11) - 5
    v = float((g * k**2).sum())
    mu = s * j[5 : w - 5] + t  # valid window centres
    lum = (2 * alpha * mu**2 + C1) / ((1 + alpha**2) * mu**2 + C1)
    con = (2 * alpha * s**2 * v + C2) / ((1 + alpha**2) * s**2 * v + C2)
    assert ssim(x, y, 1.0).item() == pytest.approx(float((lum * con).mean()), rel=1e-10)
    assert v == pytest.approx(1.5**2, rel=0.01)  # the truncated σ = 1.5 Gaussian


def test_ssim_uses_the_data_range():
    x = torch.full((12, 12), 0.3, dtype=torch.float64)
    y = torch.full((12, 12), 0.7, dtype=torch.float64)
    c1 = (0.01 * 255) ** 2
    assert ssim(x * 255, y * 255, 255.0).item() == pytest.approx((2 * 0.3 * 0.7 * 255**2 + c1) / ((0.09 + 0.49) * 255**2 + c1))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(4, 4), torch.zeros(4, 5), 1.0)
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(4, 4), torch.ones(4, 4), 0.0)


def test_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    x = rng.random((40, 37))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ref = metrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    assert ssim(x, y, 1.0).item() == pytest.approx(ref, abs=1e-10)
    assert psnr(x, y, 1.0).item() == pytest.approx(metrics.peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-10)
