"""The one GAN trainer (layer 3): run folder contract, data parallelism, one iteration, the run loop, the CLI.

``run_training(cfg) -> run_dir`` trains any ``GANS`` entry; ``medgan train`` is its command-line twin.
"""

from medgan.training.commands import apply_gan, make_config, train
from medgan.training.distributed import DistInfo, dist_from_env
from medgan.training.hooks import METRIC_HOOKS, MetricContext
from medgan.training.loop import run_training
from medgan.training.runs import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEYS,
    checkpoint_path,
    load_checkpoint,
    load_run_config,
    read_run_info,
    read_stats,
    run_status,
    save_checkpoint,
)
from medgan.training.trainer import DataOrder, Trainer

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_KEYS", "METRIC_HOOKS", "DataOrder", "DistInfo", "MetricContext", "Trainer",
    "apply_gan", "checkpoint_path", "dist_from_env", "load_checkpoint", "load_run_config", "make_config",
    "read_run_info", "read_stats", "run_status", "run_training", "save_checkpoint", "train",
]
