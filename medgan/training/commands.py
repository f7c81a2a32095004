"""``medgan train`` and its Python twin ``train``; the config it builds (``make_config``, ``apply_gan``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from medgan.config import ConfigError, TrainConfig, apply_overrides, replace
from medgan.errors import UnknownNameError, UserError
from medgan.models import GANS
from medgan.training.distributed import dist_from_env
from medgan.training.loop import run_training
from medgan.training.runs import load_run_config, run_status


def apply_gan(cfg: TrainConfig, name: str) -> TrainConfig:
    """``cfg`` with ``GANS[name]`` applied: its model, its loss, then its config overrides."""
    try:
        spec = GANS[name]
    except UnknownNameError as e:
        raise ConfigError(f"--gan: {e.args[0]}") from None
    cfg = replace(cfg, gan=name, model=replace(cfg.model, name=spec.model), loss=replace(cfg.loss, name=spec.loss))
    return apply_overrides(cfg, dict(spec.overrides)) if spec.overrides else cfg


def make_config(
    *,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    gan: str | None = None,
    kimg: float | None = None,
    batch: int | None = None,
    overrides: list[str] | dict[str, Any] = (),
    resume: bool = False,
) -> TrainConfig:
    """The config ``medgan train`` builds: GANS[gan], then --kimg/--batch, then every ``--set``.

    With ``resume`` and an existing run, the run's stored config is the base, so ``--resume`` alone
    continues a run; any option given on top must leave the training config unchanged.
    """
    stored = Path(out) / "config.json"
    if resume and stored.is_file():
        cfg = load_run_config(out)
        if gan is not None and gan != cfg.gan:
            cfg = apply_gan(cfg, gan)
    else:
        cfg = apply_gan(TrainConfig(), gan or "dcgan")
    changes: dict[str, Any] = {"out": str(out)}
    if data is not None:
        changes["data"] = str(Path(data).resolve())
    if kimg is not None:
        changes["kimg"] = kimg
    if batch is not None:
        changes["batch"] = batch
    cfg = apply_overrides(cfg, changes)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def train(*, data=None, gan=None, out, kimg=None, batch=None, overrides=(), resume=False, progress=None) -> Path:
    """Python twin of ``medgan train``."""
    cfg = make_config(out=out, data=data, gan=gan, kimg=kimg, batch=batch, overrides=list(overrides), resume=resume)
    return run_training(cfg, resume=resume, progress=progress)


def add_cli(sub) -> None:
    p = sub.add_parser("train", help="train a GAN on a prepared set into a run folder",
                       description="Train a GAN on a prepared set. Every config field can be set with --set knob=value.")
    p.add_argument("--data", help="prepared dataset folder (optional with --resume)")
    p.add_argument("--gan", help=f"one of {{{','.join(GANS.names())}}} (default dcgan; with --resume: the run's)")
    p.add_argument("--out", required=True, help="run folder (must not exist unless --resume)")
    p.add_argument("--kimg", type=float, help="train until this many thousand real images were shown to D")
    p.add_argument("--batch", type=int, help="global batch size (split evenly over torchrun processes)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KNOB=VALUE",
                   help="config overrides, e.g. --set lr=1e-4 model.g_filters=32 aug.diffaugment=color,translation")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint-last.pt "
                   "(checkpoint-prev.pt when the newest is damaged; kimg 0 when a killed run wrote none)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="force the progress bar on/off")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    if not args.resume and args.data is None:
        raise UserError("--data PREPARED_DIR is required (except with --resume)")
    run_dir = train(data=args.data, gan=args.gan, out=args.out, kimg=args.kimg, batch=args.batch,
                    overrides=args.overrides, resume=args.resume, progress=args.progress)
    if not dist_from_env().is_writer:
        return 0  # rank 0 reports the run's status (and its exit code says how it ended)
    status = run_status(run_dir)
    print(f"{run_dir}: {status['status']} at kimg {status['kimg']:.3f}" + (f" ({status['reason']})" if status["reason"] else ""))
    return 0 if status["status"] == "finished" else 1
