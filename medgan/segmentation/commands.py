"""``medgan segment``: the CLI twin of ``medgan.segmentation.segment`` (one Table 2 row)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medgan.io import write_json
from medgan.segmentation.protocol import format_table, segment
from medgan.segmentation.train import UNetConfig


def add_cli(sub) -> None:
    p = sub.add_parser("segment", help="train U-Nets on real/augmented/generated sets, Dice on the real test split")
    p.add_argument("--train", action="append", required=True, metavar="DIR",
                   help="prepared set to train on (its 'train' split); repeat to mix sets")
    p.add_argument("--test", required=True, metavar="DIR", help="the real prepared set (test split scored, val split for early stopping)")
    p.add_argument("--val", metavar="DIR", help="real set whose 'val' split drives early stopping (default: --test)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--augment", action="store_true", help="classical augmentation of the training batches (real+aug)")
    p.add_argument("--epochs", type=int, help="max epochs (unet max_epochs)")
    p.add_argument("--out", metavar="RUN_DIR", help="keep the runs here (seed-<s>/unet.pt, segment.json)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="UNetConfig override, repeatable")
    p.add_argument("--device", help="auto | cpu | cuda[:N]")
    p.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    cfg = UNetConfig().with_overrides(args.set)
    if args.epochs is not None:
        cfg = cfg.with_overrides({"max_epochs": args.epochs})
    if args.device:
        cfg = cfg.with_overrides({"device": args.device})
    result = segment(args.train, args.test, seeds=args.seeds, augment=args.augment, cfg=cfg, out_dir=args.out,
                     val_dir=args.val)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
