"""The paper's Table 2 for one dataset, computed: the Python twin of notebook 05 (04 and 06 draw on its runs).

For each GAN (DCGAN, LSGAN, WGAN, WGAN-GP, HingeGAN, SPADE, StyleGAN2), its run trained with the sweep's best
configuration where notebook 03 found one (``experiments.table2_run``), its generated set, FID with the real-vs-real
floor and a bootstrap CI, KID, the memorisation score and the domain FID (the Fréchet distance on the encoder of
the U-Net trained on the real data); then the Dice on the real test patients of a U-Net trained on each of the
paper's rows: the original data, the augmented original data, each GAN's generated set, and original + SPADE /
original + StyleGAN2. Beside them the numbers the paper published, and per dataset the Spearman rank correlation
of FID and of domain FID with the generated sets' Dice (the paper's "lower FID does not mean better Dice").

Every step reuses what is current (``medgan.experiments``: runs, generated sets, U-Nets; ``medgan.metrics``:
cached features), so a second call costs seconds. The result is JSON-ready and written to ``table2.json`` in
``{runs_root}/table2-<prepared set>-<profile>/``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medgan import experiments
from medgan.config import get_profile
from medgan.errors import UserError
from medgan.io import jsonable, write_json
from medgan.metrics import evaluate
from medgan.runtime import code_version
from medgan.segmentation import UNetConfig

TABLE2_GANS = ("dcgan", "lsgan", "wgan", "wgan-gp", "hinge", "spade", "stylegan2")  # the paper's order (+ WGAN-GP)
COMBO_GANS = ("spade", "stylegan2")  # the paper's "Orig. Data + X" rows
LABELS = {"dcgan": "DCGAN", "lsgan": "LSGAN", "wgan": "WGAN", "wgan-gp": "WGAN-GP", "hinge": "HingeGAN",
          "spade": "SPADE", "stylegan2": "StyleGAN2"}
DATASET_LABELS = {"acdc": "ACDC", "sliver07": "SLiver07", "idrid": "IDRiD"}
RESULT_FILE = "table2.json"

# Skandarani et al., Table 2, as published: row -> (FID, U-Net Dice); None where the paper prints no number
# (no FID for the real rows; no WGAN-GP row: the paper swept WGAN-GP in Table 1 but reports no Table 2 line for it).
PAPER_TABLE2: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "acdc": {"real": (None, 0.89), "real-aug": (None, 0.90), "dcgan": (60.12, 0.30), "lsgan": (59.65, 0.39),
             "wgan": (74.30, 0.70), "hinge": (61.00, 0.63), "spade": (41.54, 0.86), "stylegan2": (24.74, 0.87),
             "real+spade": (None, 0.90), "real+stylegan2": (None, 0.90)},
    "idrid": {"real": (None, 0.83), "real-aug": (None, 0.84), "dcgan": (91.34, 0.29), "lsgan": (78.61, 0.20),
              "wgan": (62.12, 0.72), "hinge": (78.61, 0.69), "spade": (1.09, 0.82), "stylegan2": (23.72, 0.80),
              "real+spade": (None, 0.84), "real+stylegan2": (None, 0.84)},
    "sliver07": {"real": (None, 0.72), "real-aug": (None, 0.70), "dcgan": (56.41, 0.14), "lsgan": (56.82, 0.15),
                 "wgan": (73.11, 0.16), "hinge": (67.69, 0.15), "spade": (47.62, 0.61), "stylegan2": (29.06, 0.36),
                 "real+spade": (None, 0.71), "real+stylegan2": (None, 0.71)},
}


def row_label(row: str) -> str:
    """``real`` -> ``Original data``, ``hinge`` -> ``HingeGAN``, ``real+spade`` -> ``Orig. data + SPADE``."""
    if row == "real":
        return "Original data"
    if row == "real-aug":
        return "Augmented original data"
    if row.startswith("real+"):
        return f"Orig. data + {LABELS.get(row[5:], row[5:])}"
    return LABELS.get(row, row)


def result_dir(real, profile: str, runs_root="runs") -> Path:
    """``{runs_root}/table2-<prepared set>-<profile>``: the U-Nets and ``table2.json`` of one dataset."""
    return Path(runs_root) / f"table2-{real.root.name}-{profile}"


def table2(dataset: str, profile: str, *, gans=TABLE2_GANS, combos=COMBO_GANS, data_root="data", runs_root="runs",
           seeds: int | None = None, features: str | None = None, seed: int = 0, bootstrap: int = 50,
           progress: bool | None = None) -> dict[str, Any]:
    """Table 2 of ``dataset`` in ``profile`` (see the module text); returns the result and writes ``table2.json``.

    A GAN whose run diverged is scored from its last checkpoint when it has one (its row says so), else its row is
    left without numbers; ``combos`` are the GANs whose generated set is also added to the original data.
    """
    unknown = sorted(set(gans) - set(TABLE2_GANS))
    if unknown:
        raise UserError(f"Table 2 has no GAN {unknown}; use any of {', '.join(TABLE2_GANS)}")
    p = get_profile(profile)
    features, seeds = features or p.features, seeds or p.unet_seeds
    real = experiments.study_set(dataset, profile, data_root=data_root, seed=seed)
    out = result_dir(real, profile, runs_root)
    unet_cfg = UNetConfig(seed=seed, **p.unet_knobs)

    runs, gen_sets, fid, domain = {}, {}, {}, {}
    seconds = {"gans": 0.0, "fid": 0.0, "unet": 0.0}  # where a build's time went (printed, never compared)
    for gan in gans:
        t0 = time.perf_counter()
        run_dir, knobs = experiments.table2_run(real, gan, profile, runs_root=runs_root, seed=seed, progress=progress)
        status = experiments.run_status(run_dir)
        runs[gan] = {"run": run_dir.name, "status": status["status"], "reason": status.get("reason"),
                     "kimg": status.get("kimg"), "swept_knobs": knobs}
        try:
            gen = experiments.generated_set(run_dir, profile, data_root=data_root, seed=seed, progress=progress)
        except UserError as e:  # a run that diverged before its first checkpoint has nothing to sample
            runs[gan]["not_scored"] = str(e)
            continue
        gen_sets[gan] = gen
        runs[gan].update(trained_on=gen.meta.get("data_source"), checkpoint_kimg=gen.meta.get("checkpoint_kimg"),
                         n_generated=len(gen))
        t1 = time.perf_counter()
        fid[gan] = evaluate(real.root, gen.root, features=features, kid=True, memorisation=real.root,
                            bootstrap=bootstrap, seed=seed, progress=progress)
        seconds["gans"] += t1 - t0
        seconds["fid"] += time.perf_counter() - t1

    def dice_of(row, train_dirs, augment=False):
        return experiments.segmentation(train_dirs, real, out / _folder(row), seeds=seeds, augment=augment,
                                        cfg=unet_cfg, progress=progress)

    t0 = time.perf_counter()
    dice = {"real": dice_of("real", [real.root]), "real-aug": dice_of("real-aug", [real.root], augment=True)}
    for gan, gen in gen_sets.items():
        dice[gan] = dice_of(gan, [gen.root])
    for gan in combos:
        if gan in gen_sets:
            dice[f"real+{gan}"] = dice_of(f"real+{gan}", [real.root, gen_sets[gan].root])
    seconds["unet"] = time.perf_counter() - t0
    unet = f"unet:{out / _folder('real')}"
    for gan, gen in gen_sets.items():
        domain[gan] = evaluate(real.root, gen.root, features=unet, bootstrap=bootstrap, seed=seed, progress=progress)

    result = {
        "dataset": real.name, "source": real.source, "profile": profile, "seed": seed, "features": features,
        "image_size": real.image_size, "counts": dict(real.meta["counts"]), "kimg": {g: experiments.table2_kimg(profile, g) for g in gans}, "batch": p.table2_batch or p.batch,
        "unet_seeds": seeds, "n_generate": p.n_generate, "code_version": code_version(), "runs": runs,
        "fid": fid, "domain_fid": domain, "dice": dice, "seconds": seconds,
    }
    result["spearman"] = spearman(result)
    write_json(out / RESULT_FILE, jsonable(result))
    return result


def _folder(row: str) -> str:
    """The U-Net folder of a row (names notebook 05 has always used: real, real-aug, gen-<gan>, real-gen-<gan>)."""
    if row in ("real", "real-aug"):
        return row
    return f"real-gen-{row[5:]}" if row.startswith("real+") else f"gen-{row}"


# ---------------------------------------------------------------------------------------------
# what the table says
# ---------------------------------------------------------------------------------------------
def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def dice_mean(result: dict, row: str) -> float | None:
    d = result["dice"].get(row)
    return _finite(d["dice"]["mean"]["mean"]) if d else None


def spearman(result: dict) -> dict[str, dict[str, Any]]:
    """Spearman's ρ (and its two-sided p) between each GAN's FID — and its domain FID — and the Dice of the U-Net
    trained on its generated set, over the GANs with both numbers. ρ < 0: a lower FID goes with a higher Dice.
    ``rho``/``p`` are None with fewer than 3 GANs or a constant column (no rank order to correlate)."""
    from scipy.stats import spearmanr

    out = {}
    for key in ("fid", "domain_fid"):
        pairs = [(_finite(r["fid"]), dice_mean(result, gan)) for gan, r in result[key].items()]
        pairs = [(f, d) for f, d in pairs if f is not None and d is not None]
        rho = pval = None
        if len(pairs) >= 3 and len({f for f, _ in pairs}) > 1 and len({d for _, d in pairs}) > 1:
            stat = spearmanr(*zip(*pairs, strict=True))
            rho, pval = float(stat.statistic), float(stat.pvalue)
        out[key] = {"rho": rho, "p": pval, "n": len(pairs)}
    return out


def effectiveness(result: dict) -> list[str]:
    """The scored GANs from the least to the most effective: by the Dice of a U-Net trained on the generated set
    alone (the paper's measure of a generated set's use), ties by FID."""
    scored = [g for g in result["fid"] if dice_mean(result, g) is not None]
    return sorted(scored, key=lambda g: (dice_mean(result, g), -(_finite(result["fid"][g]["fid"]) or 0.0)))


def _fmt_ci(mean, ci, digits=3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if ci is None or not math.isfinite(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def frame(result: dict, *, paper: bool = True):
    """Table 2 of one dataset as a DataFrame, one row per paper row; ``paper`` adds the published FID and Dice.

    Cells are rounded numbers or text ("" where a column does not apply, "n/a" for a missing number)."""
    import pandas as pd

    published = PAPER_TABLE2.get(result["dataset"], {})
    rows = []
    for row in _rows(result):
        r, dom, run = result["fid"].get(row), result["domain_fid"].get(row), result["runs"].get(row, {})
        d = result["dice"].get(row)
        near = (r or {}).get("memorisation", {}).get("near_copy_fraction")
        note = run.get("status", "") if run.get("status") not in (None, "finished") else ""
        entry = {
            "": row_label(row) + (f" ({note})" if note else ""),
            "FID": round(r["fid"], 2) if r else "",
            "FID 95% CI": f"[{r['fid_ci95'][0]:.1f}, {r['fid_ci95'][1]:.1f}]" if r and r.get("fid_ci95") else "",
            "floor (real vs real)": round(r["floor"]["fid"], 2) if r and r.get("floor") else "",
            "KID": round(r["kid_mean"], 4) if r and "kid_mean" in r else "",
            "near-copies": round(near, 3) if near is not None else "",
            "domain FID": round(dom["fid"], 2) if dom else "",
            "Dice (± CI95)": _fmt_ci(_finite(d["dice"]["mean"]["mean"]), d["dice"]["mean"].get("ci95")) if d else
            ("n/a" if row in result["runs"] or row.startswith("real") else ""),
        }
        if paper:
            fid_p, dice_p = published.get(row, (None, None))
            entry["paper FID"] = fid_p if fid_p is not None else ""
            entry["paper Dice"] = dice_p if dice_p is not None else ("—" if row in TABLE2_GANS else "")
        rows.append(entry)
    return pd.DataFrame(rows).set_index("")


def _rows(result: dict) -> list[str]:
    gans = list(result["runs"])
    combos = [r for r in result["dice"] if r.startswith("real+")]
    return ["real", "real-aug", *gans, *combos]


def kimg_text(kimg: dict[str, float]) -> str:
    """``4 kimg`` or ``4 kimg (SPADE, StyleGAN2: 2 kimg)``: the GANs' training lengths, the most common first."""
    if not kimg:
        return "? kimg"
    values = list(kimg.values())
    main = max(dict.fromkeys(values), key=values.count)
    others: dict[float, list[str]] = {}
    for gan, k in kimg.items():
        if k != main:
            others.setdefault(k, []).append(LABELS.get(gan, gan))
    extra = "; ".join(f"{', '.join(g)}: {k:g} kimg" for k, g in others.items())
    return f"{main:g} kimg" + (f" ({extra})" if extra else "")


def caption(result: dict, what: str = "Table 2") -> str:
    """Provenance on the table's face: dataset, data source, size, profile, GAN length and training data, FID
    features, generated pairs, U-Net seeds, seed (``plots.model_note`` adds the shrunk models)."""
    trained_on = sorted({r.get("trained_on") for r in result["runs"].values() if r.get("trained_on")})
    c = result["counts"]
    return (f"{what} — {DATASET_LABELS.get(result['dataset'], result['dataset'])}, {result['source']} data at "
            f"{result['image_size']}² (slices train {c['train']} / val {c['val']} / test {c['test']}), profile "
            f"{result['profile']}; GANs trained {kimg_text(result['kimg'])} at batch {result['batch']} on "
            f"{', '.join(trained_on) or 'no'} data, seed {result['seed']}, {result['n_generate']} generated pairs each; "
            f"FID features {result['features']}; "
            f"U-Net Dice on the real test patients, mean ± 95 % CI over {result['unet_seeds']} seed(s)")


def spearman_frame(results: list[dict]):
    """One row per dataset: Spearman ρ and p of FID ↔ Dice and of domain FID ↔ Dice (over its GANs)."""
    import pandas as pd

    rows = {}
    for r in results:
        s = r["spearman"]
        rows[DATASET_LABELS.get(r["dataset"], r["dataset"])] = {
            "GANs": s["fid"]["n"],
            "ρ FID ↔ Dice": s["fid"]["rho"], "p (FID)": s["fid"]["p"],
            "ρ domain FID ↔ Dice": s["domain_fid"]["rho"], "p (domain FID)": s["domain_fid"]["p"],
        }
    frame = pd.DataFrame.from_dict(rows, orient="index").astype(float).round(3)
    return frame.astype({"GANs": int})


def paper_spearman() -> dict[str, dict[str, Any]]:
    """The same FID ↔ Dice correlation on the paper's own published numbers (its 6 GANs per dataset)."""
    from scipy.stats import spearmanr

    out = {}
    for dataset, table in PAPER_TABLE2.items():
        pairs = [(table[g][0], table[g][1]) for g in TABLE2_GANS if g in table]
        stat = spearmanr(*zip(*pairs, strict=True))
        out[dataset] = {"rho": float(stat.statistic), "p": float(stat.pvalue), "n": len(pairs)}
    return out


def fid_dice_points(result: dict) -> dict[str, tuple[float | None, float | None]]:
    """``{GAN label: (FID, Dice of its generated set)}`` of one result (for ``plots.fid_dice_figure``)."""
    return {row_label(g): (_finite(r["fid"]), dice_mean(result, g)) for g, r in result["fid"].items()}


def paper_points(dataset: str) -> dict[str, tuple[float | None, float | None]]:
    """The published (FID, Dice) per GAN of ``dataset``."""
    return {row_label(g): PAPER_TABLE2[dataset][g] for g in TABLE2_GANS if g in PAPER_TABLE2.get(dataset, {})}


def text(result: dict) -> str:
    """The table as rounded plain text (what nbval compares): no paths, no timings."""
    lines = [caption(result), frame(result).to_string()]
    s = result["spearman"]
    for key, name in (("fid", "FID"), ("domain_fid", "domain FID")):
        rho, pval = s[key]["rho"], s[key]["p"]
        lines.append(f"Spearman {name} ↔ Dice over {s[key]['n']} GANs: "
                     + ("n/a" if rho is None else f"ρ = {rho:.3f}, p = {pval:.3g}"))
    return "\n".join(lines)


def numbers_ok(result: dict) -> list[str]:
    """What is wrong with a result's numbers (empty: every FID finite and ≥ 0, every Dice in [0, 1] or NaN, the
    real-data Dice a number, every scored GAN has its generated-set row): the notebooks' check cell asserts it."""
    problems = []
    for key in ("fid", "domain_fid"):
        for gan, r in result[key].items():
            if not (math.isfinite(r["fid"]) and r["fid"] >= 0):
                problems.append(f"{key} of {gan}: {r['fid']}")
    for row, d in result["dice"].items():
        for cls, v in d["dice"].items():
            if not (np.isnan(v["mean"]) or 0 <= v["mean"] <= 1):
                problems.append(f"Dice {cls} of {row}: {v['mean']}")
    if dice_mean(result, "real") is None:
        problems.append("no Dice for the original data")
    problems += [f"{gan} scored but has no Dice row" for gan in result["fid"] if gan not in result["dice"]]
    return problems
