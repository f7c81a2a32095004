"""Reconstruction (issue 13, item 5): k-space undersampling, pix2pix's loss by hand, training with exact resume,
the refusal of ``medgan generate`` and the PSNR/SSIM evaluation against zero-filled."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medgan.beyond.recon import ZERO_FILLED, evaluate, plot_demo, summary, table
from medgan.cli import main
from medgan.config import LossConfig, ModelConfig
from medgan.data.kspace import (
    cartesian_mask,
    center_lines,
    check_mask_args,
    fft2c,
    ifft2c,
    seeded_masks,
    zero_filled,
    zero_filled_signed,
)
from medgan.errors import ConfigError
from medgan.losses import LOSSES, build_loss
from medgan.metrics.image_quality import psnr
from medgan.models.pix2pix import build_pix2pix, receptive_field
from medgan.training import load_checkpoint, read_stats

RECON_SETS = ["grid=0", "model.g_filters=4", "model.d_filters=4"]


# ---------------------------------------------------------------------------------------------
# k-space
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accel,count,start", [(4, 5, 30), (8, 3, 31)])
def test_mask_has_the_centre_lines_and_the_acceleration(accel, count, start):
    # fastMRI at W = 64: round(64 · 0.08) = 5 lines from (64 - 5 + 1) // 2 = 30; round(64 · 0.04) = 3 from 31
    assert center_lines(64, 0.32 / accel) == (start, count)
    masks = cartesian_mask(4000, 64, accel, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (4000, 1, 1, 64)
    cols = masks[:, 0, 0]
    assert torch.all(cols[:, start : start + count] == 1)
    assert cols[:, 32].eq(1).all()  # the DC column of the centred k-space
    outer = torch.cat([cols[:, :start], cols[:, start + count :]], dim=1)
    prob = (64 / accel - count) / (64 - count)
    assert outer.mean().item() == pytest.approx(prob, abs=0.005)
    assert cols.mean().item() == pytest.approx(1 / accel, abs=0.005)  # W / accel lines expected
    assert set(cols.unique().tolist()) == {0.0, 1.0}


def test_mask_refuses_more_centre_lines_than_the_acceleration_allows():
    with pytest.raises(ConfigError, match="center_fraction"):
        check_mask_args(64, 4, 0.5)
    with pytest.raises(ConfigError, match="acceleration"):
        cartesian_mask(2, 64, 0.5)


def test_seeded_masks_depend_on_seed_and_index_only():
    a = seeded_masks(8, 64, 4, None, seed=3, index=7)
    torch.rand(100)  # the global RNG plays no part
    assert torch.equal(a, seeded_masks(8, 64, 4, None, seed=3, index=7))
    assert not torch.equal(a, seeded_masks(8, 64, 4, None, seed=3, index=8))


def test_fft_round_trip_parseval_and_centre():
    x = torch.randn(3, 2, 16, 12, dtype=torch.float64).to(torch.complex128)
    k = fft2c(x)
    torch.testing.assert_close(ifft2c(k), x, rtol=0, atol=1e-12)
    assert k.abs().square().sum().item() == pytest.approx(x.abs().square().sum().item(), rel=1e-12)  # orthonormal
    # a constant image has all its energy in the centre (DC) coefficient: c · sqrt(H W)
    kc = fft2c(torch.full((16, 12), 0.5))
    assert kc[8, 6].real.item() == pytest.approx(0.5 * math.sqrt(16 * 12), rel=1e-6)
    kc[8, 6] = 0
    assert kc.abs().max().item() < 1e-5


def test_zero_filled_of_a_fully_sampled_mask_is_the_image():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    full = torch.ones(1, 1, 1, 16)
    torch.testing.assert_close(zero_filled_signed(x, full), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(zero_filled(x, full), x.abs(), rtol=0, atol=1e-5)  # the magnitude
    half = cartesian_mask(2, 16, 4, generator=torch.Generator().manual_seed(0))
    assert (zero_filled_signed(x, half) - x).abs().max() > 0.1


def _numpy_zero_filled(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The reference: numpy's FFT with explicit shifts, on the [0, 1] magnitude, back to [-1, 1]."""
    m = (y + 1) / 2
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(m, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)) * mask
    return 2 * np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"),
                                      axes=(-2, -1))) - 1


# ---------------------------------------------------------------------------------------------
# the loss, by hand
# ---------------------------------------------------------------------------------------------
class HalfG(nn.Module):
    """G(x) = w · x with w = 0.5."""

    z_dim = 0
    conditional = False

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, mask_onehot=None):
        return self.w * x


class RecordingD(nn.Module):
    """Patch logits = 4×4 average of (a · input channel + b · output channel); remembers what it saw."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.5))
        self.b = nn.Parameter(torch.tensor(-2.0))
        self.seen: list[torch.Tensor] = []

    def forward(self, pair, return_features=False):
        self.seen.append(pair.detach().clone())
        return nn.functional.avg_pool2d(self.a * pair[:, :1] + self.b * pair[:, 1:], 4)


def _joint(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    onehot = -torch.ones(n, 2, size, size)
    onehot[:, 0] = 1
    return torch.cat([image, onehot], 1)


def _loss(adv_weight=1.0, **kw):
    cfg = LossConfig(name="pix2pix", l1_weight=100.0, adv_weight=adv_weight, acceleration=4.0, **kw)
    return build_loss(cfg, HalfG(), RecordingD(), channels=1, num_labels=2)


def _softplus(v: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


def _patch_logits(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    v = 1.5 * x - 2.0 * out  # [n, 1, 16, 16] -> 4×4 means
    n, _, h, w = v.shape
    return v.reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4))


def test_pix2pix_loss_terms_by_hand():
    assert "pix2pix" in LOSSES
    loss = _loss()
    real = _joint()
    y = real[:, :1].double().numpy()
    torch.manual_seed(5)
    mask = cartesian_mask(3, 16, 4.0).numpy()  # the draw the loss makes first from the same global RNG state
    torch.manual_seed(5)
    total_d, terms_d = loss.d_loss(real, torch.zeros(3, 0), step=3)
    x = _numpy_zero_filled(y, mask)
    seen_real, seen_fake = loss.D.seen
    np.testing.assert_allclose(seen_real.numpy(), np.concatenate([x, y], 1), atol=1e-5)  # D(x, y)
    np.testing.assert_allclose(seen_fake.numpy(), np.concatenate([x, 0.5 * x], 1), atol=1e-5)  # D(x, G(x))
    real_logits, fake_logits = _patch_logits(x, y), _patch_logits(x, 0.5 * x)
    # D: ½ [BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)] over every patch
    want_d = 0.5 * (_softplus(-real_logits).mean() + _softplus(fake_logits).mean())
    assert total_d.item() == pytest.approx(want_d, rel=1e-5)
    assert terms_d["D_real"].item() == pytest.approx(real_logits.mean(), rel=1e-5)
    assert terms_d["D_fake"].item() == pytest.approx(fake_logits.mean(), rel=1e-5)

    # G, same step: the same masks (no new draw), BCE(D(x, G(x)), 1) + 100 · mean |G(x) - y|
    loss.D.seen.clear()
    torch.manual_seed(99)
    total_g, terms_g = loss.g_loss(real, torch.zeros(3, 0), step=3)
    np.testing.assert_allclose(loss.D.seen[0][:, :1].numpy(), x, atol=1e-5)
    l1 = np.abs(0.5 * x - y).mean()
    assert terms_g["G_l1"].item() == pytest.approx(l1, rel=1e-5)
    assert terms_g["G_adv"].item() == pytest.approx(_softplus(-fake_logits).mean(), rel=1e-5)
    assert total_g.item() == pytest.approx(_softplus(-fake_logits).mean() + 100 * l1, rel=1e-5)
    total_g.backward()
    assert loss.G.w.grad is not None and loss.G.w.grad.abs() > 0

    # the next step draws new masks
    loss.D.seen.clear()
    loss.g_loss(real, torch.zeros(3, 0), step=4)
    assert not torch.allclose(loss.D.seen[0][:, :1], torch.from_numpy(x).float(), atol=1e-3)


def test_label_smoothing_moves_the_real_target():
    loss = _loss(label_smoothing=0.1)
    real = _joint()
    torch.manual_seed(0)
    total, terms = loss.d_loss(real, torch.zeros(3, 0), step=0)
    r = loss.D.seen[0]
    f = loss.D.seen[1]
    rl = _patch_logits(r[:, :1].double().numpy(), r[:, 1:].double().numpy())
    fl = _patch_logits(f[:, :1].double().numpy(), f[:, 1:].double().numpy())
    bce_real = (0.9 * _softplus(-rl) + 0.1 * _softplus(rl)).mean()
    assert total.item() == pytest.approx(0.5 * (bce_real + _softplus(fl).mean()), rel=1e-5)


def test_l1_only_never_runs_D():
    loss = _loss(adv_weight=0.0)
    assert not loss.saturates  # the trainer's saturation stop must not fire on a D that never trains
    real = _joint()
    total_d, terms_d = loss.d_loss(real, torch.zeros(3, 0), step=0)
    assert total_d.item() == 0 and total_d.requires_grad and set(terms_d) == {"D_total"}
    total_d.backward()  # what the trainer does: no D parameter gets a gradient
    assert all(p.grad is None for p in loss.D.parameters())
    total_g, terms_g = loss.g_loss(real, torch.zeros(3, 0), step=0)
    assert loss.D.seen == []
    assert "G_adv" not in terms_g
    assert total_g.item() == pytest.approx(100 * terms_g["G_l1"].item(), rel=1e-6)


@pytest.mark.parametrize("kw,match", [
    ({"n_critic": 2}, "n_critic"),
    ({"adv_weight": 0.0, "l1_weight": 0.0}, "both 0"),
    ({"l1_weight": -1.0}, "l1_weight"),
    ({"acceleration": 0.5}, "acceleration"),
    ({"center_fraction": 0.5}, "center_fraction"),
    ({"fm_weight": 1.0}, "fm_weight"),
])
def test_bad_knobs_are_one_clear_error(kw, match):
    cfg = LossConfig(**{"name": "pix2pix", "l1_weight": 100.0, **kw})
    with pytest.raises(ConfigError, match=match):
        build_loss(cfg, HalfG(), RecordingD(), channels=1, num_labels=2)
    with pytest.raises(ConfigError, match="diffaugment"):
        build_loss(LossConfig(name="pix2pix", l1_weight=100.0), HalfG(), RecordingD(), channels=1, num_labels=2,
                   augment_pipe=lambda x: x)


# ---------------------------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------------------------
def test_unet_and_patchgan_shapes():
    assert receptive_field(3) == 70 and receptive_field(2) == 34 and receptive_field(1) == 16
    pair = build_pix2pix(ModelConfig(g_filters=4, d_filters=4, d_layers=3), channels=1, num_labels=4, resolution=64)
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    out = pair.G(x)
    assert out.shape == x.shape and out.abs().max() <= 1
    assert sum(isinstance(m, nn.Dropout) for m in pair.G.modules()) == 1  # log2(64) - 5 blocks, as unet_256's 3
    assert pair.D(torch.cat([x, out], 1)).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    with pytest.raises(ConfigError, match="samples nothing"):
        pair.G(torch.randn(2, 0))  # what generate / the sample grid would do


# ---------------------------------------------------------------------------------------------
# training through the one trainer, exact resume, generate's refusal, evaluation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recon_set(make_discs, tmp_path_factory):
    """16 slices at 64² (a U-Net deep enough for a dropout block), the last patient in test."""
    return make_discs(tmp_path_factory.mktemp("data") / "discs64", n=16, size=64, test_patients=1)


def test_pix2pix_trains_and_resumes_exactly(recon_set, tmp_path, assert_resume_exact, finite_stats, capsys):
    state = assert_resume_exact(recon_set, tmp_path, "pix2pix", RECON_SETS)
    assert state["config"]["loss"]["l1_weight"] == 100.0 and state["config"]["model"]["d_layers"] == 3
    stats = finite_stats(tmp_path / "full")
    assert {"G_l1", "G_adv", "D_adv", "D_real"} <= set(stats[-1])

    # generate refuses with one line that points to the reconstruction evaluation
    out = tmp_path / "generated"
    assert main(["generate", str(tmp_path / "full"), "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "medgan.beyond.recon.evaluate" in err
    assert not out.exists()


def test_l1_only_run_and_evaluation(recon_set, tmp_path, train_disk_run):
    pix = train_disk_run(recon_set, tmp_path / "pix2pix", "pix2pix", 0.016, RECON_SETS)
    l1 = train_disk_run(recon_set, tmp_path / "l1", "recon-l1", 0.016, RECON_SETS)
    ckpt = load_checkpoint(l1 / "checkpoint-last.pt")
    assert ckpt["opt_D"]["state"] == {}  # D never stepped
    assert "G_adv" not in read_stats(l1)[-1]

    result = evaluate([l1, pix], recon_set, seed=1)
    assert list(result["methods"]) == [ZERO_FILLED, "recon-l1", "pix2pix"]
    assert result["n_slices"] == 4 and result["n_patients"] == 1 and result["acceleration"] == 4.0
    # zero-filled, recomputed on an independent path (numpy FFT) with the documented masks
    images = np.load(recon_set / "images.npy").astype(np.float32)[-4:]
    masks = seeded_masks(4, 64, 4.0, 0.08, seed=1, index=0).numpy()
    zf = np.clip((_numpy_zero_filled(images.astype(np.float64), masks) + 1) / 2, 0, 1)
    want = psnr(zf, np.clip((images + 1) / 2, 0, 1), 1.0).numpy()
    np.testing.assert_allclose(result["methods"][ZERO_FILLED]["psnr_per_slice"], want, rtol=1e-4)
    for m in result["methods"].values():
        assert len(m["psnr_per_slice"]) == 4 and all(map(math.isfinite, m["psnr_per_slice"] + m["ssim_per_slice"]))
        assert math.isfinite(m["psnr"]["ci95"]) and -1 <= m["ssim"]["mean"] <= 1
    assert result["example"]["target"].shape == (64, 64) and result["example"]["mask"].shape == (64, 64)
    # the same evaluation twice gives the same numbers (seeded masks, G in eval mode)
    again = evaluate({"L1": l1}, recon_set, seed=1)
    assert again["methods"]["L1"]["psnr_per_slice"] == result["methods"]["recon-l1"]["psnr_per_slice"]
    assert len(table(result)) == 3 and "zero-filled" in summary(result)
    fig = plot_demo(result)
    assert len([ax for ax in fig.axes if ax.images]) == 2 + 2 * 3  # target, mask; each method and its error
    with pytest.raises(ConfigError, match="acceleration"):
        evaluate([l1], recon_set, 4.0, center_fraction=0.5)
