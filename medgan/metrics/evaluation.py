"""``evaluate(real_dir, gen_dir)``: FID (+ CI, floor) and optionally KID, PRDC and memorisation, as one JSON-ready dict.

Which real images are compared: by default (``real_split=None``) the real patients the GAN was trained on,
as in the paper (§3.4: FID between generated images and the training set) — the split its generated set
records (``real_dataset.train_split``, i.e. the run's ``TrainConfig.split``), else ``"train+val"`` (all the
paper's training patients, ``medgan.data.prepared.GAN_SPLIT``). ``real_split="test"`` (or ``"train"``,
``"val"``, ``"all"``) compares against other real images instead. Memorisation likewise treats the GAN's
training split as "the training images" and the ``test`` split as the unseen reference.
Every image of the generated set is used (``gen_split="all"``).

The real-vs-real **floor** is the same metric between two disjoint halves of the chosen real split,
split by *patient* (never by slice, so neighbouring slices of one volume cannot sit on both sides).
It is the value a perfect generator would score at half the sample size — FID is biased upward at
small n, so the floor is a conservative (high) reference, reported with its n.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medgan.data.prepared import GAN_SPLIT, PreparedSet, check_compatible, load_prepared
from medgan.errors import UserError
from medgan.io import jsonable
from medgan.metrics.bootstrap import bootstrap as run_bootstrap
from medgan.metrics.features import dataset_features, get_extractor, split_indices
from medgan.metrics.fid import RANK_WARNING, fid_from_features, is_rank_deficient
from medgan.metrics.kid import kid as compute_kid
from medgan.metrics.memorization import memorisation as compute_memorisation
from medgan.metrics.prdc import prdc as compute_prdc
from medgan.runtime import resolve_device

RESULT_VERSION = 1
MIN_MEMORISATION_TEST = 50  # below this the q-th percentile of the test->train distances is a guess
RANDOM_NOTE = "random-weight features: a consistency check only, never comparable with published FIDs"


def patient_halves(ps: PreparedSet, indices: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into two disjoint halves by patient, balancing slice counts (seeded)."""
    patients = ps.patients[indices]
    unique = np.unique(patients)
    if len(unique) < 2:
        raise ValueError(f"{ps.root}: one patient only, cannot split by patient")
    rng = np.random.default_rng(seed)
    order = rng.permutation(unique)
    counts = {p: int((patients == p).sum()) for p in unique}
    # largest first (ties in seeded order), each to the lighter half: a balanced, reproducible split
    order = sorted(order, key=lambda p: -counts[p])
    half_a: set[str] = set()
    load = [0, 0]
    for p in order:
        side = 0 if load[0] <= load[1] else 1
        load[side] += counts[p]
        if side == 0:
            half_a.add(p)
    in_a = np.isin(patients, sorted(half_a))
    return indices[in_a], indices[~in_a]


def gan_training_split(gen: PreparedSet) -> str:
    """The real split a generated set's GAN learnt from (recorded by ``generate``); ``GAN_SPLIT`` otherwise."""
    return str((gen.meta.get("real_dataset") or {}).get("train_split") or GAN_SPLIT)


def evaluate(
    real_dir: str | os.PathLike,
    gen_dir: str | os.PathLike,
    *,
    features: str = "inception",
    kid: bool = False,
    prdc: bool = False,
    memorisation: str | os.PathLike | None = None,
    real_split: str | None = None,
    gen_split: str = "all",
    bootstrap: int = 100,
    floor: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prdc_k: int = 5,
    memorisation_q: float = 5.0,
    exact: bool = False,
    seed: int = 0,
    batch: int | None = None,
    device: str | None = None,
    cache: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Compare a generated prepared set with a real one; returns a JSON-ready dict.

    Keys: ``fid``, ``fid_ci95`` ([lo, hi] or None), ``n_real``, ``n_gen``, ``features`` (extractor
    name), ``feature_dim``, ``rank_deficient``, ``warnings``; with ``kid``: ``kid_mean``, ``kid_std``;
    with ``prdc``: ``precision``, ``recall``, ``density``, ``coverage``; with ``memorisation=TRAIN_DIR``
    (a prepared set: the GAN's training split are the training images, its test split the unseen reference):
    ``memorisation`` {near_copy_fraction, median_ratio, memorised, ...}; with ``floor``: ``floor``
    {fid, kid_mean, n_a, n_b} between two patient-disjoint halves of the real split.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    real = load_prepared(real_dir)
    gen = load_prepared(gen_dir)
    check_compatible(real, gen)
    gan_split = gan_training_split(gen)
    real_split = real_split or gan_split
    real_idx = split_indices(real, real_split)
    split_indices(gen, gen_split)
    mem_set = None
    if memorisation is not None:
        mem_set = load_prepared(memorisation)
        check_compatible(mem_set, gen)
        split_indices(mem_set, gan_split)
        split_indices(mem_set, "test")

    extractor = get_extractor(features, dev)
    common = dict(batch=batch, cache=cache, progress=progress)
    f_real = dataset_features(real, extractor, split=real_split, **common)
    f_gen = dataset_features(gen, extractor, split=gen_split, **common)
    t_features = time.perf_counter() - t0
    n_real, n_gen, dim = len(f_real), len(f_gen), f_real.shape[1]

    warn_list: list[str] = []
    result: dict[str, Any] = {
        "version": RESULT_VERSION,
        "real_dir": str(Path(real_dir)),
        "gen_dir": str(Path(gen_dir)),
        "real_name": real.name,
        "gen_name": gen.name,
        "real_split": real_split,
        "gen_split": gen_split,
        "real_sha256": real.content_sha256,
        "gen_sha256": gen.content_sha256,
        "gen_source": gen.source,
        "features": extractor.name,
        "features_random": extractor.random_weights,
        "feature_dim": int(dim),
        "n_real": int(n_real),
        "n_gen": int(n_gen),
    }
    if extractor.random_weights:
        result["features_note"] = RANDOM_NOTE

    t1 = time.perf_counter()
    fid = fid_from_features(f_real, f_gen, exact=exact, device=dev)
    rank_deficient = is_rank_deficient(min(n_real, n_gen), dim)
    if rank_deficient:
        msg = RANK_WARNING.format(n=min(n_real, n_gen), d=dim)
        warnings.warn(msg, stacklevel=2)
        warn_list.append(msg)
    result.update(fid=fid, rank_deficient=rank_deficient, fid_exact_pytorch_fid=bool(exact))
    if bootstrap and bootstrap > 1:
        bs = run_bootstrap(lambda a, b: fid_from_features(a, b, device=dev), f_real, f_gen, n=bootstrap,
                           seed=seed, progress=progress, desc="FID bootstrap")
        result.update(fid_ci95=bs["ci"], fid_bootstrap_std=bs["std"], bootstrap=bs["n"])
    else:
        result.update(fid_ci95=None, bootstrap=0)

    if kid:
        result.update(compute_kid(f_real, f_gen, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed,
                                  device=dev))
    if prdc:
        if min(n_real, n_gen) <= prdc_k:
            raise UserError(f"PRDC with k={prdc_k} needs more than {prdc_k} images per set (got {n_real} real, {n_gen} generated)")
        result.update(compute_prdc(f_real, f_gen, k=prdc_k, device=dev))
    if mem_set is not None:
        f_train = dataset_features(mem_set, extractor, split=gan_split, **common)
        f_test = dataset_features(mem_set, extractor, split="test", **common)
        mem = compute_memorisation(f_gen, f_train, f_test, q=memorisation_q, device=dev)
        mem["train_dir"] = str(Path(memorisation))
        n_test_patients = len(np.unique(mem_set.patients[mem_set.indices("test")]))
        if len(f_test) < MIN_MEMORISATION_TEST or n_test_patients < 3:
            msg = (f"memorisation reference: the test split of {mem_set.root} holds {len(f_test)} images of "
                   f"{n_test_patients} patient(s); its {memorisation_q:g}th-percentile threshold is unreliable "
                   f"(want >= {MIN_MEMORISATION_TEST} images from >= 3 patients)")
            warnings.warn(msg, stacklevel=2)
            warn_list.append(msg)
        result["memorisation"] = mem
    if floor:
        result["floor"] = real_floor(real, f_real, real_idx, kid=kid, kid_subsets=kid_subsets,
                                     kid_subset_size=kid_subset_size, seed=seed, device=dev)
    result["warnings"] = warn_list
    result["seconds"] = {"features": t_features, "metrics": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    result["device"] = str(dev)
    return jsonable(result)


def real_floor(ps: PreparedSet, f_real: np.ndarray, real_idx: np.ndarray, *, kid: bool = False, kid_subsets: int = 100,
               kid_subset_size: int = 1000, seed: int = 0, device=None) -> dict[str, Any]:
    """FID (and KID) between two patient-disjoint halves of the real features ``f_real`` (rows = ``real_idx``)."""
    try:
        a_idx, b_idx = patient_halves(ps, real_idx, seed)
    except ValueError as e:
        return {"fid": None, "reason": str(e)}
    pos = {int(i): k for k, i in enumerate(real_idx)}
    fa = f_real[[pos[int(i)] for i in a_idx]]
    fb = f_real[[pos[int(i)] for i in b_idx]]
    if min(len(fa), len(fb)) < 2:
        return {"fid": None, "reason": "a half holds fewer than 2 images"}
    out: dict[str, Any] = {
        "fid": fid_from_features(fa, fb, device=device),
        "n_a": len(fa),
        "n_b": len(fb),
        "patients_a": int(len(np.unique(ps.patients[a_idx]))),
        "patients_b": int(len(np.unique(ps.patients[b_idx]))),
        "rank_deficient": is_rank_deficient(min(len(fa), len(fb)), fa.shape[1]),
    }
    if kid:
        k = compute_kid(fa, fb, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed, device=device)
        out.update(kid_mean=k["kid_mean"], kid_std=k["kid_std"])
    return out


def summary(result: dict[str, Any]) -> str:
    """Readable multi-line summary of an ``evaluate`` result (what ``medgan fid`` prints)."""
    r = result
    lines = []
    ci = r.get("fid_ci95")
    ci_txt = f"  (95% CI {ci[0]:.3f} – {ci[1]:.3f}, bootstrap {r['bootstrap']})" if ci else ""
    lines.append(f"FID        {r['fid']:.4f}{ci_txt}")
    lines.append(f"features   {r['features']} ({r['feature_dim']}-d)" + (f"  [{r['features_note']}]" if r.get("features_note") else ""))
    lines.append(f"real       {r['real_name']} / {r['real_split']}: {r['n_real']} images   "
                 f"generated {r['gen_name']} / {r['gen_split']}: {r['n_gen']} images")
    fl = r.get("floor")
    if fl:
        if fl.get("fid") is None:
            lines.append(f"floor      n/a ({fl.get('reason')})")
        else:
            kid_txt = f", KID {fl['kid_mean']:.5f}" if fl.get("kid_mean") is not None else ""
            lines.append(f"floor      real vs real (patient halves {fl['n_a']} / {fl['n_b']} images): FID {fl['fid']:.4f}{kid_txt}")
    if "kid_mean" in r:
        lines.append(f"KID        {r['kid_mean']:.5f} ± {r['kid_std']:.5f}  ({r['kid_subsets']} subsets of {r['kid_subset_size']})")
    if "precision" in r:
        lines.append(f"PRDC (k={r['prdc_k']})  precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
                     f"density {r['density']:.3f}  coverage {r['coverage']:.3f}")
    m = r.get("memorisation")
    if m:
        verdict = "FLAGGED: near-copies of training images" if m["memorised"] else "not flagged"
        lines.append(f"memorise   {100 * m['near_copy_fraction']:.1f}% near-copies (expected {100 * m['expected_fraction']:.1f}%), "
                     f"median NN ratio {m['median_ratio']:.3f} -> {verdict}")
    for w in r.get("warnings", []):
        lines.append(f"WARNING    {w}")
    return "\n".join(lines)
