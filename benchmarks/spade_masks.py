"""SPADE sampled with warped vs unchanged training masks: FID and memorisation score of each.

    python benchmarks/spade_masks.py [--out runs/spade-masks --kimg 2 --n 200 --size 64]

The choice of SPADE's sampling masks (book/deviations.md, "SPADE's masks at sampling") can move a headline
claim: copying the training masks may raise the memorisation score and lower FID. This trains one tiny SPADE
on the IDRiD phantom (quick profile: ``medgan.experiments.prepared_set``; phantoms are written when missing),
samples ``n`` pairs with each ``--masks`` mode from the same seed and scores both against the real data with
``medgan.metrics.evaluate``: FID against the GAN's training patients (train+val) and the memorisation score
(generated vs training features, the unseen test patients as the reference). Features are ``inception-random``
(labelled random Inception weights): only the *comparison* between the two modes means something, and with
phantom data and a few kimg the numbers are a check that the switch is measurable, not a result.
Writes ``spade-masks.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY = ["model.g_filters=16", "model.d_filters=16", "model.spade_hidden=32", "loss.vgg_weight=0",
        "loss.vgg_features=vgg19-random", "device=cpu", "grid=0", "snapshot_kimg=100"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "spade-masks"))
    p.add_argument("--data-root", default=None, help="where the phantom is written (default: OUT/data)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--kimg", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n", type=int, default=200, help="generated pairs per mask mode")
    p.add_argument("--features", default="inception-random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="extra config overrides (knob=value)")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from medgan.experiments import prepared_set
    from medgan.generate import generate
    from medgan.metrics import evaluate
    from medgan.training import make_config, run_training

    out = Path(a.out)
    ps = prepared_set("idrid", "quick", data_root=a.data_root or out / "data", size=a.size, seed=a.seed)
    real = ps.root
    run = out / "run"
    overrides = [*TINY, f"seed={a.seed}", *a.set]
    t0 = time.perf_counter()
    if not (run / "checkpoint-last.pt").is_file():
        run_training(make_config(data=real, out=run, gan="spade", kimg=a.kimg, batch=a.batch, overrides=overrides),
                     progress=False)
    result = {"data": str(real), "source": ps.source, "size": a.size, "gan": "spade", "kimg": a.kimg, "batch": a.batch,
              "overrides": overrides, "n": a.n, "features": a.features, "seed": a.seed,
              "train_s": time.perf_counter() - t0, "modes": {}}
    for mode in ("warped", "training"):
        gen = generate(run, a.n, out / f"gen-{mode}", seed=a.seed, masks=mode, overwrite=True, progress=False)
        r = evaluate(real, gen, features=a.features, memorisation=real, bootstrap=0, floor=False, seed=a.seed,
                     progress=False)
        m = r["memorisation"]
        result["modes"][mode] = {"fid": r["fid"], "n_real": r["n_real"], "real_split": r["real_split"],
                                 "near_copy_fraction": m["near_copy_fraction"], "expected_fraction": m["expected_fraction"],
                                 "median_ratio": m["median_ratio"], "memorised": m.get("memorised"),
                                 "p_value": m.get("p_value")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "spade-masks.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"SPADE on {real.name} ({ps.source}), {a.kimg} kimg, n={a.n}, features {a.features}")
    print(f"{'masks':<10}{'FID':>10}{'near-copy':>11}{'expected':>10}{'median ratio':>14}{'memorised':>11}")
    for mode, v in result["modes"].items():
        print(f"{mode:<10}{v['fid']:>10.2f}{v['near_copy_fraction']:>11.3f}{v['expected_fraction']:>10.3f}"
              f"{v['median_ratio']:>14.3f}{str(v['memorised']):>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
