"""Extension points of the trainer that later features plug into without touching the loop.

``METRIC_HOOKS[name](ctx: MetricContext) -> dict`` is called every ``cfg.metric_kimg`` kimg (and at the
end); the dict must hold ``"value"`` (lower is better, e.g. FID) and may hold anything else. The loop
appends it to ``metric-<name>.jsonl`` and keeps ``checkpoint-best-<name>.pt`` for the best value.

The built-in hooks live in ``medgan.metrics`` (a higher layer): they are registered here by path and
imported on first use, so the trainer names them without importing upward. A user's own hook registers
with ``@METRIC_HOOKS.register("name")``.
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


METRIC_HOOKS: Registry = Registry("metric")
METRIC_HOOKS.register_path("fid", "medgan.metrics.hooks:fid_hook")
METRIC_HOOKS.register_path("kid", "medgan.metrics.hooks:kid_hook")
