"""Data layer: raw readers (``formats``), converters (``prepare``), phantoms, the prepared format, Dataset."""

from __future__ import annotations

from pathlib import Path

PROFILES = ("quick", "paper")


def ensure_prepared(name: str, raw_dir, out_dir, *, profile: str = "quick", seed: int = 0, size: int | None = None):
    """Return the prepared set at ``out_dir``, making it first when missing.

    ``quick``: when ``raw_dir`` does not exist, phantoms are written there in the raw layout first.
    ``paper``: ``raw_dir`` must hold the real download; a missing folder is an error that says where.
    """
    from medgan.data.prepared import load_prepared

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not (out_dir / "dataset.json").is_file():
        if not raw_dir.exists():
            if profile == "paper":
                raise FileNotFoundError(
                    f"{raw_dir} does not exist: the paper profile reads the real {name} download there "
                    "(see README, 'Using the real datasets')"
                )
            from medgan.data.phantoms import write_phantom

            write_phantom(name, raw_dir, seed=seed)
        from medgan.data.prepare import prepare

        prepare(name, raw_dir, out_dir, size=size, seed=seed)
    return load_prepared(out_dir)
