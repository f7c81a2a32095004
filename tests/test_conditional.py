"""Conditional GAN on ACDC labels (group / phase): label encoding, the projection and concat discriminators in
closed form, labels through the loss (GP included), the trainer's label rows, exact resume, ``medgan train`` and
``medgan generate --label`` (labels recorded as the prepared ACDC set records them)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medgan import cli
from medgan.beyond import conditional as beyond
from medgan.config import ConfigError, LossConfig, TrainConfig
from medgan.data.phantoms import ACDC_GROUPS
from medgan.data.prepared import load_prepared, to_joint
from medgan.generate import generate
from medgan.losses import build_loss
from medgan.models import MODELS
from medgan.models.conditional import (
    LABEL_FIELDS,
    check_label_support,
    class_values,
    encode_labels,
    label_maps,
    num_classes,
    parse_label,
    prior_labels,
)
from medgan.training import DataOrder, Trainer, load_checkpoint, make_config, run_training

TINY = ["model.g_filters=8", "model.d_filters=8", "grid=4"]


def _cfg(**model) -> TrainConfig:
    return TrainConfig(batch=4).with_overrides({"model.g_filters": 8, "model.d_filters": 8,
                                                **{f"model.{k}": v for k, v in model.items()}})


def _pair(res: int = 16, **model):
    return MODELS["dcgan"](_cfg(**model).model, channels=1, num_labels=3, resolution=res)


# ------------------------------------------------------------------------------------------ labels
def test_labels_encode_to_one_class_index_and_back():
    arrays = {"group": np.array(["NOR", "RV", "DCM", "HCM"]), "phase": np.array(["ED", "ES", "ES", "ED"])}
    assert num_classes("") == 0 and num_classes("group") == 5 and num_classes("phase") == 2
    assert num_classes("group,phase") == 10
    idx = encode_labels(arrays, "group,phase")
    assert idx.tolist() == [0 * 2 + 0, 4 * 2 + 1, 2 * 2 + 1, 3 * 2 + 0]  # group is the most significant digit
    back = class_values(idx, "group,phase")
    assert back["group"].tolist() == arrays["group"].tolist() and back["phase"].tolist() == arrays["phase"].tolist()
    assert encode_labels(arrays, "phase").tolist() == [0, 1, 1, 0]
    assert parse_label("dcm,ES", "group,phase") == 2 * 2 + 1
    for bad, cond, words in [("DCM", "group,phase", "give 2 value"), ("XYZ", "group", "not one of"),
                             ("NOR", "nope", "model.condition")]:
        with pytest.raises(ConfigError, match=words):
            parse_label(bad, cond)
    with pytest.raises(ConfigError, match="per-slice 'phase' array"):
        encode_labels({"group": arrays["group"]}, "group,phase")


def test_labels_without_labels_follow_the_prior_by_quantiles():
    # cdf (0.25, 0.25, 1): quantiles 1/8, 3/8, 5/8, 7/8 -> class 0, then 2, 2, 2; the empty class never appears
    assert prior_labels(torch.tensor([1.0, 0.0, 3.0]), 4).tolist() == [0, 2, 2, 2]
    assert torch.bincount(prior_labels(torch.tensor([2.0, 1.0, 1.0]), 8), minlength=3).tolist() == [4, 2, 2]


# ------------------------------------------------------------------------------------------ D in closed form
def test_projection_discriminator_adds_the_inner_product_of_embedding_and_pooled_features():
    torch.manual_seed(0)
    D = _pair(condition="group", cond_d="projection").D.eval()
    x = torch.randn(3, 4, 16, 16)
    y = torch.tensor([0, 3, 4])
    logits, feats = D(x, labels=y, return_features=True)
    h = feats[-1]
    expected = D.to_logit(h).flatten() + (D.projection.embed.weight[y] * h.sum(dim=(2, 3))).sum(1)
    torch.testing.assert_close(logits, expected)
    # only the projection term depends on y: the difference between two labels is <e_a - e_b, Σ h>
    other = D(x, labels=torch.tensor([1, 1, 1]))
    diff = ((D.projection.embed.weight[y] - D.projection.embed.weight[1]) * h.sum(dim=(2, 3))).sum(1)
    torch.testing.assert_close(logits - other, diff)
    with pytest.raises(ValueError, match="pass labels"):
        D(x)


def test_concat_discriminator_sees_one_pm1_map_per_class():
    torch.manual_seed(0)
    D = _pair(condition="phase", cond_d="concat").D.eval()
    assert D.blocks[0][0].in_channels == 1 + 3 + 2 and D.projection is None
    x = torch.randn(2, 4, 16, 16)
    y = torch.tensor([1, 0])
    maps = label_maps(y, 2, x)
    assert maps.shape == (2, 2, 16, 16)
    assert (maps[0, 1] == 1).all() and (maps[0, 0] == -1).all() and (maps[1, 0] == 1).all()
    h = torch.cat([x, maps], dim=1)
    for block in D.blocks:
        h = block(h)
    torch.testing.assert_close(D(x, labels=y), D.to_logit(h).flatten())


def test_unconditional_pair_is_unchanged_and_g_uses_the_label():
    torch.manual_seed(0)
    plain = _pair()
    assert plain.G.input is None and plain.D.projection is None and plain.D.q_head is None
    assert plain.G.body[0][0].in_channels == 100 and plain.D.blocks[0][0].in_channels == 4
    G = _pair(condition="group").G.eval()
    z = torch.randn(2, G.z_dim)
    a, b = G(z, None, labels=torch.tensor([0, 0])), G(z, None, labels=torch.tensor([2, 2]))
    assert not torch.allclose(a, b)  # same z, another class: another joint
    G.set_label_prior(torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0]))
    torch.testing.assert_close(G(z), b)  # no labels: the prior's only class


def test_other_backbones_refuse_the_condition(disk_set, tmp_path):
    cfg = make_config(out=tmp_path / "r", data=disk_set, gan="stylegan2", kimg=0.004, batch=2,
                      overrides=["model.condition=group"])
    with pytest.raises(ConfigError, match="label conditioning is implemented on the dcgan backbone only"):
        run_training(cfg, progress=False)
    for knob in ("model.condition=phase", "model.info_cont=2"):
        model_cfg = TrainConfig().with_overrides(["model.name=spade", "model.spade_hidden=8", knob]).model
        pair = MODELS["spade"](model_cfg, channels=1, num_labels=3, resolution=32)
        with pytest.raises(ConfigError, match="dcgan backbone only"):
            check_label_support(model_cfg, pair.G, pair.D)


# ------------------------------------------------------------------------------------------ the loss
class _Recorder(nn.Module):
    """Wraps a module and records the ``labels`` of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []
        for k in ("z_dim", "num_classes", "info_cat", "info_cont", "q_head"):
            if hasattr(inner, k):
                setattr(self, k, getattr(inner, k))

    def forward(self, *args, labels=None, **kw):
        self.seen.append(None if labels is None else labels.clone())
        return self.inner(*args, labels=labels, **kw)


@pytest.mark.parametrize("name", ["dcgan", "lsgan", "wgan", "wgan-gp", "hinge"])
def test_every_classic_loss_passes_labels_to_G_and_D(name):
    torch.manual_seed(0)
    pair = _pair(condition="group,phase", cond_d="projection", d_norm="instance")
    G, D = _Recorder(pair.G), _Recorder(pair.D)
    cfg = LossConfig(name=name, gp_weight=10.0 if name == "wgan-gp" else 0.0)
    loss = build_loss(cfg, G, D, channels=1, num_labels=3)
    real = to_joint(torch.rand(4, 1, 16, 16) * 2 - 1, torch.randint(0, 3, (4, 16, 16)), 3)
    y = torch.tensor([0, 9, 3, 5])
    total, terms = loss.d_loss(real, torch.randn(4, G.z_dim), labels=y)
    assert math.isfinite(total.item())
    # G once, D on real, on fake, and (wgan-gp) on the interpolates: every call with the batch's labels
    assert len(G.seen) == 1 and len(D.seen) == (3 if name == "wgan-gp" else 2)
    assert all(s is not None and torch.equal(s, y) for s in G.seen + D.seen)
    loss.g_loss(real, torch.randn(4, G.z_dim), labels=y)[0].backward()
    assert all(torch.equal(s, y) for s in G.seen + D.seen)


def test_conditional_dcgan_loss_in_closed_form():
    torch.manual_seed(0)
    pair = _pair(condition="group", d_norm="instance", g_norm="instance")
    loss = build_loss(LossConfig(name="dcgan", label_smoothing=0.1), pair.G, pair.D, channels=1, num_labels=3)
    real = to_joint(torch.rand(3, 1, 16, 16) * 2 - 1, torch.randint(0, 3, (3, 16, 16)), 3)
    z, y = torch.randn(3, 100), torch.tensor([4, 0, 2])
    total, terms = loss.d_loss(real, z, labels=y)
    with torch.no_grad():
        r, f = pair.D(real, labels=y), pair.D(pair.G(z, labels=y), labels=y)
    expected = F.binary_cross_entropy_with_logits(r, torch.full_like(r, 0.9)) + \
        F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    g_total, _ = loss.g_loss(real, z, labels=y)
    with torch.no_grad():
        f = pair.D(pair.G(z, labels=y), labels=y)
    assert g_total.item() == pytest.approx(F.binary_cross_entropy_with_logits(f, torch.ones_like(f)).item(), rel=1e-5)


def test_gradient_penalty_differentiates_the_conditional_critic():
    """With labels the GP is taken on D(·, y): a critic that is ‖x‖-free but y-scaled has a known gradient."""

    class ScaledD(nn.Module):
        num_classes = 2

        def forward(self, x, labels=None, return_features=False):
            scale = 1.0 + labels.float()  # class 1 doubles the slope
            out = scale * x.flatten(1).sum(1)
            return (out, [x]) if return_features else out

    G = _pair(condition="phase").G
    loss = build_loss(LossConfig(name="wgan-gp", gp_weight=1.0), G, ScaledD(), channels=1, num_labels=3)
    real = torch.zeros(2, 4, 16, 16)
    _, terms = loss.d_loss(real, torch.randn(2, 100), labels=torch.tensor([0, 1]))
    # ‖∇‖ = scale · sqrt(#pixels): (16·2^0·... ) per sample: ((s·32 - 1)²) with 4·16·16 = 1024 -> sqrt = 32
    expected = ((32.0 - 1) ** 2 + (64.0 - 1) ** 2) / 2
    assert terms["D_gp"].item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------ the trainer
def test_trainer_keeps_labels_aligned_with_the_joint_rows(acdc_prepared):
    ps = load_prepared(acdc_prepared)
    images, masks = ps.load("train+val")
    idx = ps.indices("train+val")
    joint = to_joint(torch.from_numpy(images), torch.from_numpy(masks), ps.num_labels)
    cfg = _cfg(condition="group,phase").with_overrides({"data": str(acdc_prepared)})
    t = Trainer(cfg, joint, channels=1, num_labels=ps.num_labels, device=torch.device("cpu"))
    expected = encode_labels({k: v[idx] for k, v in ps.extra.items()}, "group,phase")
    assert t.labels.tolist() == expected.tolist()
    assert t.G.label_prior.tolist() == np.bincount(expected, minlength=10).tolist()
    assert torch.equal(t.G_ema.label_prior, t.G.label_prior)
    order = DataOrder(len(joint), seed=cfg.seed)
    for _ in range(3):
        rows = order.next(4)
        real, labels = t.real_batch_labels()
        assert torch.equal(real, joint[rows]) and labels.tolist() == expected[rows.numpy()].tolist()
    with pytest.raises(ConfigError, match="labels for"):
        Trainer(cfg, joint, channels=1, num_labels=ps.num_labels, device=torch.device("cpu"), labels=torch.zeros(3))


def test_condition_on_a_set_without_label_arrays_is_one_error(disk_set, tmp_path):
    cfg = make_config(out=tmp_path / "r", data=disk_set, gan="dcgan", kimg=0.004, batch=2,
                      overrides=[*TINY, "model.condition=group"])
    with pytest.raises(ConfigError, match="per-slice 'group' array"):
        run_training(cfg, progress=False)


@pytest.mark.parametrize("gan,sets", [
    ("dcgan", ["model.condition=group,phase", "model.cond_d=projection", "aug.diffaugment=translation"]),
    ("wgan-gp", ["model.condition=group", "model.cond_d=concat", "loss.n_critic=2"]),
])
def test_conditional_resume_is_exact(acdc_prepared, tmp_path, assert_resume_exact, gan, sets):
    state = assert_resume_exact(acdc_prepared, tmp_path, gan, [*TINY, *sets])
    assert state["config"]["model"]["condition"] == sets[0].split("=")[1]


# ------------------------------------------------------------------------------------------ CLI train + generate
@pytest.fixture(scope="module")
def cond_run(acdc_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    rc = cli.main(["train", "--data", str(acdc_prepared), "--out", str(out), "--gan", "lsgan", "--kimg", "0.008",
                   "--batch", "4", "--no-progress", "--set", *TINY, "model.condition=group,phase",
                   "model.cond_d=concat", "tick_kimg=0.004"])
    assert rc == 0
    return out


def test_generate_label_writes_the_label_arrays_of_the_prepared_set(cond_run, acdc_prepared, tmp_path, capsys):
    real = load_prepared(acdc_prepared)
    assert cli.main(["generate", str(cond_run), "--n", "5", "--out", str(tmp_path / "g"), "--label", "DCM,ES"]) == 0
    gen = load_prepared(tmp_path / "g")
    assert sorted(gen.extra) == ["group", "phase"]
    assert gen.extra["group"].tolist() == ["DCM"] * 5 and gen.extra["phase"].tolist() == ["ES"] * 5
    for k in ("group", "phase"):
        assert gen.extra[k].dtype == real.extra[k].dtype  # the same form a classifier reads on real data
    meta = json.loads((tmp_path / "g" / "dataset.json").read_text())
    assert meta["data_source"] == real.source == "phantom" and meta["real_dataset"]["source"] == "phantom"
    assert meta["label"] == "DCM,ES" and meta["condition"] == "group,phase"
    # the images follow the label: the same z for another label gives other images
    generate(cond_run, 5, tmp_path / "g2", label="NOR,ED")
    assert not np.array_equal(np.asarray(gen.images), np.asarray(load_prepared(tmp_path / "g2").images))


def test_generate_without_label_draws_the_training_proportions(cond_run, acdc_prepared, tmp_path):
    ps = load_prepared(acdc_prepared)
    idx = ps.indices("train+val")
    train_classes = set(encode_labels({k: v[idx] for k, v in ps.extra.items()}, "group,phase").tolist())
    gen = load_prepared(generate(cond_run, 40, tmp_path / "g", seed=3))
    drawn = encode_labels(gen.extra, "group,phase")
    assert set(drawn.tolist()) <= train_classes and len(set(drawn.tolist())) > 1
    assert "training set's class proportions" in gen.meta["label_source"] and gen.meta["label"] is None
    again = load_prepared(generate(cond_run, 40, tmp_path / "g2", seed=3))
    assert again.extra["group"].tolist() == gen.extra["group"].tolist()  # recorded and reproducible


def test_label_on_an_unconditional_run_is_one_error_line(disk_set, tmp_path, capsys):
    run = run_training(make_config(out=tmp_path / "r", data=disk_set, gan="dcgan", kimg=0.004, batch=2,
                                   overrides=TINY), progress=False)
    assert load_checkpoint(run / "checkpoint-last.pt")["nimg"] > 0
    rc = cli.main(["generate", str(run), "--n", "2", "--out", str(tmp_path / "g"), "--label", "DCM"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is unconditional" in err[0] and "--label" in err[0]


def test_label_fields_match_the_phantom_groups():
    assert LABEL_FIELDS["group"] == tuple(ACDC_GROUPS)


def test_conditional_set_trains_once_and_reuses(acdc_prepared, tmp_path, monkeypatch):
    """The API the classifier demo calls: a labelled synthetic set, rebuilt only when stale."""
    data_root = tmp_path / "data"
    (data_root / "prepared").mkdir(parents=True)
    shutil.copytree(acdc_prepared, data_root / "prepared" / "acdc-64")
    monkeypatch.setitem(beyond.DEMO_SIZES, "quick", beyond.DemoSize(size=64, kimg=0.008, batch=4, filters=8,
                                                                     n_per_label=3))
    kw = dict(data_root=data_root, runs_root=tmp_path / "runs", progress=False)
    out = beyond.conditional_set("quick", label="HCM", **kw)
    gen = load_prepared(out)
    assert len(gen) == 3 and gen.extra["group"].tolist() == ["HCM"] * 3 and gen.meta["data_source"] == "phantom"
    ckpt = Path(gen.meta["run_dir"]) / "checkpoint-last.pt"
    stamp = (ckpt.stat().st_mtime_ns, (out / "images.npy").stat().st_mtime_ns)
    assert beyond.conditional_set("quick", label="HCM", **kw) == out
    assert (ckpt.stat().st_mtime_ns, (out / "images.npy").stat().st_mtime_ns) == stamp  # reused, not redone
    prior = load_prepared(beyond.conditional_set("quick", **kw))
    assert len(prior) == 3 * 5 and prior.meta["label"] is None and ckpt.stat().st_mtime_ns == stamp[0]
