"""``PreparedDataset``: items, split filtering, seeded augmentation that keeps image and mask aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan.data.datasets import PreparedDataset
from medgan.data.prepared import load_prepared, write_prepared
from medgan.data.transforms import ClassicalAugment

LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}


@pytest.fixture(scope="module")
def encoded_set(tmp_path_factory):
    """12 slices of 4 patients, 2 channels that both equal the mask's encoding (label * 2/3 - 1)."""
    rng = np.random.default_rng(0)
    n, size = 12, 32
    masks = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(10, 22, 2)
        r = (yy - cy) ** 2 + (xx - cx) ** 2
        masks[i][r < 110] = 1
        masks[i][r < 60] = 2
        masks[i][r < 25] = 3
    images = np.repeat((masks.astype(np.float32) * (2 / 3) - 1)[:, None], 2, axis=1)
    patients = [f"p{i // 3}" for i in range(n)]
    meta = {
        "name": "encoded", "modality": "test", "labels": LABELS, "source": "phantom",
        "splits": {"train": ["p0", "p1"], "val": ["p2"], "test": ["p3"]},
        "normalisation": {"method": "test"}, "inputs_sha256": "0" * 64,
    }
    out = tmp_path_factory.mktemp("ds") / "encoded"
    write_prepared(out, images=images, masks=masks, patients=patients, slices=[i % 3 for i in range(n)], meta=meta)
    return out


def test_items_have_the_documented_types_and_split(encoded_set):
    ds = PreparedDataset(encoded_set, split="train")
    assert len(ds) == 6 and ds.channels == 2 and ds.num_labels == 4
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (2, 32, 32)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (32, 32)
    assert {ds[i]["patient"] for i in range(len(ds))} == {"p0", "p1"}
    assert [PreparedDataset(encoded_set, split=s).rows.tolist() for s in ("val", "test")] == [[6, 7, 8], [9, 10, 11]]
    assert len(PreparedDataset(encoded_set, split=None)) == 12
    ps = load_prepared(encoded_set)
    item = PreparedDataset(ps, split="test")[1]
    assert item["index"] == 10 and item["patient"] == "p3"
    assert torch.equal(item["mask"], torch.from_numpy(ps.masks[10].astype(np.int64)))
    with pytest.raises(IndexError):
        ds[6]


def test_unaugmented_image_encodes_its_mask(encoded_set):
    for item in PreparedDataset(encoded_set, split=None):
        decoded = torch.round((item["image"] + 1) * 1.5).long()
        assert torch.equal(decoded[0], item["mask"]) and torch.equal(decoded[1], item["mask"])


def test_augmentation_keeps_image_and_mask_aligned(encoded_set):
    plain = PreparedDataset(encoded_set, split=None)
    ds = PreparedDataset(encoded_set, split=None, augment=True, seed=5)
    moved = 0
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"]
        decoded = torch.round((item["image"] + 1) * 1.5).long().clamp(0, 3)
        # where the 3x3 neighbourhood of the mask holds one label, bilinear and nearest must agree
        m = mask[None, None].float()
        edge = (torch.nn.functional.max_pool2d(m, 3, 1, 1) != -torch.nn.functional.max_pool2d(-m, 3, 1, 1))[0, 0]
        for c in range(2):
            assert not ((decoded[c] != mask) & ~edge).any()
        assert (decoded[0] != mask).float().mean() < 0.05
        moved += not torch.equal(mask, plain[i]["mask"])
    assert moved >= len(ds) - 1


def test_augmentation_is_seeded_and_varies_per_draw_and_epoch(encoded_set):
    aug = ClassicalAugment(hflip=0.5)
    a = PreparedDataset(encoded_set, augment=aug, seed=1)
    b = PreparedDataset(encoded_set, augment=aug, seed=1)
    first = [a[i]["image"] for i in range(len(a))]
    assert all(torch.equal(first[i], b[i]["image"]) for i in range(len(b)))
    assert not torch.equal(a[0]["image"], first[0])  # a second draw of the same item is a new augmentation
    assert not torch.equal(PreparedDataset(encoded_set, augment=aug, seed=2)[0]["image"], first[0])
    c = PreparedDataset(encoded_set, augment=aug, seed=1)
    c.set_epoch(1)
    assert not any(torch.equal(c[i]["image"], first[i]) for i in range(len(c)))
    c.set_epoch(0)
    assert all(torch.equal(c[i]["image"], first[i]) for i in range(len(c)))


def test_loader_batches_and_tensors(encoded_set):
    ds = PreparedDataset(encoded_set, split="train")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 2, 32, 32) and batch["mask"].shape == (4, 32, 32)
    assert batch["patient"] == ["p0", "p0", "p0", "p1"]
    image, mask = ds.tensors()
    assert image.shape == (6, 2, 32, 32) and mask.dtype == torch.int64
    assert torch.equal(image[3], ds[3]["image"])


def test_unknown_split_is_rejected(encoded_set):
    with pytest.raises(ValueError, match="unknown split"):
        PreparedDataset(encoded_set, split="training")
