"""medgan.classify: accuracy/vote/confusion by hand, class weights, the CAS protocol on a labelled set whose class
is visible (a disc's size), the image+mask knob, the CLI, and the bad inputs it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medgan.classify import (
    ClassifierConfig,
    accuracy_report,
    class_indices,
    class_weights,
    classify,
    confusion,
    load_classifier,
    patient_votes,
    predict_proba,
)
from medgan.classify.evaluate import labelled_split
from medgan.cli import main
from medgan.data.prepared import load_prepared, write_prepared
from medgan.errors import ConfigError, IncompatibleSetsError, UserError

SIZE = 16
RADIUS = {"small": 2.5, "large": 5.5}
FAST = dict(classes=("small", "large"), depth=2, width=8, max_epochs=12, patience=4, batch=16, lr=3e-3, device="cpu")


def make_labelled(out: Path, *, patients=(8, 2, 4), per_patient: int = 4, seed: int = 0, source: str = "phantom",
                  visible_in: str = "image", name: str = "discs-cls") -> Path:
    """Bright discs whose radius is the class ("small"/"large"), ``per_patient`` slices a patient, classes alternate
    by patient; ``patients`` = (train, val, test) counts. ``visible_in="mask"`` draws the same noise image for
    every class and puts the class in the mask only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    n_pat = sum(patients)
    ids = [f"q{i:03d}" for i in range(n_pat)]
    cls = ["small" if i % 2 == 0 else "large" for i in range(n_pat)]
    images, masks, pats, groups = [], [], [], []
    for pid, c in zip(ids, cls, strict=True):
        for _ in range(per_patient):
            cy, cx = rng.uniform(6.5, 9.5, 2)
            r = RADIUS[c] * rng.uniform(0.9, 1.1)
            disc = np.hypot(yy - cy, xx - cx) < r
            image = rng.normal(-0.5, 0.1, (1, SIZE, SIZE))
            if visible_in == "image":
                image[0][disc] = 0.7
            images.append(image.clip(-1, 1))
            masks.append(disc.astype(np.uint8))
            pats.append(pid)
            groups.append(c)
    a, b = patients[0], patients[0] + patients[1]
    split = {"train": ids[:a], "val": ids[a:b], "test": ids[b:]}
    if source == "generated":
        split = {"train": ids, "val": [], "test": []}
    meta = dict(name=name, modality="synthetic", labels={"0": "background", "1": "disc"}, source=source,
                splits=split, normalisation="none", inputs_sha256="0" * 64)
    return write_prepared(out, images=np.asarray(images, np.float32), masks=np.asarray(masks), patients=pats,
                          meta=meta, extra={"group": np.asarray(groups, "<U8")})


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return make_labelled(tmp_path_factory.mktemp("cls") / "real")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_labelled(tmp_path_factory.mktemp("cls") / "syn", patients=(12, 0, 0), seed=1, source="generated",
                         name="discs-cls-generated")


# ---------------------------------------------------------------------------------------------
# metrics by hand
# ---------------------------------------------------------------------------------------------
def test_confusion_counts_by_hand_and_sklearn():
    true = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert confusion(true, pred, 3).tolist() == expected
    metrics = pytest.importorskip("sklearn.metrics")
    assert confusion(true, pred, 3).tolist() == metrics.confusion_matrix(true, pred, labels=[0, 1, 2]).tolist()


def test_votes_and_report_by_hand():
    classes = ["A", "B", "C"]
    probs = np.array([
        # patient p1 (true A): slice votes A, B, B -> majority B; mean probs A .5, B .4667 -> mean_prob A
        [0.9, 0.1, 0.0], [0.3, 0.7, 0.0], [0.3, 0.6, 0.1],
        # patient p2 (true C): votes C, B -> tie; mean C .55 > B .45 -> both votes C
        [0.0, 0.2, 0.8], [0.0, 0.7, 0.3],
        # patient p3 (true B): votes A -> both A (wrong)
        [0.6, 0.4, 0.0],
    ])
    true = np.array([0, 0, 0, 2, 2, 1])
    patients = np.array(["p1", "p1", "p1", "p2", "p2", "p3"])
    votes = patient_votes(probs, true, patients)
    assert votes["patients"].tolist() == ["p1", "p2", "p3"]
    assert votes["true"].tolist() == [0, 2, 1]
    assert votes["majority"].tolist() == [1, 2, 0]
    assert votes["mean_prob"].tolist() == [0, 2, 0]
    report = accuracy_report(probs, true, patients, classes, n_boot=200)
    # slices: argmax A, B, B, C, B, A -> correct: 1, 0, 0, 1, 0, 0
    assert report["accuracy"]["slice"] == pytest.approx(2 / 6)
    assert report["accuracy"]["majority"] == pytest.approx(1 / 3)
    assert report["accuracy"]["mean_prob"] == pytest.approx(2 / 3)
    assert report["slice"]["confusion"] == [[1, 2, 0], [1, 0, 0], [0, 1, 1]]
    assert report["mean_prob"]["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    # balanced accuracy = mean recall over classes with support: (1/3 + 0 + 1/2) / 3
    assert report["slice"]["balanced_accuracy"] == pytest.approx((1 / 3 + 0 + 1 / 2) / 3)
    assert report["per_patient"]["p1"] == {"true": "A", "majority": "B", "mean_prob": "A", "n_slices": 3,
                                           "mean_probs": [0.5, 0.466667, 0.033333]}
    lo, hi = report["patient_ci95"]
    assert 0.0 <= lo <= 2 / 3 <= hi <= 1.0


def test_patient_with_two_classes_is_refused():
    with pytest.raises(UserError, match="several classes"):
        patient_votes(np.full((2, 2), 0.5), np.array([0, 1]), np.array(["p", "p"]))


def test_balanced_class_weights_closed_form():
    y = np.array([0, 0, 0, 1, 2, 2])  # counts 3, 1, 2; class 3 absent
    w = class_weights(y, 4, "balanced").numpy()
    assert w == pytest.approx([6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2), 0.0])
    assert (w[y] * 1).sum() == pytest.approx(len(y))  # each present class carries n / k_present of the total weight
    assert class_weights(y, 4, "none").tolist() == [1, 1, 1, 1]


def test_config_rejects_bad_knobs():
    with pytest.raises(ConfigError, match="inputs"):
        ClassifierConfig(inputs="mask")
    with pytest.raises(ConfigError, match="class_weights"):
        ClassifierConfig(class_weights="inverse")
    with pytest.raises(ConfigError, match="distinct"):
        ClassifierConfig(classes=("NOR", "NOR"))
    assert ClassifierConfig().with_overrides(["classes=NOR,DCM", "pool=2"]).classes == ("NOR", "DCM")


# ---------------------------------------------------------------------------------------------
# labels from prepared sets
# ---------------------------------------------------------------------------------------------
def test_acdc_phantom_groups_are_read_per_slice(acdc_prepared):
    ps = load_prepared(acdc_prepared)
    cfg = ClassifierConfig()
    group_of = {}
    for split in ("train", "val", "test"):
        _, _, y, patients = labelled_split(ps, split, cfg.label_key, cfg.classes)
        for p, c in zip(patients, y, strict=True):
            assert group_of.setdefault(p, c) == c  # one group per patient
    # the phantom assigns groups round-robin by patient number: training 001.., testing 101..
    for p, c in group_of.items():
        number = int(p[-3:])
        assert cfg.classes[c] == cfg.classes[(number - (101 if number > 100 else 1)) % 5]


def test_unlabelled_or_unknown_labels_are_user_errors(discs, labelled):
    ps = load_prepared(discs)
    with pytest.raises(UserError, match="no per-slice 'group' array"):
        class_indices(ps, np.arange(3), "group", ("NOR", "DCM"))
    with pytest.raises(UserError, match=r"\['large', 'small'\] are not among the classes"):
        class_indices(load_prepared(labelled), np.arange(len(load_prepared(labelled))), "group", ("NOR", "DCM"))


# ---------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------
def test_classify_learns_a_visible_class_and_reports_every_view(labelled, tmp_path):
    cfg = ClassifierConfig(**FAST)
    result = classify([labelled], labelled, seeds=2, cfg=cfg, out_dir=tmp_path / "cls", progress=False)
    assert result["training_set"] == "real"
    assert result["n_test_patients"] == 4 and result["n_test_slices"] == 16
    for key in ("slice", "majority", "mean_prob"):
        acc = result["accuracy"][key]
        assert acc["mean"] >= 0.9, (key, acc)
        assert len(acc["values"]) == 2 and acc["mean"] == pytest.approx(np.mean(acc["values"]))
    conf = np.asarray(result["confusion"]["slice"])
    assert conf.sum() == 2 * 16 and conf.sum(axis=1).tolist() == [16, 16]  # 2 seeds x 8 slices per class
    assert np.asarray(result["confusion"]["mean_prob"]).sum() == 2 * 4
    on_disk = json.loads((tmp_path / "cls" / "classify.json").read_text())
    assert on_disk["accuracy"]["slice"]["values"] == result["accuracy"]["slice"]["values"]
    # the saved best-epoch model reproduces seed 0's test accuracy
    model = load_classifier(tmp_path / "cls" / "seed-0")
    x, m, y, _ = labelled_split(load_prepared(labelled), "test", "group", cfg.classes)
    probs = predict_proba(model, x, m, inputs="image", num_labels=2)
    assert float((probs.argmax(1) == y).mean()) == pytest.approx(result["seeds"][0]["test"]["accuracy"]["slice"])
    assert model.meta["classes"] == ["small", "large"] and model.meta["inputs"] == "image"


def test_mask_input_sees_a_class_the_image_hides(tmp_path):
    """The class is drawn only in the mask: image-only stays near chance, image+mask learns it."""
    data = make_labelled(tmp_path / "mask-only", visible_in="mask", patients=(8, 2, 6))
    accs = {}
    for inputs in ("image", "image+mask"):
        cfg = ClassifierConfig(**{**FAST, "inputs": inputs, "max_epochs": 15})
        accs[inputs] = classify([data], data, seeds=1, cfg=cfg, progress=False)["accuracy"]["slice"]["mean"]
    assert accs["image+mask"] >= 0.9, accs
    assert accs["image"] <= 0.75, accs


def test_cli_mixes_real_and_generated(labelled, synthetic, tmp_path, capsys):
    out = tmp_path / "mixed"
    code = main(["classify", "--train", f"{labelled},{synthetic}", "--test", str(labelled), "--seeds", "1",
                 "--out", str(out), "--set", "classes=small,large", "--set", "depth=2", "--set", "width=8",
                 "--epochs", "3", "--device", "cpu", "--json", str(tmp_path / "r.json")])
    assert code == 0
    text = capsys.readouterr().out
    assert "training set: real+generated" in text and "confusion" in text
    result = json.loads((out / "classify.json").read_text())
    assert result["training_set"] == "real+generated"
    assert result["seeds"][0]["n_train_per_class"] == {"small": 4 * 4 + 6 * 4, "large": 4 * 4 + 6 * 4}
    assert json.loads((tmp_path / "r.json").read_text())["cas"] == result["cas"]


def test_protocol_refusals(labelled, synthetic, tmp_path):
    cfg = ClassifierConfig(**{**FAST, "max_epochs": 1})
    with pytest.raises(UserError, match="generated set"):
        classify([labelled], synthetic, seeds=1, cfg=cfg)
    with pytest.raises(UserError, match="seeds must be >= 1"):
        classify([labelled], labelled, seeds=0, cfg=cfg)
    with pytest.raises(UserError, match="no training set"):
        classify([], labelled, seeds=1, cfg=cfg)
    # a real set whose train patients are the test set's test patients (and not its val patients: the
    # protocol's own check must catch it, not the trainer's val check)
    leaky = make_labelled(tmp_path / "leaky", patients=(12, 2, 0))
    meta_path = leaky / "dataset.json"
    meta = json.loads(meta_path.read_text())
    train = meta["splits"]["train"]
    meta["splits"] = {"train": train[2:], "val": train[:2] + meta["splits"]["val"], "test": []}
    meta_path.write_text(json.dumps(meta))
    test_like = make_labelled(tmp_path / "test-like", patients=(0, 2, 12))
    with pytest.raises(UserError, match="scored on patients it trained on"):
        classify([leaky], test_like, seeds=1, cfg=cfg)
    with pytest.raises(ConfigError, match="divisible by 32"):
        classify([labelled], labelled, seeds=1, cfg=ClassifierConfig(**{**FAST, "depth": 4, "pool": 2}))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(UserError, match="not empty"):
        classify([labelled], labelled, seeds=1, cfg=cfg, out_dir=tmp_path / "busy")


def test_incompatible_training_set_is_refused(labelled, discs):
    with pytest.raises(IncompatibleSetsError):
        classify([discs], labelled, seeds=1, cfg=ClassifierConfig(**FAST))
