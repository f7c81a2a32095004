"""Extension points of the trainer that later features plug into without touching the loop.

``METRIC_HOOKS[name](ctx: MetricContext) -> dict`` is called every ``cfg.metric_kimg`` kimg (and at the
end); the dict must hold ``"value"`` (lower is better, e.g. FID) and may hold anything else. The trainer
appends it to ``metric-<name>.jsonl`` and keeps ``checkpoint-best-<name>.pt`` for the best value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medgan.registry import Registry


@dataclass
class MetricContext:
    run_dir: Path
    real_dir: Path  # the prepared set the GAN trains on
    kimg: float
    device: Any  # torch.device
    # sample(n) -> (images float32 [n, C, H, W] in [-1, 1], masks int64 [n, H, W]) from G_ema, seeded
    sample: Callable[[int], tuple[np.ndarray, np.ndarray]]
    cfg: Any  # TrainConfig


class _MetricRegistry(Registry):
    """Looks a name up after importing ``medgan.metrics``, which registers the built-in hooks
    (``fid``, ``kid``); the trainer need not know which package provides which metric."""

    def __getitem__(self, name: str):
        if name not in self:
            import medgan.metrics  # noqa: F401  (registers fid, kid)
        return super().__getitem__(name)


METRIC_HOOKS: Registry = _MetricRegistry("metric")
