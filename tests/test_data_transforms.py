"""Classical augmentation: closed-form warps, image/mask alignment, seeded draws, parameter ranges."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medgan.data.transforms import ClassicalAugment, affine_theta, random_geometric_masks, warp

NO_OP = ClassicalAugment(rotation_deg=0.0, shift=0.0, scale=(1.0, 1.0), hflip=0.0)


def blocks(n=3, h=32, w=32, seed=0):
    """Masks of random rectangles with labels 1..3 on 0, and an image whose channel encodes them."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        for label in (1, 2, 3):
            r, c = torch.randint(0, h - 10, (2,), generator=g).tolist()
            hh, ww = torch.randint(6, 12, (2,), generator=g).tolist()
            mask[i, r : r + hh, c : c + ww] = label
    image = (mask.float() * (2 / 3) - 1)[:, None]
    return image, mask


def decode(image):
    return torch.round((image[:, 0] + 1) * 1.5).long().clamp(0, 3)


def boundary(mask):
    """``[N, H, W]`` bool: pixels whose 3x3 neighbourhood holds more than one label."""
    m = mask[:, None].float()
    hi = F.max_pool2d(m, 3, 1, 1, ceil_mode=False)
    lo = -F.max_pool2d(-m, 3, 1, 1)
    return (hi != lo)[:, 0]


def test_identity_is_exact():
    image, mask = blocks()
    out_image, out_mask = NO_OP(image, mask, torch.Generator().manual_seed(0))
    assert torch.allclose(out_image, image, atol=1e-6)
    assert torch.equal(out_mask, mask)


def test_hflip_matches_torch_flip():
    image, mask = blocks()
    out_image, out_mask = ClassicalAugment(rotation_deg=0, shift=0, scale=(1, 1), hflip=1.0)(image, mask)
    assert torch.allclose(out_image, image.flip(-1), atol=1e-6)
    assert torch.equal(out_mask, mask.flip(-1))


def test_integer_shift_moves_content_and_fills():
    image, mask = blocks(n=1, h=16, w=16)
    k = 3  # pixels to the right; normalised coordinates span 2 per side
    theta = affine_theta(torch.zeros(1), torch.ones(1), torch.tensor([2 * k / 16]), torch.zeros(1))
    out_image, out_mask = warp(image, mask, theta, fill=-1.0)
    assert torch.allclose(out_image[..., k:], image[..., :-k], atol=1e-5)
    assert torch.allclose(out_image[..., :k], torch.full_like(out_image[..., :k], -1.0))
    assert torch.equal(out_mask[..., k:], mask[..., :-k])
    assert (out_mask[..., :k] == 0).all()


def test_quarter_turn_matches_rot90_for_image_and_mask():
    image, mask = blocks(n=2, h=20, w=20)
    theta = affine_theta(torch.full((2,), math.pi / 2), torch.ones(2), torch.zeros(2), torch.zeros(2))
    out_image, out_mask = warp(image, mask, theta)
    assert torch.allclose(out_image, torch.rot90(image, -1, dims=(-2, -1)), atol=1e-4)
    assert torch.equal(out_mask, torch.rot90(mask, -1, dims=(-2, -1)))


def test_random_augmentation_keeps_image_and_mask_aligned():
    image, mask = blocks(n=16, h=48, w=48, seed=1)
    out_image, out_mask = ClassicalAugment()(image, mask, torch.Generator().manual_seed(3))
    assert out_image.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
    assert not torch.equal(out_mask, mask)  # it did move things
    mismatch = decode(out_image) != out_mask
    # bilinear (image) and nearest (mask) may only disagree where labels meet
    assert not (mismatch & ~boundary(out_mask)).any()
    assert mismatch.float().mean() < 0.05
    assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3}
    assert out_image.min() >= -1 - 1e-6 and out_image.max() <= 1 + 1e-6


def test_same_seed_same_draw_other_seed_other_draw():
    image, mask = blocks(n=4)
    a = ClassicalAugment()(image, mask, torch.Generator().manual_seed(7))
    b = ClassicalAugment()(image, mask, torch.Generator().manual_seed(7))
    c = ClassicalAugment()(image, mask, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_sampled_parameters_stay_in_their_ranges():
    aug = ClassicalAugment(rotation_deg=15, shift=0.1, scale=(0.9, 1.1), hflip=0.5)
    theta = aug.sample_theta(2000, torch.Generator().manual_seed(0))
    full = torch.cat([theta.double(), torch.tensor([0, 0, 1.0], dtype=torch.float64).expand(2000, 1, 3)], 1)
    forward = torch.linalg.inv(full)
    det = torch.linalg.det(forward[:, :2, :2])
    scale = det.abs().sqrt()
    assert scale.min() >= 0.9 - 1e-4 and scale.max() <= 1.1 + 1e-4
    flipped = det < 0
    assert 0.45 < flipped.double().mean() < 0.55
    # undo the flip (first column) and read the rotation angle
    a = forward[:, :2, :2].clone()
    a[flipped, :, 0] *= -1
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert angle.abs().max() <= 15 + 1e-3 and angle.abs().max() > 14
    shift = forward[:, :2, 2]
    assert shift.abs().max() <= 0.2 + 1e-5 and shift.abs().max() > 0.19


def test_random_geometric_masks():
    _, mask = blocks(n=5, h=24, w=24)
    g = torch.Generator().manual_seed(0)
    out = random_geometric_masks(mask, 12, g)
    assert out.shape == (12, 24, 24) and out.dtype == mask.dtype
    assert set(out.unique().tolist()) <= {0, 1, 2, 3}
    again = random_geometric_masks(mask, 12, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    # without geometry every output is one of the training masks, picked at random
    plain = random_geometric_masks(mask, 12, torch.Generator().manual_seed(1), augment=NO_OP)
    matches = [[torch.equal(p, m) for m in mask] for p in plain]
    assert all(any(row) for row in matches)
    assert len({row.index(True) for row in matches}) > 1


@pytest.mark.parametrize("kw", [{"scale": (1.1, 0.9)}, {"hflip": 1.5}, {"rotation_deg": -1}, {"scale": (0, 1)}])
def test_bad_config_is_rejected(kw):
    with pytest.raises(ValueError):
        ClassicalAugment(**kw)
