"""DiffAugment on joint image + mask tensors: intensity on the image only, geometry on both alike."""

from __future__ import annotations

import pytest
import torch

from medgan.augment import DIFF_OPS, DiffAugment, build_augment_pipe, empty_fill
from medgan.config import AugConfig, ConfigError
from medgan.data.prepared import mask_to_onehot, split_joint, to_joint

K, H = 4, 16


def coupled_joint(n=6, channels=1, seed=0):
    """A joint whose image is a function of its labels (label 0 ↔ −1, like the fill), so any op that
    moves image and mask alike — and fills them consistently — keeps ``image == code(labels)``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (n, H, H), generator=g)
    image = code(labels)[:, None].expand(-1, channels, -1, -1)
    return to_joint(image, labels, K), labels


def code(labels):
    return labels.float() * 2 / (K - 1) - 1


def shift(x, ty, tx, fill):
    """Reference translation: out[i, j] = x[i + ty, j + tx] where inside, else fill."""
    out = fill.expand_as(x).clone()
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i + ty < h and 0 <= j + tx < w:
                out[..., i, j] = x[..., i + ty, j + tx]
    return out


def test_ops_are_registered_and_unknown_policy_is_a_config_error():
    assert set(DIFF_OPS.names()) == {"color", "translation", "cutout"}
    with pytest.raises(ConfigError, match="unknown op"):
        DiffAugment("color,rotation", channels=1)
    with pytest.raises(ConfigError):
        build_augment_pipe(AugConfig(diffaugment="colour"), channels=1)
    with pytest.raises(ConfigError):
        DiffAugment("color", channels=0)


def test_empty_policy_means_no_pipe():
    assert build_augment_pipe(AugConfig(diffaugment=""), channels=1) is None
    pipe = build_augment_pipe(AugConfig(diffaugment="color, translation,cutout"), channels=3)
    assert isinstance(pipe, DiffAugment) and pipe.ops == ["color", "translation", "cutout"]


@pytest.mark.parametrize("channels", [1, 3])
def test_color_never_changes_mask_channels(channels):
    x, _ = coupled_joint(channels=channels)
    y = DiffAugment("color", channels)(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, channels:], x[:, channels:])
    assert not torch.equal(y[:, :channels], x[:, :channels])


def test_saturation_only_for_rgb():
    # a gray RGB image has no saturation to change; brightness/contrast keep it gray
    x, _ = coupled_joint(channels=3)
    y = DiffAugment("color", 3)(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y[:, 0], y[:, 1])
    x[:, 0] += 0.1  # colour it: now saturation changes the channel spread
    y = DiffAugment("color", 3)(x, generator=torch.Generator().manual_seed(0))
    spread_in = (x[:, 0] - x[:, 1]).mean(dim=(1, 2))
    spread_out = (y[:, 0] - y[:, 1]).mean(dim=(1, 2))
    assert not torch.allclose(spread_in, spread_out)


def test_translation_moves_image_and_mask_identically():
    x, _ = coupled_joint(n=8)
    y = DiffAugment("translation", 1)(x, generator=torch.Generator().manual_seed(3))
    image, labels = split_joint(y, channels=1)
    assert torch.equal(image[:, 0], code(labels))  # still the same pair everywhere, fill included
    fill = empty_fill(1, K)
    s = int(H * 0.125 + 0.5)
    moved = 0
    for n in range(len(x)):
        matches = [
            (ty, tx)
            for ty in range(-s, s + 1)
            for tx in range(-s, s + 1)
            if torch.equal(y[n], shift(x[n : n + 1], ty, tx, fill)[0])
        ]
        assert matches, f"sample {n} is not a translation of its input by at most {s} pixels"
        moved += (0, 0) not in matches
    assert moved > 0


def test_cutout_cuts_one_square_from_every_channel():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(1, K, (8, H, H), generator=g)  # no background, so no pixel equals the fill
    image = torch.rand(8, 1, H, H, generator=g) * 1.8 - 0.9
    x = to_joint(image, labels, K)
    y = DiffAugment("cutout", 1)(x, generator=torch.Generator().manual_seed(2))
    fill = empty_fill(1, K)
    sizes = []
    for n in range(len(x)):
        cut = (y[n] != x[n]).any(0)
        assert torch.equal(cut, (y[n] == fill[0]).all(0))  # changed pixels are exactly the filled ones
        rows, cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        box = torch.zeros_like(cut)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        assert torch.equal(cut, box)  # one axis-aligned rectangle
        sizes.append((len(rows), len(cols)))
    assert max(max(s) for s in sizes) == H // 2 and all(max(s) <= H // 2 for s in sizes)


def test_full_policy_keeps_a_valid_onehot_and_the_pairing():
    x, _ = coupled_joint(n=8)
    y = DiffAugment("translation,cutout,color", 1)(x, generator=torch.Generator().manual_seed(0))
    mask = y[:, 1:]
    assert ((mask == 1) | (mask == -1)).all() and torch.equal((mask == 1).sum(1), torch.ones(8, H, H, dtype=torch.long))
    geo = DiffAugment("translation,cutout", 1)(x, generator=torch.Generator().manual_seed(0))
    image, labels = split_joint(geo, channels=1)
    assert torch.equal(image[:, 0], code(labels))


def test_deterministic_under_a_seeded_generator_and_leaves_global_rng_alone():
    x = torch.rand(4, 1 + K, H, H) * 2 - 1
    pipe = DiffAugment("color,translation,cutout", 1)
    state = torch.random.get_rng_state()
    a = pipe(x, generator=torch.Generator().manual_seed(7))
    b = pipe(x, generator=torch.Generator().manual_seed(7))
    c = pipe(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    d = pipe(x)
    torch.manual_seed(0)
    assert torch.equal(d, pipe(x))


def test_differentiable():
    x = (torch.rand(2, 1 + K, H, H) * 2 - 1).requires_grad_(True)
    y = DiffAugment("color,translation,cutout", 1)(x, generator=torch.Generator().manual_seed(0))
    y[:, 0].sum().backward()
    assert x.grad is not None and x.grad[:, 0].abs().sum() > 0
    assert x.grad[:, 1:].abs().sum() == 0  # the image output never depends on the mask input


def test_fill_is_the_empty_pair():
    fill = empty_fill(3, K)
    assert fill.flatten().tolist() == [-1, -1, -1, 1, -1, -1, -1]
    assert torch.equal(fill[:, 3:], mask_to_onehot(torch.zeros(1, 1, 1, dtype=torch.long), K))
