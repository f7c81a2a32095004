"""Restrict a prepared set to the slices whose per-slice arrays take given values: ``medgan data subset``.

    normal = subset_prepared("data/prepared/acdc-64", "data/prepared/acdc-64-NOR", where={"group": ["NOR"]})

The result is an ordinary prepared set (same name, modality, labels, source and patient-level splits, each
split cut down to the patients that kept a slice), so ``medgan train --data`` trains on it unchanged: this
is how the anomaly-detection GAN sees NOR patients only, without a trainer knob. Its ``dataset.json``
records the filter and the source (``subset``: ``where``, ``source_root``, ``source_content_sha256``,
``source_inputs_sha256``); ``inputs_sha256`` is the source's content hash, since the source's arrays are
this set's inputs. The name stays the source's so the U-Net's and classifier's patient-leak checks still
compare a subset with the set it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medgan.data.prepared import SPLITS, PreparedSet, load_prepared, write_prepared
from medgan.errors import ConfigError, OutputExistsError, UserError

# per-slice arrays every prepared set has, by the name a filter uses
CORE_KEYS = {"patient": "patients", "slice": "slices"}
# dataset.json keys the writer derives from the arrays it writes (never copied from the source)
DERIVED_KEYS = ("counts", "arrays", "content_sha256", "files_sha256", "channels", "image_size")


def _values(ps: PreparedSet, key: str) -> np.ndarray:
    """The per-slice array a filter key names: an extra array (``group``, ``phase``) or ``patient``/``slice``."""
    if key in ps.extra:
        return np.asarray(ps.extra[key])
    if key in CORE_KEYS:
        return np.asarray(getattr(ps, CORE_KEYS[key]))
    known = sorted(ps.extra) + sorted(CORE_KEYS)
    raise ConfigError(f"--where {key}=...: {ps.root} has no per-slice array {key!r} (it has: {', '.join(known)})")


def parse_where(items: Sequence[str]) -> dict[str, list[str]]:
    """``["group=NOR,MINF", "phase=ED"]`` -> ``{"group": ["NOR", "MINF"], "phase": ["ED"]}``."""
    where: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise ConfigError(f"--where {item!r}: expected KEY=VALUE[,VALUE...] (e.g. group=NOR)")
        where.setdefault(key, []).extend(vals)
    return where


def select(ps: PreparedSet, where: Mapping[str, Sequence]) -> np.ndarray:
    """Indices of the slices of ``ps`` where every key's array takes one of its values (AND over keys).

    A value that matches no slice is an error (it is almost always a typo: ``NORM`` for ``NOR``).
    """
    if not where:
        raise ConfigError("subset needs at least one filter (e.g. --where group=NOR)")
    keep = np.ones(len(ps), bool)
    for key, wanted in where.items():
        if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Sequence) or not wanted:
            raise ConfigError(f"where[{key!r}] must be a non-empty list of values, got {wanted!r}")
        values = _values(ps, key)
        as_text = values.astype(str)
        wanted = [str(w) for w in wanted]
        absent = [w for w in wanted if not (as_text == w).any()]
        if absent:
            present = sorted(set(as_text.tolist()))
            shown = ", ".join(present[:12]) + (" ..." if len(present) > 12 else "")
            raise ConfigError(f"--where {key}={','.join(absent)}: no slice of {ps.root} has that value (values: {shown})")
        keep &= np.isin(as_text, wanted)
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise UserError(f"the filter {dict(where)} keeps no slice of {ps.root}")
    return idx


def subset_prepared(
    src: str | os.PathLike,
    out: str | os.PathLike,
    where: Mapping[str, Sequence],
    *,
    overwrite: bool = False,
) -> PreparedSet:
    """Write the slices of the prepared set ``src`` that pass ``where`` as a new prepared set in ``out``.

    ``where`` maps a per-slice array (an extra array such as ``group`` or ``phase``, or ``patient`` /
    ``slice``) to the values to keep; keys combine with AND, values with OR. Slice order, extra arrays and
    the patient-level splits are kept (each split lists only the patients that kept a slice).
    """
    ps = load_prepared(src)
    out = Path(out)
    if out.resolve() == ps.root.resolve():
        raise UserError(f"--out {out} is the source set itself: write the subset to a new folder")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists (pass --overwrite to replace it)")
    where = {str(k): [str(v) for v in vs] if not isinstance(vs, (str, bytes)) else vs for k, vs in where.items()}
    idx = select(ps, where)
    patients = np.asarray(ps.patients[idx])
    kept = set(patients.tolist())
    meta = {k: v for k, v in ps.meta.items() if k not in DERIVED_KEYS}
    meta["splits"] = {s: [p for p in ps.meta["splits"].get(s, []) if p in kept] for s in SPLITS}
    meta["inputs_sha256"] = ps.content_sha256
    meta["subset"] = {
        "where": where,
        "source_root": str(ps.root.resolve()),
        "source_name": ps.name,
        "source_content_sha256": ps.content_sha256,
        "source_inputs_sha256": ps.meta["inputs_sha256"],
        "n_source_slices": len(ps),
        "n_slices": int(len(idx)),
    }
    write_prepared(
        out,
        images=np.asarray(ps.images[idx]),
        masks=np.asarray(ps.masks[idx]),
        patients=patients,
        slices=np.asarray(ps.slices[idx]),
        meta=meta,
        overwrite=overwrite,
        extra={k: np.asarray(v)[idx] for k, v in ps.extra.items()},
    )
    return load_prepared(out)


def add_cli(sub) -> None:
    """``medgan data subset SRC --where KEY=V[,V] --out OUT``: registered by ``medgan.data.commands``."""
    p = sub.add_parser("subset", help="keep the slices whose per-slice arrays (group, phase, ...) take given values")
    p.add_argument("src", metavar="PREPARED_DIR")
    p.add_argument("--where", action="append", required=True, metavar="KEY=VALUE[,VALUE]",
                   help="keep slices whose array KEY (e.g. group, phase, patient) is one of the values; repeat to AND")
    p.add_argument("--out", required=True, metavar="PREPARED_DIR")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_subset)


def _cmd_subset(args) -> int:
    ps = subset_prepared(args.src, args.out, parse_where(args.where), overwrite=args.overwrite)
    counts = ", ".join(f"{s}: {len(ps.meta['splits'][s])} patients / {ps.meta['counts'][s]} slices" for s in SPLITS)
    print(f"wrote {len(ps)} of {ps.meta['subset']['n_source_slices']} slices to {ps.root} ({counts})")
    return 0
