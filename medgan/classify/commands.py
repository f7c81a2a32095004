"""``medgan classify``: the CLI twin of ``medgan.classify.classify`` (one classification-accuracy-score row)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medgan.classify.protocol import classify, format_table
from medgan.classify.train import ClassifierConfig
from medgan.io import write_json


def add_cli(sub) -> None:
    p = sub.add_parser("classify", help="train slice classifiers (ACDC group) on real/synthetic sets, accuracy on "
                                        "the real test split (CAS)")
    p.add_argument("--train", action="append", required=True, metavar="SET[,SET]",
                   help="labelled prepared set(s) to train on (their 'train' split); comma-separate or repeat to mix")
    p.add_argument("--test", required=True, metavar="DIR",
                   help="the real prepared set (test split scored, val split for early stopping)")
    p.add_argument("--val", metavar="DIR", help="real set whose 'val' split drives early stopping (default: --test)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--inputs", choices=("image", "image+mask"), help="what the CNN reads (default: image)")
    p.add_argument("--epochs", type=int, help="max epochs (classify max_epochs)")
    p.add_argument("--out", metavar="DIR", help="keep the runs here (seed-<s>/classifier.pt, classify.json)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="ClassifierConfig override, repeatable (e.g. --set width=32 --set classes=NOR,DCM)")
    p.add_argument("--device", help="auto | cpu | cuda[:N]")
    p.set_defaults(func=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    cfg = ClassifierConfig().with_overrides(args.set)
    extra = {k: v for k, v in (("max_epochs", args.epochs), ("device", args.device), ("inputs", args.inputs))
             if v is not None}
    if extra:
        cfg = cfg.with_overrides(extra)
    train = [d for item in args.train for d in item.split(",") if d]
    result = classify(train, args.test, seeds=args.seeds, cfg=cfg, out_dir=args.out, val_dir=args.val)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
