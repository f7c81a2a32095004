"""``medgan data phantom|prepare|info``: thin wrappers over ``write_phantom``, ``prepare`` and ``describe``."""

from __future__ import annotations

import argparse
import json
import sys

from medgan.data.phantoms import write_phantom
from medgan.data.prepare import prepare
from medgan.data.prepared import describe, load_prepared
from medgan.data.subset import add_cli as add_subset_cli
from medgan.errors import UserError

DATASETS = ("acdc", "sliver07", "idrid")


def _phantom(args: argparse.Namespace) -> int:
    out = write_phantom(args.dataset, args.out, patients=args.patients, seed=args.seed,
                        overwrite=args.overwrite, progress=False if args.quiet else None)
    print(f"wrote {args.dataset} phantom to {out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    if args.size is not None and args.size < 8:
        raise UserError(f"--size {args.size} is too small (use >= 8)")
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    out = prepare(args.dataset, args.raw, args.out, size=args.size, seed=args.seed, overwrite=args.overwrite,
                  val_fraction=args.val_fraction, progress=False if args.quiet else None)
    print(describe(load_prepared(out)))
    return 0


def _info(args: argparse.Namespace) -> int:
    ps = load_prepared(args.prepared_dir)
    if args.json:
        meta = dict(ps.meta)
        meta["num_slices"] = len(ps)
        json.dump(meta, sys.stdout, indent=2)
        print()
    else:
        print(describe(ps))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("data", help="make phantoms, prepare raw datasets, describe prepared sets")
    sub = p.add_subparsers(dest="data_command", metavar="{phantom,prepare,info,subset}")
    sub.required = True

    ph = sub.add_parser("phantom", help="write a synthetic dataset in the real raw layout")
    ph.add_argument("dataset", choices=DATASETS)
    ph.add_argument("--out", required=True, metavar="RAW_DIR")
    ph.add_argument("--patients", type=int, default=None, help="number of patients / volumes / images")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--overwrite", action="store_true")
    ph.add_argument("--quiet", action="store_true", help="no progress bar")
    ph.set_defaults(func=_phantom)

    pr = sub.add_parser("prepare", help="convert a raw dataset into the prepared format")
    pr.add_argument("dataset", choices=(*DATASETS, "nnunet"))  # nnunet: a DatasetXXX_Name folder (medgan.data.nnunet)
    pr.add_argument("--raw", required=True, metavar="RAW_DIR")
    pr.add_argument("--out", required=True, metavar="PREPARED_DIR")
    pr.add_argument("--size", type=int, default=None, help="output image side (default: the paper's)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    pr.add_argument("--val-fraction", type=float, default=None,
                    help="share of training patients held out for validation (default 0.2; 0.15 for sliver07)")
    pr.add_argument("--overwrite", action="store_true")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_prepare)

    info = sub.add_parser("info", help="summarise a prepared set")
    info.add_argument("prepared_dir", metavar="PREPARED_DIR")
    info.add_argument("--json", action="store_true", help="print dataset.json (+ num_slices) as JSON")
    info.set_defaults(func=_info)

    add_subset_cli(sub)  # medgan data subset (medgan.data.subset)
