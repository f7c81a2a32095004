"""Build a visual Turing-test deck (paper §4.3): a 50/50 random mix of real and generated images as one
offline HTML page (``deck.html``) plus a separate answer key (``answer-key.json``).

Nothing on the page may tell the classes apart but the pixels themselves:
- every image goes through one path: the same grey-level window (one window for the whole deck, never per
  class), 8-bit, the same PNG mode and size, no metadata chunks; the PNG bytes are a pure function of the
  pixels (``encode_png``), so re-encoding what the page shows reproduces it byte for byte;
- item ids are random tokens and the order is random; file names, patient ids, run ids and sources appear
  only in the key.

Which real images: by default the patients the GAN learnt from (``split="train+val"``, the same reference
as FID's default), drawn without replacement; ``split="test"`` shows unseen patients instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medgan.data.prepared import GAN_SPLIT, PreparedSet, check_compatible, load_prepared
from medgan.errors import AnswerSheetError, ConfigError, IncompatibleSetsError, OutputExistsError
from medgan.images import colorize_mask
from medgan.io import atomic_write_text, write_json
from medgan.runtime import code_version
from medgan.turing.page import page_items, render_page

PAGE_NAME = "deck.html"
KEY_NAME = "answer-key.json"
KEY_FORMAT = "medgan-turing-key"
TRUTHS = ("real", "synthetic")  # the answer vocabulary, also used for the truth in the key
ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no look-alikes (l/1, o/0)
ID_LENGTH = 8
WINDOWS = ("full", "pooled")
MASK_ALPHA = 0.45


@dataclass(frozen=True)
class Deck:
    """What ``build_deck`` wrote: the page to give the raters, the key to keep, and the deck's id."""

    page: Path
    key: Path
    deck_id: str
    n: int


def _as_set(s: PreparedSet | str | os.PathLike) -> PreparedSet:
    return s if isinstance(s, PreparedSet) else load_prepared(s)


def parse_window(window: str | tuple[float, float] | list) -> str | tuple[float, float]:
    """``"full"`` | ``"pooled"`` | ``(lo, hi)`` / ``"lo,hi"`` in the prepared units ([-1, 1]); else ``ConfigError``."""
    if isinstance(window, str) and window in WINDOWS:
        return window
    try:
        lo, hi = (float(v) for v in (window.split(",") if isinstance(window, str) else window))
    except (TypeError, ValueError):
        raise ConfigError(f"--window must be one of {WINDOWS} or 'LO,HI' in [-1, 1], got {window!r}") from None
    if not (-1.0 <= lo < hi <= 1.0):
        raise ConfigError(f"--window LO,HI must satisfy -1 <= LO < HI <= 1, got {lo},{hi}")
    return lo, hi


def window_limits(window, images: np.ndarray) -> tuple[float, float]:
    """The grey-level window of a deck: ``full`` = the prepared range [-1, 1] (already the dataset's window:
    percentiles per volume for MRI, a HU window for CT); ``pooled`` = 1st-99th percentile of all the deck's
    images together (real and generated pooled, so both classes share it); or the given ``(lo, hi)``."""
    window = parse_window(window)
    if window == "full":
        return -1.0, 1.0
    if window == "pooled":
        lo, hi = np.percentile(np.asarray(images, np.float32), [1, 99])
        return (float(lo), float(hi)) if hi > lo else (-1.0, 1.0)
    return window


def to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image [C, H, W]`` (prepared units) -> ``[H, W]`` or ``[H, W, 3]`` uint8 through the window [lo, hi]."""
    x = (np.asarray(image, np.float32) - lo) / (hi - lo)
    x = np.clip(x, 0.0, 1.0) * 255.0 + 0.5
    x = x.astype(np.uint8)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)


def mask_overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend the label colours over the displayed pixels: ``[H, W, 3]`` uint8."""
    base = pixels.astype(np.float32)
    base = np.repeat(base[..., None], 3, axis=-1) if base.ndim == 2 else base
    fg = (np.asarray(mask) > 0)[..., None]
    blended = np.where(fg, (1 - MASK_ALPHA) * base + MASK_ALPHA * colorize_mask(mask).astype(np.float32), base)
    return (blended + 0.5).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """8-bit grey (``[H, W]``) or RGB (``[H, W, 3]``) PNG with no ancillary chunks (no text, time, dpi, gamma)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def decode_data_uri(uri: str) -> np.ndarray:
    """A page's ``data:image/png;base64,...`` back to its pixels (uint8)."""
    prefix = "data:image/png;base64,"
    if not uri.startswith(prefix):
        raise AnswerSheetError(f"not a PNG data URI: {uri[:40]!r}")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):]))))


def random_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct random tokens of ``ID_LENGTH`` characters (reproducible under the generator's seed)."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        token = "".join(rng.choice(list(ID_ALPHABET), ID_LENGTH))
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def _generated_provenance(gen: PreparedSet) -> dict[str, Any]:
    m = gen.meta
    trained_on = dict(m.get("real_dataset") or {})
    source = trained_on.get("source")
    if source is None and trained_on.get("root"):  # sets written before generate recorded it
        real_meta = Path(trained_on["root"]) / "dataset.json"
        if real_meta.is_file():
            source = load_prepared(trained_on["root"]).source
    return {"root": str(gen.root), "name": gen.name, "source": gen.source, "gan": m.get("gan"),
            "run_id": m.get("run_id"), "checkpoint_kimg": m.get("checkpoint_kimg"), "seed": m.get("seed"),
            "config_hash": m.get("config_hash"), "content_sha256": gen.content_sha256,
            "trained_on": {"name": trained_on.get("name"), "source": source,
                           "content_sha256": trained_on.get("content_sha256")}}


def build_deck(
    real_set: PreparedSet | str | os.PathLike,
    generated_set: PreparedSet | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n: int = 100,
    seed: int = 0,
    split: str = GAN_SPLIT,
    masks: bool = False,
    window: str | tuple[float, float] = "full",
    display_px: int = 512,
    overwrite: bool = False,
    title: str | None = None,
) -> Deck:
    """Write ``out_dir/deck.html`` (give it to the raters) and ``out_dir/answer-key.json`` (keep it).

    ``n`` images, ``n/2`` real (from ``split`` of ``real_set``) and ``n/2`` from ``generated_set``, each drawn
    without replacement, shown in random order under random ids; ``seed`` makes the deck reproducible.
    ``masks=True`` adds a mask-overlay toggle (key M) per image; by default raters judge the image alone,
    as in the paper. ``window``: see ``window_limits``. ``display_px``: the on-screen size (CSS; the PNGs stay at
    the prepared resolution and the browser scales them).
    """
    real, gen = _as_set(real_set), _as_set(generated_set)
    if n < 2 or n % 2:
        raise ConfigError(f"--n must be an even number >= 2 (a 50/50 deck), got {n}")
    if gen.source != "generated":
        raise IncompatibleSetsError(f"{gen.root} is a {gen.source} set, not a generated one (pass it as --real?)")
    if real.source == "generated":
        raise IncompatibleSetsError(f"{real.root} is a generated set: --real must be a real (or phantom) prepared set")
    check_compatible(real, gen)
    out_dir = Path(out_dir)
    page_path, key_path = out_dir / PAGE_NAME, out_dir / KEY_NAME
    if not overwrite and (page_path.exists() or key_path.exists()):
        raise OutputExistsError(f"{out_dir} already holds a deck (pass --overwrite to replace it)")
    half = n // 2
    try:
        real_pool = real.indices(split)
    except ValueError as e:
        raise ConfigError(f"--split: {e}") from None
    for name, pool in (("real " + split, real_pool), ("generated", np.arange(len(gen)))):
        if len(pool) < half:
            raise ConfigError(f"--n {n} needs {half} {name} images but {len(pool)} are available; lower --n")

    rng = np.random.default_rng(seed)
    real_idx = np.sort(rng.choice(real_pool, half, replace=False))
    gen_idx = np.sort(rng.choice(len(gen), half, replace=False))
    drawn = [("real", int(i)) for i in real_idx] + [("generated", int(i)) for i in gen_idx]
    order = rng.permutation(n)
    drawn = [drawn[i] for i in order]
    ids = random_ids(rng, n)

    images = np.stack([np.asarray((real if s == "real" else gen).images[i], np.float32) for s, i in drawn])
    lo, hi = window_limits(window, images)
    page_list, key_items, digest = [], [], hashlib.sha256()
    for pos, ((which, idx), item_id, image) in enumerate(zip(drawn, ids, images, strict=True)):
        ps = real if which == "real" else gen
        pixels = to_uint8(image, lo, hi)
        png = encode_png(pixels)
        entry = {"id": item_id, "image": data_uri(png)}
        digest.update(item_id.encode() + png)
        if masks:
            overlay_png = encode_png(mask_overlay(pixels, ps.masks[idx]))
            entry["overlay"] = data_uri(overlay_png)
            digest.update(overlay_png)
        page_list.append(entry)
        key_items.append({"item_id": item_id, "position": pos, "truth": "real" if which == "real" else "synthetic",
                          "set": which, "index": idx, "patient": str(ps.patients[idx]), "slice": int(ps.slices[idx])})
    deck_id = digest.hexdigest()[:12]

    modality = real.meta.get("modality", real.name)
    size = real.image_size
    about = f"{n} {modality} images, {size}\u00d7{size} pixels."
    page = render_page(page_list, deck_id=deck_id, title=title or f"{real.name} ({n} images)", about=about,
                       display_px=display_px)
    key = {
        "format": KEY_FORMAT, "version": 1, "deck": deck_id, "n": n, "seed": seed, "positive_class": "synthetic",
        "items": key_items,
        "real": {"root": str(real.root), "name": real.name, "source": real.source, "split": split,
                 "content_sha256": real.content_sha256},
        "generated": _generated_provenance(gen),
        "display": {"window": [lo, hi], "masks": masks, "image_size": size, "channels": real.channels,
                    "display_px": display_px},
        "window_request": list(window) if isinstance(window, tuple) else window,
        "code_version": code_version(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page_path, page)
    write_json(key_path, key)
    return Deck(page=page_path, key=key_path, deck_id=deck_id, n=n)


def read_page(page: str | os.PathLike) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """``(deck id, [(item id, pixels uint8)])`` in show order: exactly what a rater's browser shows."""
    path = Path(page)
    if path.is_dir():
        path = path / PAGE_NAME
    try:
        block = page_items(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise AnswerSheetError(f"{path}: cannot read the deck page ({e.strerror})") from None
    except ValueError:
        raise AnswerSheetError(f"{path} is not a deck page written by medgan turing deck") from None
    return block["deck"], [(it["id"], decode_data_uri(it["image"])) for it in block["items"]]


def _deck_inputs(key: dict) -> dict:
    """What decides a deck's content: the two sets' content hashes, the split, n, seed and display options."""
    display = dict(key.get("display") or {})
    display.pop("window", None)  # derived (pooled) or given; its request is in "window_request"
    return {"real": (key.get("real") or {}).get("content_sha256"), "split": (key.get("real") or {}).get("split"),
            "generated": (key.get("generated") or {}).get("content_sha256"), "n": key.get("n"),
            "seed": key.get("seed"), "display": display, "window_request": key.get("window_request")}


def ensure_deck(real_set, generated_set, out_dir: str | os.PathLike, **kwargs) -> tuple[Deck, str]:
    """``build_deck`` unless ``out_dir`` already holds the deck these inputs make; returns ``(deck, what)``
    with ``what`` = ``"reused"``, ``"built"`` or ``"rebuilt (old deck kept as <folder>)"``.

    A deck made from other sets or options is never overwritten (raters may hold its page, and its key is
    the only way to score them): the folder is renamed ``<name>.stale-<its deck id>`` first.
    """
    out_dir = Path(out_dir)
    key_path = out_dir / KEY_NAME
    if key_path.is_file() and (out_dir / PAGE_NAME).is_file():
        try:
            old = json.loads(key_path.read_text())
        except ValueError:
            old = {}
        probe = build_deck(real_set, generated_set, out_dir.with_name(out_dir.name + ".probe"), overwrite=True, **kwargs)
        new_key = json.loads(probe.key.read_text())
        same = _deck_inputs(old) == _deck_inputs(new_key) and old.get("deck") == new_key["deck"]
        shutil.rmtree(probe.page.parent)
        if same:
            return Deck(page=out_dir / PAGE_NAME, key=key_path, deck_id=old["deck"], n=int(old["n"])), "reused"
        dest = out_dir.with_name(f"{out_dir.name}.stale-{old.get('deck', 'unknown')}")
        i = 2
        while dest.exists():
            dest, i = out_dir.with_name(f"{out_dir.name}.stale-{old.get('deck', 'unknown')}-{i}"), i + 1
        out_dir.rename(dest)
        return build_deck(real_set, generated_set, out_dir, **kwargs), f"rebuilt (old deck kept as {dest.name})"
    return build_deck(real_set, generated_set, out_dir, **kwargs), "built"
