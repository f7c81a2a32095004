"""``ensure_prepared``: the quick profile writes phantoms where raw data is missing; the paper profile never does."""

from __future__ import annotations

import pytest

from medgan.config import PROFILES, get_profile
from medgan.data import ensure_prepared
from medgan.errors import ConfigError, InputNotFoundError


def test_paper_profile_never_writes_phantoms(tmp_path):
    raw, out = tmp_path / "raw" / "acdc", tmp_path / "prepared" / "acdc"
    with pytest.raises(InputNotFoundError, match=r"raw/acdc does not exist: the paper profile reads the real acdc"):
        ensure_prepared("acdc", raw, out, profile="paper")
    assert not raw.exists() and not out.exists() and list(tmp_path.iterdir()) == []


def test_quick_profile_writes_phantoms_then_reuses_the_prepared_set(tmp_path):
    raw, out = tmp_path / "raw" / "idrid", tmp_path / "prepared" / "idrid"
    ps = ensure_prepared("idrid", raw, out, profile="quick", size=32)
    assert (raw / "PHANTOM.txt").is_file() and ps.source == "phantom" and ps.image_size == 32
    stamp = (out / "dataset.json").stat().st_mtime_ns
    (raw / "PHANTOM.txt").unlink()  # a second call must not look at the raw folder again
    again = ensure_prepared("idrid", raw, out, profile="paper", size=32)
    assert (out / "dataset.json").stat().st_mtime_ns == stamp and again.content_sha256 == ps.content_sha256


def test_paper_profile_prepares_a_real_download_it_is_given(tmp_path, idrid_raw):
    ps = ensure_prepared("idrid", idrid_raw, tmp_path / "prep", profile="paper", size=32)
    assert len(ps) > 0  # the raw folder exists, so nothing is written into it: it is converted


def test_profiles_are_one_table():
    assert get_profile("quick").phantoms and get_profile("smoke").phantoms and not get_profile("paper").phantoms
    assert set(PROFILES) == {"quick", "paper", "smoke"}  # smoke: toy sizes for notebook reruns in tests
    assert (get_profile("paper").kimg, get_profile("quick").kimg) == (1000, 8.0)  # book/deviations.md, training length
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        get_profile("fast")
