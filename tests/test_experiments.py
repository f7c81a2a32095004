"""medgan.experiments: a run, a generated set or a U-Net result is reused only when it is current.

Current = made by this code (``code_version``) from this config and these inputs. A stale one is renamed
``<name>.stale-<tag>`` (never deleted) and redone. Each test uses a 16² disc set and a tiny GAN (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medgan import experiments
from medgan.data.prepared import load_prepared
from medgan.runtime import code_version

KIMG, BATCH = 0.032, 8


@pytest.fixture(scope="module")
def real(discs):
    return load_prepared(discs)


@pytest.fixture
def train(tiny_overrides):
    """``train(real, runs, **kw)``: ``experiments.trained_run`` of a tiny DCGAN."""

    def run(real, runs, **kw):
        kw = {"kimg": KIMG, "batch": BATCH, "overrides": tiny_overrides, **kw}
        return experiments.trained_run(real, "dcgan", "quick", runs_root=runs, progress=False, **kw)

    return run


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its modification time and bytes: equal snapshots = untouched."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stale_siblings(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.stale-*"))


def edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def forbid(monkeypatch, name: str) -> None:
    def fail(*a, **k):
        raise AssertionError(f"experiments.{name} was called: a current result should have been reused")

    monkeypatch.setattr(experiments, name, fail)


# ---------------------------------------------------------------------------------------------
# GAN runs
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def run(real, tmp_path, train):
    run_dir = train(real, tmp_path / "runs")
    assert experiments.run_status(run_dir)["status"] == "finished"
    return run_dir


def test_current_run_is_reused_untouched(real, run, monkeypatch, train):
    info = json.loads((run / "config.json").read_text())
    assert info["code_version"] == code_version() and info["config_hash"]
    before = snapshot(run)
    forbid(monkeypatch, "run_training")
    assert train(real, run.parent) == run
    assert snapshot(run) == before
    assert stale_siblings(run) == []


def test_run_of_other_code_version_is_set_aside_and_retrained(real, run, train):
    edit_json(run / "config.json", code_version="0.0.1+0123456789ab")
    stale = snapshot(run)
    assert train(real, run.parent) == run
    [aside] = stale_siblings(run)
    assert aside.name == f"{run.name}.stale-0.0.1+0123456789ab"
    assert snapshot(aside) == stale  # kept as it was, not deleted
    info = json.loads((run / "config.json").read_text())
    assert info["code_version"] == code_version()
    assert experiments.run_status(run)["status"] == "finished"


def test_run_without_code_version_is_stale(real, run, train):
    info = json.loads((run / "config.json").read_text())
    del info["code_version"]
    (run / "config.json").write_text(json.dumps(info))
    train(real, run.parent)
    assert [p.name for p in stale_siblings(run)] == [f"{run.name}.stale-unknown"]


def test_run_of_other_config_is_set_aside_and_retrained(real, run, train):
    old_hash = json.loads((run / "config.json").read_text())["config_hash"]
    assert train(real, run.parent, seed=1) == run
    [aside] = stale_siblings(run)
    assert aside.name == f"{run.name}.stale-{old_hash}"
    info = json.loads((run / "config.json").read_text())
    assert info["config_hash"] != old_hash and info["config"]["seed"] == 1
    # and a third call with the same new config reuses the new run
    before = snapshot(run)
    train(real, run.parent, seed=1)
    assert snapshot(run) == before and len(stale_siblings(run)) == 1


def test_run_with_edited_config_hash_is_stale(real, run, train):
    edit_json(run / "config.json", config_hash="000000000000")
    train(real, run.parent)
    assert [p.name for p in stale_siblings(run)] == [f"{run.name}.stale-000000000000"]


def test_run_of_other_length_or_unfinished_is_not_reused(real, run, train):
    train(real, run.parent, kimg=2 * KIMG)  # kimg is outside the config hash (a resume may raise it)
    assert len(stale_siblings(run)) == 1
    assert json.loads((run / "config.json").read_text())["config"]["kimg"] == 2 * KIMG
    edit_json(run / "status.json", status="running")  # what a killed run leaves: resumed in place, not set aside
    train(real, run.parent, kimg=2 * KIMG)
    assert len(stale_siblings(run)) == 1 and "resumed_from_kimg" in json.loads((run / "config.json").read_text())
    assert experiments.run_status(run)["status"] == "finished"


def test_move_aside_never_overwrites(tmp_path):
    for i in range(3):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "f").write_text(str(i))
        experiments.move_aside(tmp_path / "x", "t/a g")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.stale-t_a_g", "x.stale-t_a_g-2", "x.stale-t_a_g-3"]
    assert [(tmp_path / n / "f").read_text() for n in names] == ["0", "1", "2"]


# ---------------------------------------------------------------------------------------------
# generated sets
# ---------------------------------------------------------------------------------------------
def sample(run, data_root, **kw):
    return experiments.generated_set(run, "quick", data_root=data_root, n=kw.pop("n", 8), progress=False, **kw)


def test_current_generated_set_is_reused_untouched(run, tmp_path, monkeypatch):
    gen = sample(run, tmp_path / "data")
    assert gen.meta["code_version"] == code_version()
    assert gen.meta["config_hash"] == json.loads((run / "config.json").read_text())["config_hash"]
    before = snapshot(gen.root)
    forbid(monkeypatch, "generate")
    assert sample(run, tmp_path / "data").root == gen.root
    assert snapshot(gen.root) == before and stale_siblings(gen.root) == []


def test_generated_set_of_other_code_version_is_set_aside(run, tmp_path):
    gen = sample(run, tmp_path / "data")
    edit_json(gen.root / "dataset.json", code_version="0.0.1+0123456789ab")
    stale = snapshot(gen.root)
    again = sample(run, tmp_path / "data")
    [aside] = stale_siblings(gen.root)
    assert aside.name == f"{gen.root.name}.stale-0.0.1+0123456789ab"
    assert snapshot(aside) == stale
    assert again.meta["code_version"] == code_version()


def test_generated_set_of_another_config_hash_is_set_aside(run, tmp_path):
    gen = sample(run, tmp_path / "data")
    edit_json(gen.root / "dataset.json", config_hash="000000000000")
    again = sample(run, tmp_path / "data")
    assert [p.name for p in stale_siblings(gen.root)] == [f"{gen.root.name}.stale-000000000000"]
    assert again.meta["config_hash"] == json.loads((run / "config.json").read_text())["config_hash"]


def test_generated_set_of_a_retrained_run_is_set_aside(real, run, tmp_path, train):
    gen = sample(run, tmp_path / "data")
    old_hash = gen.meta["config_hash"]
    train(real, run.parent, seed=1)  # the run now has another config hash
    again = sample(run, tmp_path / "data")
    assert [p.name for p in stale_siblings(gen.root)] == [f"{gen.root.name}.stale-{old_hash}"]
    assert again.meta["config_hash"] == json.loads((run / "config.json").read_text())["config_hash"] != old_hash


def test_generated_set_of_a_rewritten_checkpoint_or_other_size_is_set_aside(real, run, tmp_path, train):
    gen = sample(run, tmp_path / "data")
    train(real, run.parent, kimg=2 * KIMG)  # same config hash and code, other weights
    sample(run, tmp_path / "data")
    assert len(stale_siblings(gen.root)) == 1
    again = sample(run, tmp_path / "data", n=12)
    assert len(stale_siblings(gen.root)) == 2 and again.meta["counts"]["train"] == 12


# ---------------------------------------------------------------------------------------------
# U-Net results (segment stands in: the reuse rule, not the U-Net, is under test)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def fake_segment(monkeypatch):
    calls = []

    def segment(train_dirs, test_dir, *, seeds, augment, cfg, out_dir, progress=None):
        calls.append(list(train_dirs))
        out = Path(out_dir)
        assert not out.exists() or not any(out.iterdir()), "segment was handed a folder that is not empty"
        out.mkdir(parents=True, exist_ok=True)
        result = {"kind": "segment", "code_version": code_version(), "n_seeds": seeds, "config": cfg.to_dict(),
                  "training_set": "real", "dice": {"mean": {"mean": 0.5, "ci95": float("nan"), "values": [0.5]}}}
        (out / "segment.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(experiments, "segment", segment)
    return calls


@pytest.fixture
def test_set(tmp_path, make_discs):
    return load_prepared(make_discs(tmp_path / "test", test_patients=2))


def dice_of(train_dirs, test_set, out, **kw):
    return experiments.segmentation(train_dirs, test_set, out, seeds=kw.pop("seeds", 1), **kw)


def test_current_unet_result_is_reused_untouched(real, test_set, tmp_path, fake_segment):
    out = tmp_path / "table2" / "real"
    dice_of([real.root], test_set, out)
    before = snapshot(out)
    assert dice_of([real.root], test_set, out)["dice"]["mean"]["mean"] == 0.5
    assert len(fake_segment) == 1 and snapshot(out) == before and stale_siblings(out) == []


@pytest.mark.parametrize("version", [None, "0.0.1+0123456789ab"])
def test_unet_result_of_other_or_no_code_version_is_set_aside(real, test_set, tmp_path, fake_segment, version):
    out = tmp_path / "table2" / "real"
    dice_of([real.root], test_set, out)
    result = json.loads((out / "segment.json").read_text())
    if version is None:
        del result["code_version"]
    else:
        result["code_version"] = version
    (out / "segment.json").write_text(json.dumps(result))
    stale = snapshot(out)
    dice_of([real.root], test_set, out)
    [aside] = stale_siblings(out)
    assert aside.name == f"real.stale-{version or 'unknown'}" and snapshot(aside) == stale
    assert len(fake_segment) == 2
    assert json.loads((out / "segment.json").read_text())["code_version"] == code_version()


def test_unet_result_of_other_inputs_or_config_is_set_aside(real, test_set, tmp_path, fake_segment, make_discs):
    out = tmp_path / "table2" / "gen"
    other = load_prepared(make_discs(tmp_path / "gen", seed=1))
    dice_of([other.root], test_set, out)
    # the training set is regenerated in place (same path, other content)
    write = make_discs(tmp_path / "gen2", seed=2)
    for f in ("images.npy", "masks.npy", "dataset.json"):
        (other.root / f).write_bytes((write / f).read_bytes())
    dice_of([other.root], test_set, out)
    assert len(fake_segment) == 2 and len(stale_siblings(out)) == 1
    dice_of([other.root], test_set, out, seeds=2)
    dice_of([other.root], test_set, out, seeds=2, augment=True)
    assert len(fake_segment) == 4 and len(stale_siblings(out)) == 3
    dice_of([other.root], test_set, out, seeds=2, augment=True)
    assert len(fake_segment) == 4


def test_real_unet_result_is_reused_when_it_records_this_code_version(tmp_path, make_discs):
    """With ``medgan.segmentation.segment`` itself: a segment.json with this code version is reused; one
    without a code version (segment did not record it before) is set aside as stale."""
    from medgan.segmentation import UNetConfig

    data = load_prepared(make_discs(tmp_path / "discs", test_patients=2))
    cfg = UNetConfig(depth=2, width=4, max_epochs=1, patience=0, batch=8, device="cpu", amp="off")
    out = tmp_path / "table2" / "real"
    first = experiments.segmentation([data.root], data, out, seeds=1, cfg=cfg, progress=False)
    before = snapshot(out)
    again = experiments.segmentation([data.root], data, out, seeds=1, cfg=cfg, progress=False)
    if first.get("code_version") == code_version():
        assert snapshot(out) == before and stale_siblings(out) == []
        assert again == json.loads((out / "segment.json").read_text())
    else:
        assert "code_version" not in first
        [aside] = stale_siblings(out)
        assert aside.name == "real.stale-unknown" and snapshot(aside) == before
