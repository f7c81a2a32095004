"""ΔFID of the bf16 fast mode against fp32 (the paper's precision) on a short phantom run.

    python benchmarks/amp_fid.py --data data/prepared/acdc-64 --out runs/amp-fid [--gan hinge --kimg 4 --n 256]

Trains the same GAN twice (same seed, same config but ``amp``), samples ``n`` pairs from each G_ema with the same
seed and scores both against the real training patients (train+val) with the same features (``inception-random``
by default: labelled random Inception weights — only the *difference* between the two FIDs means something).
Also reports the real-vs-real floor (the FID noise level at this n). Writes ``amp-fid.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "prepared" / "acdc-64"))
    p.add_argument("--out", default=str(ROOT / "runs" / "amp-fid"))
    p.add_argument("--gan", default="hinge")
    p.add_argument("--kimg", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=256, help="generated pairs per run")
    p.add_argument("--features", default="inception-random")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from medgan.generate import generate
    from medgan.metrics import evaluate
    from medgan.training import make_config, run_training

    out = Path(a.out)
    result = {"data": a.data, "gan": a.gan, "kimg": a.kimg, "batch": a.batch, "n": a.n, "features": a.features,
              "seed": a.seed, "runs": {}}
    for amp in ("off", "bf16"):
        t0 = time.perf_counter()
        run = out / f"run-{amp}"
        if not (run / "checkpoint-last.pt").is_file():
            cfg = make_config(data=a.data, out=run, gan=a.gan, kimg=a.kimg, batch=a.batch,
                              overrides=["g_filters=32", "d_filters=32", f"amp={amp}", f"seed={a.seed}", "device=cpu",
                                         "grid=0", "snapshot_kimg=100"])
            run_training(cfg, progress=False)
        t_train = time.perf_counter() - t0
        gen = generate(run, a.n, out / f"gen-{amp}", seed=a.seed, overwrite=True, progress=False)
        r = evaluate(a.data, gen, features=a.features, bootstrap=0, floor=amp == "off", seed=a.seed, progress=False)
        result["runs"][amp] = {"fid": r["fid"], "n_real": r["n_real"], "real_split": r["real_split"], "train_s": t_train,
                               **({"floor_fid": r["floor"]["fid"]} if "floor" in r else {})}
    result["delta_fid_bf16_minus_fp32"] = result["runs"]["bf16"]["fid"] - result["runs"]["off"]["fid"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "amp-fid.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
