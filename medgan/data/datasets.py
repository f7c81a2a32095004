"""``torch.utils.data.Dataset`` over one split of a prepared set, with optional classical augmentation."""

from __future__ import annotations

import os

import numpy as np
import torch

from medgan.data.prepared import PreparedSet, load_prepared
from medgan.data.transforms import ClassicalAugment


class PreparedDataset(torch.utils.data.Dataset):
    """Items ``{"image": float32 [C, H, W] in [-1, 1], "mask": int64 [H, W], "patient": str, "index": int}``.

    ``index`` is the slice's row in the whole prepared set (not its position in the split).
    ``augment=True`` uses ``ClassicalAugment()`` defaults; a ``ClassicalAugment`` sets the ranges.
    Augmentation is deterministic: item ``i`` of epoch ``e`` draws from a generator seeded by
    ``(seed, e, index, k)`` where ``k`` counts earlier draws of that item in this process — so
    runs repeat exactly, DataLoader workers never share draws, and ``set_epoch`` varies them per epoch.
    """

    def __init__(
        self,
        root_or_set: str | os.PathLike | PreparedSet,
        split: str | None = "train",
        augment: ClassicalAugment | bool = False,
        seed: int = 0,
    ):
        self.data = root_or_set if isinstance(root_or_set, PreparedSet) else load_prepared(root_or_set)
        self.split = split
        self.rows = self.data.indices(split)
        if augment is True:
            augment = ClassicalAugment()
        self.augment: ClassicalAugment | None = augment or None
        self.seed = int(seed)
        self.epoch = 0
        self._draws: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def channels(self) -> int:
        return self.data.channels

    @property
    def num_labels(self) -> int:
        return self.data.num_labels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._draws.clear()

    def generator_for(self, index: int) -> torch.Generator:
        k = self._draws.get(index, 0)
        self._draws[index] = k + 1
        seed = np.random.SeedSequence([self.seed, self.epoch, int(index), k]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} slices in split {self.split!r}")
        index = int(self.rows[i])
        image = torch.from_numpy(np.asarray(self.data.images[index], np.float32))
        mask = torch.from_numpy(np.asarray(self.data.masks[index], np.int64))
        if self.augment is not None:
            image, mask = self.augment(image[None], mask[None], self.generator_for(index))
            image, mask = image[0], mask[0]
        return {"image": image, "mask": mask, "patient": str(self.data.patients[index]), "index": index}

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split in memory, unaugmented: (``image [n, C, H, W]`` float32, ``mask [n, H, W]`` int64).

        For trainers that keep the set on the GPU and augment batches with ``ClassicalAugment``.
        """
        image, mask = self.data.load(self.split)
        return torch.from_numpy(image), torch.from_numpy(mask)
