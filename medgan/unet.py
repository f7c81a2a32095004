"""Former home of the downstream U-Net, kept so ``from medgan.unet import ...`` keeps working.

Everything lives in ``medgan.segmentation`` now; this module only re-exports its public names.
"""

from medgan.segmentation import (
    CHECKPOINT,
    UNet,
    UNetConfig,
    UNetEncoder,
    check_no_leak,
    evaluate_unet,
    format_table,
    load_encoder,
    load_unet,
    predict,
    segment,
    soft_dice_loss,
    train_unet,
)

__all__ = [
    "CHECKPOINT",
    "UNet",
    "UNetConfig",
    "UNetEncoder",
    "check_no_leak",
    "evaluate_unet",
    "format_table",
    "load_encoder",
    "load_unet",
    "predict",
    "segment",
    "soft_dice_loss",
    "train_unet",
]
