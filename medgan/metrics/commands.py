"""``medgan fid REAL_DIR GEN_DIR``: the CLI twin of ``medgan.metrics.evaluate``."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from medgan.io import write_json
from medgan.metrics.evaluation import evaluate, summary


def add_cli(sub) -> None:
    p = sub.add_parser(
        "fid",
        help="FID (+KID, PRDC, memorisation, real-vs-real floor) of a generated set against a real one",
        description="Compare a generated prepared set with a real prepared set. By default the real patients the GAN "
        "learnt from (the split its generated set records; train+val, all the paper's training patients, "
        "otherwise) are the reference; see --real-split.",
    )
    p.add_argument("real_dir", help="real prepared set")
    p.add_argument("gen_dir", help="generated prepared set (every image is used)")
    p.add_argument("--features", default="inception",
                   help="inception (pytorch-fid weights, must be present) | inception-random (labelled) | unet:RUN_DIR")
    p.add_argument("--kid", action="store_true", help="also KID (unbiased, subsets): the number to trust on small sets")
    p.add_argument("--prdc", action="store_true", help="also precision/recall/density/coverage (k=5)")
    p.add_argument("--memorisation", "--memorization", metavar="TRAIN_DIR", default=None,
                   help="prepared set the GAN trained on: near-copy score of generated vs the GAN's training split, "
                        "referenced to its test split")
    p.add_argument("--real-split", default=None,
                   help="split of REAL_DIR to compare with (train+val|train|val|test|all; default: the GAN's training split)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates for the FID 95%% CI (0 = off)")
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the real-vs-real floor")
    p.add_argument("--exact", action="store_true", help="use pytorch-fid's own scipy sqrtm for the FID (slow)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of bootstrap, KID subsets and the floor split")
    p.add_argument("--batch", type=int, default=None, help="images per forward pass (default 200 on GPU, 25 on CPU)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="do not read or write cached features")
    p.add_argument("--json", dest="json_out", metavar="OUT", default=None, help="write the result as JSON here")
    p.set_defaults(func=run_fid)


def run_fid(args: argparse.Namespace) -> int:
    kwargs = dict(
        features=args.features, kid=args.kid, prdc=args.prdc, memorisation=args.memorisation,
        real_split=args.real_split, bootstrap=args.bootstrap, floor=args.floor, exact=args.exact,
        kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, seed=args.seed, batch=args.batch,
        device=args.device, cache=args.cache,
    )
    with warnings.catch_warnings():
        # the summary prints every warning of the result once; no second copy from the warnings module
        warnings.simplefilter("ignore", UserWarning)
        result = evaluate(args.real_dir, args.gen_dir, **kwargs)
    print(summary(result))
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        print(f"wrote {out}")
    else:
        print(json.dumps({k: result[k] for k in ("fid", "fid_ci95", "features", "n_real", "n_gen")}))
    return 0
