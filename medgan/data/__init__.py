"""Data layer: raw readers (``formats``), converters (``prepare``), phantoms, the prepared format, Dataset."""

from __future__ import annotations

from pathlib import Path

from medgan.config import get_profile
from medgan.data import nnunet  # noqa: F401  (registers the 'nnunet' preparer: nnU-Net's raw layout)
from medgan.data.phantoms import write_phantom
from medgan.data.prepare import prepare
from medgan.data.prepared import PreparedSet, load_prepared
from medgan.errors import InputNotFoundError


def ensure_prepared(name: str, raw_dir, out_dir, *, profile: str = "quick", seed: int = 0,
                    size: int | None = None) -> PreparedSet:
    """Return the prepared set at ``out_dir``, making it first when missing.

    Where ``raw_dir`` does not exist, a profile that allows phantoms (``quick``) writes them there in the
    raw layout first; ``paper`` never does: a missing folder is an error that says where the download goes.
    """
    allow_phantoms = get_profile(profile).phantoms
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not (out_dir / "dataset.json").is_file():
        if not raw_dir.exists():
            if not allow_phantoms:
                raise InputNotFoundError(
                    f"{raw_dir} does not exist: the {profile} profile reads the real {name} download there "
                    "(see README, 'Using the real datasets')"
                )
            write_phantom(name, raw_dir, seed=seed)
        prepare(name, raw_dir, out_dir, size=size, seed=seed)
    return load_prepared(out_dir)


__all__ = ["PreparedSet", "ensure_prepared", "load_prepared", "prepare", "write_phantom"]
