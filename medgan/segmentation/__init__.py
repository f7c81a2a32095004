"""The downstream U-Net: train on real / augmented / generated / mixed sets, test on the real test split.

This is the paper's usefulness check (§4.2, Table 2's Dice column) and, through ``load_encoder``, the
feature extractor of the domain FID (Fig 6's argument made a number).

    run_dir = train_unet([real_dir, gen_dir], val_dir=real_dir, cfg=UNetConfig(), out_dir="runs/unet")
    evaluate_unet(run_dir, real_dir, split="test")      # Dice per class / mean, per patient, NaN counted
    segment([gen_dir], real_dir, seeds=3)               # N seeds -> mean ± 95 % t-interval (Table 2)
    encoder, info = load_encoder(run_dir)               # image [N, C, H, W] in [-1, 1] -> features [N, D]

Modules: ``dice`` (TP/FP/FN -> Dice per image, patient, pooled; ``mean_ci``), ``model`` (the network,
its encoder, loading), ``evaluate`` (prediction, Dice of a model on a split), ``train`` (``UNetConfig``,
``train_unet``), ``protocol`` (``segment`` over seeds), ``commands`` (``medgan segment``).
"""

from medgan.segmentation.dice import (
    FN,
    FP,
    TP,
    confusion_counts,
    dice_from_counts,
    dice_report,
    foreground_labels,
    group_counts,
    mean_ci,
)
from medgan.segmentation.evaluate import evaluate_unet, predict
from medgan.segmentation.model import CHECKPOINT, UNet, UNetEncoder, load_encoder, load_unet
from medgan.segmentation.protocol import format_table, segment
from medgan.segmentation.train import UNetConfig, check_no_leak, soft_dice_loss, train_unet

__all__ = [
    "CHECKPOINT",
    "FN",
    "FP",
    "TP",
    "UNet",
    "UNetConfig",
    "UNetEncoder",
    "check_no_leak",
    "confusion_counts",
    "dice_from_counts",
    "dice_report",
    "evaluate_unet",
    "foreground_labels",
    "format_table",
    "group_counts",
    "load_encoder",
    "load_unet",
    "mean_ci",
    "predict",
    "segment",
    "soft_dice_loss",
    "train_unet",
]
