"""``medgan generate``: a trained run's G_ema -> a valid prepared set that every reader takes as is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.cli import main as cli_main
from medgan.data.prepared import describe, load_prepared
from medgan.generate import MASK_SOURCE_GENERATOR, MASK_SOURCE_WARPED, generate
from medgan.training import load_checkpoint, make_config, run_training


@pytest.fixture(scope="module")
def run(tiny_overrides, discs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dcgan-run"
    run_training(make_config(data=discs, out=out, gan="dcgan", kimg=0.032, batch=8, overrides=tiny_overrides), progress=False)
    return out


@pytest.fixture(scope="module")
def cond_run(tiny_overrides, conditional_model, discs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cond-run"
    cfg = make_config(data=discs, out=out, gan="hinge", kimg=0.016, batch=8, overrides=[*tiny_overrides, f"model.name={conditional_model}"])
    run_training(cfg, progress=False)
    return out


def test_generate_writes_a_valid_prepared_set(disc_labels, run, discs, tmp_path):
    out = generate(run, 10, tmp_path / "gen", batch=4, seed=3, progress=False)
    ps = load_prepared(out)
    real = load_prepared(discs)
    assert len(ps) == 10 and ps.source == "generated"
    assert ps.images.shape == (10, 1, 16, 16) and ps.images.dtype == np.float16 and ps.masks.dtype == np.uint8
    assert ps.labels == disc_labels and ps.meta["modality"] == real.meta["modality"] and ps.channels == real.channels
    assert set(np.unique(ps.masks).tolist()) <= {0, 1, 2}
    assert float(np.abs(ps.images.astype(np.float32)).max()) <= 1.0
    assert list(ps.patients) == [f"gen-{i:06d}" for i in range(10)]
    assert ps.meta["splits"]["train"] == list(ps.patients) and ps.meta["counts"] == {"train": 10, "val": 0, "test": 0}
    info = json.loads((run / "config.json").read_text())
    m = ps.meta
    assert m["run_id"] == run.name and m["config_hash"] == info["config_hash"] and m["gan"] == "dcgan"
    assert m["checkpoint"] == "checkpoint-last.pt" and m["checkpoint_kimg"] == load_checkpoint(run / "checkpoint-last.pt")["nimg"] / 1000
    assert m["mask_source"] == MASK_SOURCE_GENERATOR and m["seed"] == 3
    assert "generated" in describe(ps)


def test_generate_matches_g_ema_and_does_not_depend_on_batch(run, tmp_path):
    from medgan.data.prepared import split_joint
    from medgan.generate import load_generator

    a = load_prepared(generate(run, 7, tmp_path / "a", batch=2, seed=1, progress=False))
    b = load_prepared(generate(run, 7, tmp_path / "b", batch=7, seed=1, progress=False))
    c = load_prepared(generate(run, 7, tmp_path / "c", batch=7, seed=2, progress=False))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    # the stored pairs are G_ema(z) with z ~ N(0, 1) from the seed, mask = argmax of the mask channels
    G, *_ = load_generator(run)
    with torch.no_grad():
        joint = G(torch.randn(7, G.z_dim, generator=torch.Generator().manual_seed(1)))
    image, mask = split_joint(joint, 1)
    np.testing.assert_array_equal(a.masks, mask.numpy())
    np.testing.assert_allclose(a.images.astype(np.float32), image.numpy(), atol=1e-3)


def test_generate_refuses_to_overwrite(run, tmp_path):
    out = tmp_path / "gen"
    generate(run, 3, out, progress=False)
    before = (out / "images.npy").read_bytes()
    with pytest.raises(FileExistsError):
        generate(run, 3, out, seed=5, progress=False)
    assert (out / "images.npy").read_bytes() == before
    generate(run, 3, out, seed=5, overwrite=True, progress=False)
    assert (out / "images.npy").read_bytes() != before


def test_conditional_run_draws_warped_training_masks(cond_run, discs, tmp_path):
    ps = load_prepared(generate(cond_run, 12, tmp_path / "gen", batch=5, progress=False))
    assert ps.meta["mask_source"] == MASK_SOURCE_WARPED
    assert ps.meta["real_dataset"]["train_split"] == "train+val"  # FID's default reference follows the run
    assert set(np.unique(ps.masks).tolist()) <= {0, 1, 2}
    real_masks = load_prepared(discs).load("train")[1]
    # warped, not copied: most generated masks are no training mask
    copies = sum(any(np.array_equal(m, r) for r in real_masks) for m in ps.masks)
    assert copies < 12 and (ps.masks > 0).any()


def test_cli_generate_feeds_data_info(run, tmp_path, capsys):
    out = tmp_path / "gen"
    assert cli_main(["generate", str(run), "--n", "5", "--out", str(out), "--batch", "2", "--seed", "4"]) == 0
    assert cli_main(["data", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source: generated" in printed and run.name in printed
    assert cli_main(["generate", str(run), "--n", "5", "--out", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["generate", str(tmp_path / "nope"), "--n", "5", "--out", str(tmp_path / "x")]) == 2
    assert cli_main(["generate", str(run), "--n", "5", "--out", str(tmp_path / "y"), "--checkpoint", "best-fid"]) == 2
    assert "best-fid" in capsys.readouterr().err


def _G_ema_output(G, z):
    with torch.no_grad():
        return G(z)


def test_a_checkpoint_file_stands_alone(run, tmp_path):
    from medgan.generate import load_generator

    alone = tmp_path / "elsewhere" / "g.pt"
    alone.parent.mkdir()
    alone.write_bytes((run / "checkpoint-last.pt").read_bytes())  # no config.json beside it
    G_file, info, state, path = load_generator(alone)
    G_run, info_run, *_ = load_generator(run)
    assert path == alone and state["dims"] == {"channels": 1, "num_labels": 3, "resolution": 16}
    assert info["config_hash"] == info_run["config_hash"] and info["dataset"] == {**info_run["dataset"]}
    z = torch.randn(4, G_run.z_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_G_ema_output(G_file, z), _G_ema_output(G_run, z), rtol=0, atol=0)
    a = load_prepared(generate(alone, 5, tmp_path / "a", seed=1, progress=False))
    b = load_prepared(generate(run, 5, tmp_path / "b", seed=1, progress=False))
    np.testing.assert_array_equal(a.images, b.images)
    assert a.meta["config_hash"] == b.meta["config_hash"] and a.meta["gan"] == "dcgan"


def test_checkpoints_from_before_they_stood_alone_read_config_json(run, tmp_path):
    from medgan.errors import InputNotFoundError
    from medgan.generate import load_generator
    from medgan.training import save_checkpoint

    old = tmp_path / "old-run"
    old.mkdir()
    (old / "config.json").write_text((run / "config.json").read_text())
    state = load_checkpoint(run / "checkpoint-last.pt")
    for key in ("config", "dims", "dataset"):
        state.pop(key)
    save_checkpoint(old / "checkpoint-last.pt", state)
    G_old, info, *_ = load_generator(old)
    G_run, *_ = load_generator(run)
    z = torch.randn(3, G_run.z_dim, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(_G_ema_output(G_old, z), _G_ema_output(G_run, z), rtol=0, atol=0)
    (old / "config.json").unlink()
    with pytest.raises(InputNotFoundError, match="config.json is missing"):
        load_generator(old)


def test_truncation_scales_z_for_a_dcgan_and_is_recorded(run, tmp_path):
    from medgan.data.prepared import split_joint
    from medgan.generate import load_generator

    ps = load_prepared(generate(run, 6, tmp_path / "t", seed=2, truncation=0.5, progress=False))
    assert ps.meta["truncation"] == 0.5
    G, *_ = load_generator(run)
    z = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(2))
    image, mask = split_joint(_G_ema_output(G, z * 0.5), 1)
    np.testing.assert_allclose(ps.images.astype(np.float32), image.numpy(), atol=1e-3)
    np.testing.assert_array_equal(ps.masks, mask.numpy())
    plain = load_prepared(generate(run, 6, tmp_path / "p", seed=2, progress=False))
    assert plain.meta["truncation"] == 1.0  # the run's model.truncation, recorded
    assert not np.array_equal(plain.images, ps.images)


def test_conditional_run_can_draw_the_training_masks_unchanged(cond_run, run, discs, tmp_path, capsys):
    from medgan.generate import MASK_SOURCE_TRAINING

    ps = load_prepared(generate(cond_run, 12, tmp_path / "gen", batch=5, seed=2, masks="training", progress=False))
    assert ps.meta["mask_source"] == MASK_SOURCE_TRAINING
    real_masks = load_prepared(discs).load(ps.meta["real_dataset"]["train_split"])[1]  # the run's split: train+val
    # unchanged: every generated mask is exactly one of the run's training masks
    assert all(any(np.array_equal(m, r) for r in real_masks) for m in ps.masks)
    again = load_prepared(generate(cond_run, 12, tmp_path / "again", batch=12, seed=2, masks="training", progress=False))
    np.testing.assert_array_equal(ps.masks, again.masks)  # seeded: the same draws whatever the batch
    # the CLI flag; an unconditional G makes its own masks and ignores it
    assert cli_main(["generate", str(cond_run), "--n", "3", "--out", str(tmp_path / "cli"), "--masks", "training"]) == 0
    assert load_prepared(tmp_path / "cli").meta["mask_source"] == MASK_SOURCE_TRAINING
    uncond = load_prepared(generate(run, 3, tmp_path / "uncond", masks="training", progress=False))
    assert uncond.meta["mask_source"] == MASK_SOURCE_GENERATOR
    with pytest.raises(ValueError, match="warped, training"):
        generate(cond_run, 3, tmp_path / "bad", masks="copied", progress=False)
    capsys.readouterr()


def test_conditional_run_refuses_masks_of_a_set_it_did_not_train_on(cond_run, small_discs, tmp_path):
    """A run's recorded dataset root is followed only to the very set its GAN trained on (content hash)."""
    import shutil

    from medgan.errors import CheckpointError

    doctored = tmp_path / "run"
    shutil.copytree(cond_run, doctored)
    ckpt = doctored / "checkpoint-last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["dataset"] = {**state["dataset"], "root": str(small_discs)}  # another set, same format
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match="is not the set run"):
        generate(doctored, 4, tmp_path / "gen", batch=2, progress=False)
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize("network", ["G_ema", "G", "D"])
def test_load_network_returns_each_network_of_a_checkpoint_frozen_in_eval_mode(run, network):
    from medgan.generate import load_network

    net, info, state, path = load_network(run, network=network)
    assert path.name == "checkpoint-last.pt" and info["gan"] == "dcgan"
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for key, value in net.state_dict().items():  # exactly the weights stored under that name, not another network's
        torch.testing.assert_close(value, state[network][key], rtol=0, atol=0)
    if network == "D":
        from medgan.beyond.anomaly import load_discriminator

        D, *_ = load_discriminator(run)
        assert type(D) is type(net) and D.state_dict().keys() == net.state_dict().keys()


def test_load_network_refuses_an_unknown_network(run):
    from medgan.errors import UserError
    from medgan.generate import load_network

    with pytest.raises(UserError, match="no network 'E'"):
        load_network(run, network="E")
