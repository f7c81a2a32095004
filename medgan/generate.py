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

Reproducibility: all ``z`` are drawn up front from ``torch.Generator().manual_seed(seed)`` on the CPU, so
an unconditional set depends on (checkpoint, n, seed) only, not on the batch size or the device (up to
floating point); masks for a conditional G are drawn per batch from a second generator seeded by ``seed``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.cli import UserError
from medgan.data.prepared import PreparedWriter, mask_to_onehot, sha256_files, split_joint

MASK_SOURCE_GENERATOR = "generator"
MASK_SOURCE_WARPED = "training masks under random geometric augmentation (medgan.data.transforms.random_geometric_masks)"


def _call_G(G: nn.Module, z: torch.Tensor, mask_onehot: torch.Tensor | None, truncation: float) -> torch.Tensor:
    """``G(z, mask)``; truncation goes to G when it takes it (StyleGAN2: toward the mean w), else scales z.

    Scaling z by ψ is the same rule applied in z space (the mean of z is 0), the usual DCGAN stand-in.
    """
    if truncation == 1.0:
        return G(z, mask_onehot)
    params = inspect.signature(G.forward).parameters
    for name in ("truncation_psi", "truncation"):
        if name in params:
            return G(z, mask_onehot, **{name: truncation})
    return G(z * truncation, mask_onehot)


@torch.no_grad()
def sample_joint(
    G: nn.Module,
    z: torch.Tensor,
    masks: torch.Tensor | None = None,
    *,
    num_labels: int,
    device: torch.device | str = "cpu",
    amp: torch.dtype | None = None,
    batch: int = 256,
    truncation: float = 1.0,
) -> torch.Tensor:
    """``z [n, z_dim]`` (+ ``masks [n, H, W]`` for a conditional G) -> joint ``[n, C + K, H, W]`` float32 on CPU."""
    device = torch.device(device)
    was_training = G.training
    G.eval()
    out = []
    try:
        for s in range(0, len(z), batch):
            zb = z[s : s + batch].to(device)
            mb = None if masks is None else mask_to_onehot(masks[s : s + batch], num_labels).to(device)
            with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
                joint = _call_G(G, zb, mb, truncation)
            out.append(joint.float().clamp_(-1, 1).cpu())
    finally:
        G.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def draw_masks(train_masks: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` masks ``[n, H, W]`` for a conditional G: warped random training masks (see module doc)."""
    from medgan.data.transforms import random_geometric_masks

    return random_geometric_masks(train_masks, n, generator=generator)


def sample_pairs(
    G: nn.Module,
    n: int,
    *,
    generator: torch.Generator,
    channels: int,
    num_labels: int,
    device: torch.device | str = "cpu",
    amp: torch.dtype | None = None,
    train_masks: torch.Tensor | None = None,
    batch: int = 256,
    truncation: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs from ``G``: (``images float32 [n, C, H, W]`` in [-1, 1], ``masks int64 [n, H, W]``).

    ``train_masks`` (int64 ``[N, H, W]``) is required for a conditional G and ignored otherwise.
    """
    conditional = bool(getattr(G, "conditional", False))
    if conditional and train_masks is None:
        raise ValueError("a conditional G needs train_masks to draw its input masks from")
    z = torch.randn(n, G.z_dim, generator=generator)
    masks = draw_masks(train_masks, n, generator) if conditional else None
    joint = sample_joint(G, z, masks, num_labels=num_labels, device=device, amp=amp, batch=batch, truncation=truncation)
    image, mask = split_joint(joint, channels)
    return image.numpy(), mask.numpy()


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """``"last"`` -> checkpoint-last.pt, ``"best-fid"`` -> checkpoint-best-fid.pt, else a path."""
    for candidate in (run_dir / f"checkpoint-{checkpoint}.pt", Path(checkpoint)):
        if candidate.is_file():
            return candidate
    known = sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))
    raise UserError(f"no checkpoint {checkpoint!r} in {run_dir} (found: {', '.join(known) or 'none'})")


def load_generator(run_dir: str | os.PathLike, checkpoint: str = "last", device: str | torch.device = "cpu"):
    """(``G_ema`` in eval mode on ``device``, run info dict, checkpoint state) of a run."""
    from medgan.config import TrainConfig
    from medgan.models import MODELS
    from medgan.train import load_checkpoint, read_run_info

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    cfg = TrainConfig.from_dict(info["config"])
    ds = info["dataset"]
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    pair = MODELS[cfg.model.name](cfg.model, channels=int(ds["channels"]), num_labels=len(ds["labels"]),
                                  resolution=int(ds["image_size"]))
    G = pair.G
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
) -> Path:
    """Write ``n`` image + mask pairs sampled from the run's ``G_ema`` as a prepared set in ``out_dir``.

    ``truncation=None`` samples as the run's config says (``model.truncation``); the value used is recorded.
    """
    from tqdm.auto import tqdm

    from medgan.config import TrainConfig
    from medgan.train import amp_dtype, resolve_device

    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if batch < 1:
        raise UserError(f"--batch must be >= 1, got {batch}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output directory {out_dir} already exists (pass --overwrite to replace it)")
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    G, info, state, ckpt_path = load_generator(run_dir, checkpoint, dev)
    cfg = TrainConfig.from_dict(info["config"])
    if truncation is None:
        truncation = cfg.model.truncation  # what G applies by itself when not told otherwise
    if truncation is None:
        truncation = cfg.model.truncation  # what G applies by itself when not told otherwise
    ds = info["dataset"]
    channels, num_labels, size = int(ds["channels"]), len(ds["labels"]), int(ds["image_size"])
    conditional = bool(getattr(G, "conditional", False))
    train_masks = None
    if conditional:
        from medgan.data.prepared import load_prepared

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
        "gan": cfg.gan or info.get("gan"),
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "checkpoint": ckpt_path.name,
        "checkpoint_kimg": float(state["nimg"]) / 1000,
        "seed": seed,
        "truncation": truncation,
        "mask_source": MASK_SOURCE_WARPED if conditional else MASK_SOURCE_GENERATOR,
        "real_dataset": {"name": ds["name"], "root": ds["root"], "content_sha256": ds.get("content_sha256")},
    }
    z_all = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    mask_gen = torch.Generator().manual_seed(seed + 1)
    with PreparedWriter(out_dir, n=n, channels=channels, size=size, meta=meta, overwrite=overwrite) as w:
        with tqdm(total=n, unit="img", desc="generate", disable=(None if progress is None else not progress)) as bar:
            for s in range(0, n, batch):
                z = z_all[s : s + batch]
                masks = draw_masks(train_masks, len(z), mask_gen) if conditional else None
                joint = sample_joint(G, z, masks, num_labels=num_labels, device=dev, amp=amp, batch=batch, truncation=truncation)
                image, mask = split_joint(joint, channels)
                w.write_batch(s, image.numpy().astype(np.float16), mask.numpy().astype(np.uint8),
                              patients[s : s + len(z)], np.zeros(len(z), np.int32))
                bar.update(len(z))
    return out_dir


def add_cli(sub) -> None:
    p = sub.add_parser("generate", help="sample N image+mask pairs from a run into a prepared set",
                       description="Sample N image + mask pairs from a training run's G_ema into the prepared format.")
    p.add_argument("run_dir", help="training run folder (medgan train --out)")
    p.add_argument("--n", type=int, default=10000, help="number of pairs (default 10000, as the paper)")
    p.add_argument("--out", required=True, help="output prepared folder")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation psi (1 = off; default: the run's model.truncation)")
    p.add_argument("--checkpoint", default="last", help="last | best-<metric> | a checkpoint path")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    out = generate(args.run_dir, args.n, args.out, batch=args.batch, seed=args.seed, truncation=args.truncation,
                   overwrite=args.overwrite, checkpoint=args.checkpoint, device=args.device)
    print(f"wrote {args.n} generated pairs to {out}")
    return 0
