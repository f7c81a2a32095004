"""Sample image + mask pairs from a trained run into the prepared format: ``generate`` / ``medgan generate``.

The generated set is a prepared set like any other (``source: generated``), so FID, the U-Net and the
notebooks read it exactly as they read real data. ``dataset.json`` records where it came from: run id,
config hash, GAN, checkpoint and its kimg, seed, truncation, and ``mask_source``:

- unconditional G (DCGAN family, StyleGAN2): the mask is G's own output — the argmax of its K mask
  channels (``mask_source: "generator"``);
- conditional G (SPADE): G needs a mask to draw an image. The masks are the run's training masks under a
  random geometric augmentation (``medgan.data.transforms.random_geometric_masks``: rotation, shift,
  scale, flip): new layouts that stay anatomically plausible because they are warped real ones. The
  generated set then holds those masks (the conditional G returns its input one-hot as mask channels).
  ``masks="training"`` (``--masks training``) draws the training masks unchanged instead (random choice with
  replacement), to measure what the warp does to FID and memorisation (``benchmarks/spade_masks.py``).
  An unconditional G makes its own masks: there ``masks`` is ignored and ``mask_source`` stays ``"generator"``.

Reproducibility: all ``z`` are drawn up front from ``torch.Generator().manual_seed(seed)`` on the CPU, so
an unconditional set depends on (checkpoint, n, seed) only, not on the batch size or the device (up to
floating point); masks for a conditional G are drawn per batch from a second generator seeded by ``seed``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.config import TrainConfig
from medgan.data.prepared import PreparedWriter, load_prepared, split_joint
from medgan.errors import ConfigError, OutputExistsError
from medgan.io import sha256_files
from medgan.models import MODELS
from medgan.runtime import amp_dtype, code_version, progress_bar, resolve_device
from medgan.sampling import (  # the MASK_SOURCE_* values are re-exported: what a generated set records
    MASK_MODES,
    MASK_SOURCE_GENERATOR,  # noqa: F401
    MASK_SOURCE_TRAINING,  # noqa: F401
    MASK_SOURCE_WARPED,  # noqa: F401
    check_mask_mode,
    draw_masks,
    mask_source,
    sample_joint,
)
from medgan.training.runs import checkpoint_path, checkpoint_run_info, load_checkpoint


def build_generator(state: dict[str, Any], info: dict[str, Any]) -> nn.Module:
    """An untrained G of the architecture a checkpoint was written for.

    The checkpoint's own ``config``/``dims`` decide; ``info`` (its run's ``config.json``) serves
    checkpoints written before they carried them.
    """
    model_cfg = TrainConfig.from_dict(state.get("config", info["config"])).model
    if "dims" in state:
        dims = state["dims"]
        channels, num_labels, resolution = int(dims["channels"]), int(dims["num_labels"]), int(dims["resolution"])
    else:
        ds = info["dataset"]
        channels, num_labels, resolution = int(ds["channels"]), len(ds["labels"]), int(ds["image_size"])
    return MODELS[model_cfg.name](model_cfg, channels=channels, num_labels=num_labels, resolution=resolution).G


def load_generator(source: str | os.PathLike, checkpoint: str = "last", device: str | torch.device = "cpu"):
    """Load ``G_ema`` of a run: ``source`` is a run folder (with ``checkpoint`` = ``last``, ``best-fid``...)
    or a checkpoint file, which is enough on its own.

    Returns ``(G_ema, info, state, path)``: G in eval mode on ``device`` with gradients off, the run's
    description (``config``, ``dataset``, ``config_hash``, ``gan``), the whole checkpoint state and the
    file it came from.
    """
    source = Path(source)
    path = source if source.is_file() else checkpoint_path(source, checkpoint)
    state = load_checkpoint(path)
    info = checkpoint_run_info(state, path)
    G = build_generator(state, info)
    G.load_state_dict(state["G_ema"])
    G.to(device).eval().requires_grad_(False)
    return G, info, state, path


def generate(
    run_dir: str | os.PathLike,
    n: int,
    out_dir: str | os.PathLike,
    *,
    batch: int = 256,
    seed: int = 0,
    truncation: float | None = None,
    overwrite: bool = False,
    checkpoint: str = "last",
    device: str = "auto",
    progress: bool | None = None,
    masks: str = "warped",
) -> Path:
    """Write ``n`` image + mask pairs sampled from the run's ``G_ema`` as a prepared set in ``out_dir``.

    ``truncation=None`` samples as the run's config says (``model.truncation``); the value used is recorded.
    ``masks`` (conditional G only): ``warped`` training masks (default) or the ``training`` masks unchanged.
    """
    try:
        check_mask_mode(masks)
    except ValueError as e:
        raise ConfigError(f"--masks: {e}") from None
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out_dir} already exists (pass --overwrite to replace it)")
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    G, info, state, ckpt_path = load_generator(run_dir, checkpoint, dev)
    run_dir = ckpt_path.parent  # also when handed the checkpoint file itself
    cfg = TrainConfig.from_dict(info["config"])
    if truncation is None:
        truncation = cfg.model.truncation  # what G applies by itself when not told otherwise
    ds = info["dataset"]
    channels, num_labels, size = int(ds["channels"]), len(ds["labels"]), int(ds["image_size"])
    conditional = bool(getattr(G, "conditional", False))
    train_masks = None
    if conditional:
        ps = load_prepared(ds["root"])
        train_masks = torch.from_numpy(ps.load(cfg.split)[1])
    amp = amp_dtype(cfg.amp, dev)

    patients = [f"gen-{i:06d}" for i in range(n)]
    meta: dict[str, Any] = {
        "name": f"{ds['name']}-generated",
        "modality": ds["modality"],
        "labels": ds["labels"],
        "source": "generated",
        "splits": {"train": patients, "val": [], "test": []},
        "normalisation": ds["normalisation"],
        "inputs_sha256": sha256_files([ckpt_path]),
        "run_id": run_dir.resolve().name,
        "run_dir": str(run_dir.resolve()),
        "config_hash": info.get("config_hash"),
        "code_version": code_version(),
        "gan": cfg.gan or info.get("gan"),
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "checkpoint": ckpt_path.name,
        "checkpoint_kimg": float(state["nimg"]) / 1000,
        "seed": seed,
        "truncation": truncation,
        "mask_source": mask_source(conditional, masks),
        "real_dataset": {"name": ds["name"], "root": ds["root"], "content_sha256": ds.get("content_sha256"),
                         "train_split": cfg.split},  # the real patients G learnt from (FID's default reference)
    }
    z_all = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    mask_gen = torch.Generator().manual_seed(seed + 1)
    with PreparedWriter(out_dir, n=n, channels=channels, size=size, meta=meta, overwrite=overwrite) as w:
        with progress_bar(total=n, unit="img", desc="generate", progress=progress) as bar:
            for s in range(0, n, batch):
                z = z_all[s : s + batch]
                drawn = draw_masks(train_masks, len(z), mask_gen, masks) if conditional else None
                joint = sample_joint(G, z, drawn, num_labels=num_labels, device=dev, amp=amp, batch=batch, truncation=truncation)
                image, mask = split_joint(joint, channels)
                w.write_batch(s, image.numpy().astype(np.float16), mask.numpy().astype(np.uint8),
                              patients[s : s + len(z)], np.zeros(len(z), np.int32))
                bar.update(len(z))
    return out_dir


def add_cli(sub) -> None:
    p = sub.add_parser("generate", help="sample N image+mask pairs from a run into a prepared set",
                       description="Sample N image + mask pairs from a training run's G_ema into the prepared format.")
    p.add_argument("run_dir", help="training run folder (medgan train --out), or one of its checkpoint files")
    p.add_argument("--n", type=int, default=10000, help="number of pairs (default 10000, as the paper)")
    p.add_argument("--out", required=True, help="output prepared folder")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation psi (1 = off; default: the run's model.truncation)")
    p.add_argument("--checkpoint", default="last", help="last | best-<metric> | a checkpoint path")
    p.add_argument("--device", default="auto")
    p.add_argument("--masks", choices=MASK_MODES, default="warped",
                   help="conditional G (SPADE): training masks under random geometric augmentation (warped, default) "
                        "or unchanged (training); ignored by an unconditional G, which makes its own masks")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    out = generate(args.run_dir, args.n, args.out, batch=args.batch, seed=args.seed, truncation=args.truncation,
                   overwrite=args.overwrite, checkpoint=args.checkpoint, device=args.device, masks=args.masks)
    print(f"wrote {args.n} generated pairs to {out}")
    return 0
