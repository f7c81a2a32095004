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

Labels and codes (``medgan.models.conditional``). A label-conditional G (``model.condition``) draws every pair
for ``label`` (``--label DCM`` / ``--label DCM,ES``: one value per conditioned field) or, without it, for
classes drawn from the training set's class proportions (G's ``label_prior``; generator seeded ``seed + 2``).
The set stores the label per pair in the same per-slice arrays as the prepared ACDC set (``group`` and/or
``phase``), so a classifier reads real and synthetic sets alike, and ``dataset.json`` says how they were
chosen (``label_source``). An InfoGAN G records its codes per pair (``code_cat``, ``code_c0``, ...);
``codes={"cat": 2, "c0": 0.5}`` (``--code cat=2 --code c0=0.5``) fixes some of them for every pair.
Every generated set records ``data_source``: the ``source`` (phantom | raw) of the set its GAN trained on.

Reproducibility: all ``z`` are drawn up front from ``torch.Generator().manual_seed(seed)`` on the CPU, so
an unconditional set depends on (checkpoint, n, seed) only, not on the batch size or the device (up to
floating point); masks for a conditional G are drawn per batch from a second generator seeded by ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.config import TrainConfig
from medgan.data.prepared import PreparedWriter, load_prepared, split_joint
from medgan.errors import CheckpointError, ConfigError, OutputExistsError, UserError
from medgan.io import sha256_files
from medgan.models import MODELS
from medgan.models.conditional import class_values, codes_from_z, parse_label, z_for_codes
from medgan.runtime import amp_dtype, autocast, code_version, progress_bar, resolve_device
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


def build_pair(state: dict[str, Any], info: dict[str, Any]):
    """An untrained G + D pair (``GANPair``) of the architecture a checkpoint was written for.

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
    return MODELS[model_cfg.name](model_cfg, channels=channels, num_labels=num_labels, resolution=resolution)


def build_generator(state: dict[str, Any], info: dict[str, Any]) -> nn.Module:
    """An untrained G of the architecture a checkpoint was written for (``build_pair``'s G)."""
    return build_pair(state, info).G


NETWORKS = ("G_ema", "G", "D")  # what a checkpoint holds weights of


def load_network(source: str | os.PathLike, checkpoint: str = "last", device: str | torch.device = "cpu", *,
                 network: str = "G_ema"):
    """Load one network of a run: ``source`` is a run folder (with ``checkpoint`` = ``last``, ``best-fid``...)
    or a checkpoint file, which is enough on its own; ``network`` is ``G_ema`` (what sampling uses), ``G`` or ``D``.

    Returns ``(net, info, state, path)``: the network in eval mode on ``device`` with gradients off (a batch norm
    uses its running statistics, so one sample's output never depends on its batch), the run's description
    (``config``, ``dataset``, ``config_hash``, ``gan``), the whole checkpoint state and the file it came from.
    """
    if network not in NETWORKS:
        raise UserError(f"no network {network!r} in a checkpoint; use one of {', '.join(NETWORKS)}")
    source = Path(source)
    path = source if source.is_file() else checkpoint_path(source, checkpoint)
    state = load_checkpoint(path)
    info = checkpoint_run_info(state, path)
    pair = build_pair(state, info)
    net = pair.D if network == "D" else pair.G
    net.load_state_dict(state[network])
    net.to(device).eval().requires_grad_(False)
    return net, info, state, path


def load_generator(source: str | os.PathLike, checkpoint: str = "last", device: str | torch.device = "cpu"):
    """Load ``G_ema`` of a run (``load_network``): returns ``(G_ema, info, state, path)``."""
    return load_network(source, checkpoint, device, network="G_ema")


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
    label: str | None = None,
    codes: Mapping[str, float] | None = None,
) -> Path:
    """Write ``n`` image + mask pairs sampled from the run's ``G_ema`` as a prepared set in ``out_dir``.

    ``truncation=None`` samples as the run's config says (``model.truncation``); the value used is recorded.
    ``masks`` (conditional G only): ``warped`` training masks (default) or the ``training`` masks unchanged.
    ``label`` (label-conditional run only): ``"DCM"`` / ``"DCM,ES"``; None draws the training proportions.
    ``codes`` (InfoGAN run only): ``{"cat": k, "c<j>": value in (-1, 1)}`` fixed for every pair.
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
    n_classes, info_cat, info_cont = (int(getattr(G, k, 0)) for k in ("num_classes", "info_cat", "info_cont"))
    if label is not None and not n_classes:
        raise ConfigError(f"--label {label!r}: run {run_dir} is unconditional (model.condition is empty); "
                          "train with --set model.condition=group to generate for a label")
    if codes and not (info_cat or info_cont):
        raise ConfigError(f"--code: run {run_dir} has no InfoGAN codes (model.info_cat = model.info_cont = 0)")
    train_masks = None
    if conditional:
        ps = load_prepared(ds["root"])
        if ds.get("content_sha256") and ps.content_sha256 != ds["content_sha256"]:
            # the run's dataset.json path is followed only to the very set the GAN trained on
            raise CheckpointError(f"{ds['root']} is not the set run {run_dir} trained on (content "
                                  f"{ps.content_sha256[:12]} != {ds['content_sha256'][:12]}): its training masks "
                                  "cannot be drawn from another set")
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
                         "train_split": cfg.split, "source": ds.get("source")},  # the real patients G learnt from
        "data_source": ds.get("source"),  # phantom | raw: what the GAN was trained on
    }
    z_all = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    labels, extra = None, {}
    if n_classes or info_cat or info_cont:
        z_all, labels, extra = _labels_and_codes(G, z_all, cfg.model.condition, label, codes, seed, truncation, meta)
    mask_gen = torch.Generator().manual_seed(seed + 1)
    with PreparedWriter(out_dir, n=n, channels=channels, size=size, meta=meta, overwrite=overwrite,
                        extra_arrays={k: v.dtype for k, v in extra.items()}) as w:
        for k, v in extra.items():
            w.extra[k][:] = v
        with progress_bar(total=n, unit="img", desc="generate", progress=progress) as bar:
            for s in range(0, n, batch):
                z = z_all[s : s + batch]
                drawn = draw_masks(train_masks, len(z), mask_gen, masks) if conditional else None
                if labels is not None or extra:  # z already truncated (DCGAN rule: ψ z), codes already set
                    joint = _sample_labelled(G, z, None if labels is None else labels[s : s + batch], dev, amp)
                else:
                    joint = sample_joint(G, z, drawn, num_labels=num_labels, device=dev, amp=amp, batch=batch,
                                         truncation=truncation)
                image, mask = split_joint(joint, channels)
                w.write_batch(s, image.numpy().astype(np.float16), mask.numpy().astype(np.uint8),
                              patients[s : s + len(z)], np.zeros(len(z), np.int32))
                bar.update(len(z))
    return out_dir


def _labels_and_codes(G: nn.Module, z: torch.Tensor, condition: str, label: str | None,
                      codes: Mapping[str, float] | None, seed: int, truncation: float, meta: dict[str, Any]):
    """``(z, labels [n] | None, extra arrays)`` for a label-conditional and/or InfoGAN G; fills ``meta``."""
    n = len(z)
    z = z * truncation  # the DCGAN truncation rule, applied before fixed codes so that they stay exact
    labels = None
    extra: dict[str, np.ndarray] = {}
    if G.num_classes:
        if label is not None:
            labels = torch.full((n,), parse_label(label, condition), dtype=torch.long)
            meta["label_source"] = f"--label {label}"
        else:
            prior = G.label_prior.detach().cpu().double()
            labels = torch.multinomial(prior, n, replacement=True, generator=torch.Generator().manual_seed(seed + 2))
            meta["label_source"] = "drawn from the training set's class proportions (G.label_prior), seed + 2"
        meta["condition"], meta["label"] = condition, label
        extra.update(class_values(labels, condition))
    if G.info_cat or G.info_cont:
        codes = dict(codes or {})
        cat = codes.pop("cat", None)
        bad = [k for k in codes if not (k.startswith("c") and k[1:].isdigit())]
        if bad:
            raise ConfigError(f"--code: unknown code name(s) {sorted(bad)}; use cat and c0, c1, ...")
        cont = {int(k[1:]): float(v) for k, v in codes.items()}
        z = z_for_codes(z, G.info_cat, G.info_cont, cat=None if cat is None else int(cat), cont=cont)
        cat_t, cont_t = codes_from_z(z, G.info_cat, G.info_cont)
        if cat_t is not None:
            extra["code_cat"] = cat_t.numpy().astype(np.int64)
        for j in range(G.info_cont):
            extra[f"code_c{j}"] = cont_t[:, j].numpy().astype(np.float32)
        meta["info_codes"] = {"info_cat": G.info_cat, "info_cont": G.info_cont,
                              "fixed": {**({"cat": int(cat)} if cat is not None else {}),
                                        **{f"c{j}": v for j, v in cont.items()}}}
    return z, labels, extra


@torch.no_grad()
def _sample_labelled(G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device, amp) -> torch.Tensor:
    """One batch ``G(z, labels=labels)`` -> joint float32 on the CPU, clamped as ``sample_joint`` does."""
    kw = {} if labels is None else {"labels": labels.to(device)}
    with autocast(device, amp):
        joint = G(z.to(device), None, **kw)
    return joint.float().clamp_(-1, 1).cpu()


def parse_codes(items: list[str] | None) -> dict[str, float]:
    """``["cat=2", "c0=0.5"]`` -> ``{"cat": 2.0, "c0": 0.5}`` (``--code``)."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--code expects name=value (cat=2, c0=0.5), got {item!r}")
    return out


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
    p.add_argument("--label", default=None,
                   help="label-conditional run: generate every pair for this label, e.g. DCM or DCM,ES "
                        "(default: labels drawn from the training set's proportions, recorded per pair)")
    p.add_argument("--code", action="append", default=None, metavar="NAME=VALUE",
                   help="InfoGAN run: fix a code for every pair, e.g. --code cat=2 --code c0=0.5 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    out = generate(args.run_dir, args.n, args.out, batch=args.batch, seed=args.seed, truncation=args.truncation,
                   overwrite=args.overwrite, checkpoint=args.checkpoint, device=args.device, masks=args.masks,
                   label=args.label, codes=parse_codes(args.code))
    print(f"wrote {args.n} generated pairs to {out}")
    return 0
