"""The visual Turing-test kit (medgan.turing): deck, page, scoring, CLI, and the page in a real browser."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medgan.cli import main
from medgan.data.prepared import write_prepared
from medgan.errors import AnswerSheetError, ConfigError, IncompatibleSetsError, OutputExistsError
from medgan.turing import build_deck, ensure_deck, fleiss_kappa, read_page, score, simulate_rater
from medgan.turing.deck import encode_png
from medgan.turing.page import page_items
from medgan.turing.simulate import reference_pixels

CHROMIUM = Path("/usr/bin/chromium")
LABELS = {"0": "background", "1": "organ"}
N_DECK = 40


# ------------------------------------------------------------------------------------------ fixtures
def _meta(source: str, splits: dict, **extra) -> dict:
    return {"name": "toy", "modality": "toy-MRI", "labels": LABELS, "source": source, "splits": splits,
            "normalisation": {"method": "none"}, "inputs_sha256": "0" * 64, **extra}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    """A real (phantom-like) and a generated prepared set of 32² grey images: 8 patients × 10 slices, 60 generated."""
    root = tmp_path_factory.mktemp("turing-sets")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    n_real = 80
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2 < 81).astype(np.float32)
    real_images = (disc * 1.2 - 0.6 + rng.normal(0, 0.15, (n_real, 32, 32))).clip(-1, 1)[:, None]
    real_masks = np.repeat(disc.astype(np.uint8)[None], n_real, axis=0)
    patients = [f"patient{p:03d}" for p in range(8) for _ in range(10)]
    splits = {"train": [f"patient{p:03d}" for p in range(6)], "val": ["patient006"], "test": ["patient007"]}
    real = write_prepared(root / "real-set", images=real_images.astype(np.float16), masks=real_masks, patients=patients,
                          slices=[s for _ in range(8) for s in range(10)], meta=_meta("phantom", splits))
    n_gen = 60
    gen_images = np.tanh(rng.normal(0, 0.5, (n_gen, 1, 32, 32))) * 0.9
    gen_masks = (rng.random((n_gen, 32, 32)) < 0.3).astype(np.uint8)
    gen_ids = [f"gen-{i:06d}" for i in range(n_gen)]
    gen = write_prepared(root / "gen-set", images=gen_images.astype(np.float16), masks=gen_masks, patients=gen_ids,
                         meta=_meta("generated", {"train": gen_ids, "val": [], "test": []}, run_id="toy-hinge-run",
                                    gan="hinge", checkpoint_kimg=8.0,
                                    real_dataset={"name": "toy", "root": str(real), "source": "phantom"}))
    return real, gen


@pytest.fixture(scope="module")
def deck(sets, tmp_path_factory):
    real, gen = sets
    return build_deck(real, gen, tmp_path_factory.mktemp("deck"), n=N_DECK, seed=0)


def _key(deck) -> dict:
    return json.loads(deck.key.read_text())


def _write_csv(path: Path, rows, header=("rater", "item_id", "answer", "confidence", "timestamp")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _key_dict(truths: list[str]) -> dict:
    items = [{"item_id": f"i{k}", "position": k, "truth": t} for k, t in enumerate(truths)]
    return {"format": "medgan-turing-key", "version": 1, "deck": "d0", "n": len(truths), "items": items}


# ------------------------------------------------------------------------------------------ scoring (closed forms)
def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p at 0.5, by the definition: P(X = i) <= P(X = k), summed."""
    pk = math.comb(n, k)
    return min(1.0, sum(math.comb(n, i) for i in range(n + 1) if math.comb(n, i) <= pk) / 2**n)


def test_scores_by_hand(tmp_path):
    # 10 items: i0..i4 real, i5..i9 synthetic
    key = _key_dict(["real"] * 5 + ["synthetic"] * 5)
    a = [("ann", f"i{k}", ans, 3, "t") for k, ans in enumerate(
        ["real", "real", "real", "synthetic", "real", "synthetic", "synthetic", "synthetic", "real", "real"])]
    b = [("bob", f"i{k}", ans, 5, "t") for k, ans in enumerate(["synthetic"] * 10)]
    r = score(key, [_write_csv(tmp_path / "a.csv", a), _write_csv(tmp_path / "b.csv", b)])
    ann, bob, pooled = r["raters"]["ann"], r["raters"]["bob"], r["overall"]
    # ann: real called real 4/5 (specificity), synthetic called synthetic 3/5 (sensitivity), 7/10 right
    assert (ann["tp"], ann["fn"], ann["tn"], ann["fp"]) == (3, 2, 4, 1)
    assert ann["accuracy"] == pytest.approx(0.7) and ann["sensitivity"] == pytest.approx(0.6)
    assert ann["specificity"] == pytest.approx(0.8)
    # P(X >= 7) for X ~ Bin(10, 1/2) = (120 + 45 + 10 + 1) / 1024; two-sided doubles it (symmetric)
    assert ann["p_better_than_chance"] == pytest.approx(176 / 1024)
    assert ann["p_two_sided"] == pytest.approx(_binom_two_sided(7, 10)) == pytest.approx(352 / 1024)
    # bob says "synthetic" to everything: sensitivity 1, specificity 0, accuracy 1/2, p = 1
    assert (bob["sensitivity"], bob["specificity"], bob["accuracy"]) == (1.0, 0.0, 0.5)
    assert bob["p_two_sided"] == pytest.approx(1.0) and bob["mean_confidence"] == 5.0
    assert pooled["n"] == 20 and pooled["correct"] == 12 and pooled["mean_accuracy"] == pytest.approx(0.6)
    assert pooled["p_two_sided"] == pytest.approx(_binom_two_sided(12, 20))
    # Fleiss' kappa for 2 raters, 2 categories, by the formula: items where they agree: i3, i5, i6, i7 (4 of 10)
    # P_bar = 4/10; p_synthetic = (4 + 10) / 20 = 0.7 -> P_e = 0.49 + 0.09 = 0.58; kappa = (0.4 - 0.58) / 0.42
    assert r["fleiss_kappa"]["kappa"] == pytest.approx((0.4 - 0.58) / 0.42)
    assert r["fleiss_kappa"]["n_items"] == 10 and r["fleiss_kappa"]["n_raters"] == 2


def test_missing_answers_are_counted_and_kappa_uses_common_items(tmp_path):
    key = _key_dict(["real", "synthetic", "real", "synthetic"])
    a = _write_csv(tmp_path / "a.csv", [("a", "i0", "real", 1, "t"), ("a", "i1", "synthetic", 1, "t")])
    b = _write_csv(tmp_path / "b.csv", [("b", f"i{k}", "real", 1, "t") for k in range(4)])
    r = score(key, [a, b])
    assert r["raters"]["a"]["missing"] == 2 and r["raters"]["a"]["accuracy"] == 1.0
    assert r["fleiss_kappa"]["n_items"] == 2
    # one rater: no agreement to measure
    assert math.isnan(score(key, [b])["fleiss_kappa"]["kappa"])


# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories -> P_bar 0.378, P_e 0.213, kappa 0.210
WIKIPEDIA_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                   [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_worked_example():
    # by hand: sum over items of sum_j n_ij^2 = 828, so P_bar = (828 - 10 * 14) / (10 * 14 * 13) = 688/1820 = 0.378;
    # p_j = (20, 28, 39, 21, 32)/140 -> P_e = 4170/19600 = 0.213
    p_bar, p_e = 688 / 1820, sum(c * c for c in (20, 28, 39, 21, 32)) / 140**2
    assert fleiss_kappa(np.array(WIKIPEDIA_TABLE)) == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)
    assert round(fleiss_kappa(np.array(WIKIPEDIA_TABLE)), 3) == 0.210
    assert fleiss_kappa(np.array([[2, 0], [0, 2], [2, 0]])) == pytest.approx(1.0)  # perfect agreement
    assert math.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only: undefined
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))


def test_fleiss_kappa_matches_statsmodels():
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater", reason="statsmodels is not installed")
    rng = np.random.default_rng(1)
    for table in (np.array(WIKIPEDIA_TABLE), rng.multinomial(6, [0.3, 0.7], size=25)):
        assert fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table, method="fleiss"))


BAD_SHEETS = {
    "unknown item": ([("a", "zzz", "real", 3, "t")], None, r"b\.csv:2: unknown item id 'zzz'"),
    "missing column": ([("a", "i0", "real", "t")], ("rater", "item_id", "answer", "timestamp"), r"missing column\(s\) confidence"),
    "duplicate": ([("a", "i0", "real", 3, "t"), ("a", "i0", "synthetic", 3, "t")], None, r"b\.csv:3: rater 'a' answered item 'i0' twice"),
    "bad answer": ([("a", "i0", "fake", 3, "t")], None, r"answer 'fake' is not one of"),
    "bad confidence": ([("a", "i0", "real", 9, "t")], None, r"confidence '9' is not an integer from 1 to 5"),
    "other deck": ([("a", "i0", "real", 3, "t", "d9")], ("rater", "item_id", "answer", "confidence", "timestamp", "deck"), r"deck 'd9'"),
    "empty": ([], None, r"holds no answers"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHEETS))
def test_bad_csv_is_one_clear_error(tmp_path, case, capsys):
    rows, header, message = BAD_SHEETS[case]
    key = _key_dict(["real", "synthetic"])
    sheet = _write_csv(tmp_path / "b.csv", rows, *( [header] if header else []))
    with pytest.raises(AnswerSheetError, match=message):
        score(key, [sheet])
    # the CLI prints it as one line and exits 2
    (tmp_path / "key.json").write_text(json.dumps(key))
    assert main(["turing", "score", "--key", str(tmp_path / "key.json"), str(sheet)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(message, err), err


def test_duplicate_across_files_and_bad_key(tmp_path):
    key = _key_dict(["real", "synthetic"])
    a = _write_csv(tmp_path / "a.csv", [("a", "i0", "real", 3, "t")])
    b = _write_csv(tmp_path / "b.csv", [("a", "i0", "real", 3, "t")])
    with pytest.raises(AnswerSheetError, match=r"answered item 'i0' twice \(first at .*a\.csv:2\)"):
        score(key, [a, b])
    (tmp_path / "nokey.json").write_text('{"items": 3}')
    with pytest.raises(AnswerSheetError, match="not an answer key"):
        score(tmp_path / "nokey.json", [a])


# ------------------------------------------------------------------------------------------ the deck
def test_deck_is_half_and_half_and_seeded(sets, deck, tmp_path):
    key = _key(deck)
    truths = [it["truth"] for it in key["items"]]
    assert truths.count("real") == truths.count("synthetic") == N_DECK // 2
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True)  # shuffled, not in blocks
    deck_id, shown = read_page(deck.page)
    assert deck_id == key["deck"] == deck.deck_id
    assert [i for i, _ in shown] == [it["item_id"] for it in key["items"]]  # ids map to sources via the key only
    assert len({i for i, _ in shown}) == N_DECK
    # the ids carry no class: no character position is constant within a class, and sorting by id mixes them
    real_ids = [it["item_id"] for it in key["items"] if it["truth"] == "real"]
    synthetic_ids = [it["item_id"] for it in key["items"] if it["truth"] == "synthetic"]
    for pos in range(len(real_ids[0])):
        assert len({i[pos] for i in real_ids}) > 1 and len({i[pos] for i in synthetic_ids}) > 1, pos
    by_id = [it["truth"] for it in sorted(key["items"], key=lambda it: it["item_id"])]
    assert by_id != sorted(by_id) and by_id != sorted(by_id, reverse=True)
    # real images come from the split the GAN learnt from (train+val), each image at most once
    real_rows = [it for it in key["items"] if it["truth"] == "real"]
    assert all(it["patient"] != "patient007" for it in real_rows)
    assert len({it["index"] for it in real_rows}) == N_DECK // 2
    # same seed: the same bytes; another seed: another deck
    again = build_deck(*sets, tmp_path / "again", n=N_DECK, seed=0)
    assert again.page.read_bytes() == deck.page.read_bytes() and json.loads(again.key.read_text()) == key
    other = build_deck(*sets, tmp_path / "other", n=N_DECK, seed=1)
    assert other.deck_id != deck.deck_id
    # provenance in the key: the real set's source and what the GAN trained on
    assert key["real"]["source"] == "phantom" and key["generated"]["trained_on"]["source"] == "phantom"
    assert key["generated"]["gan"] == "hinge" and key["generated"]["checkpoint_kimg"] == 8.0


def test_deck_bad_input(sets, deck, tmp_path):
    real, gen = sets
    with pytest.raises(ConfigError, match="even"):
        build_deck(real, gen, tmp_path / "x", n=11)
    with pytest.raises(ConfigError, match="needs 35 real test images but 10 are available"):
        build_deck(real, gen, tmp_path / "x", n=70, split="test")
    with pytest.raises(ConfigError, match="needs 65 generated images but 60 are available"):
        build_deck(real, gen, tmp_path / "x", n=130)
    with pytest.raises(ConfigError, match="--split"):
        build_deck(real, gen, tmp_path / "x", n=10, split="training")
    with pytest.raises(IncompatibleSetsError, match="not a generated one"):
        build_deck(gen, real, tmp_path / "x", n=10)
    with pytest.raises(OutputExistsError):
        build_deck(real, gen, deck.page.parent, n=10)
    with pytest.raises(ConfigError, match="--window"):
        build_deck(real, gen, tmp_path / "x", n=10, window="0.5,0.2")


def test_ensure_deck_reuses_or_keeps_the_old_deck(sets, tmp_path):
    out = tmp_path / "turing"
    first, what = ensure_deck(*sets, out, n=10, seed=0)
    assert what == "built"
    stamp = first.page.stat().st_mtime_ns
    again, what = ensure_deck(*sets, out, n=10, seed=0)
    assert what == "reused" and again == first and first.page.stat().st_mtime_ns == stamp
    other, what = ensure_deck(*sets, out, n=10, seed=1)  # another deck: the old one (and its key) is kept
    assert what == f"rebuilt (old deck kept as turing.stale-{first.deck_id})" and other.deck_id != first.deck_id
    assert json.loads((tmp_path / f"turing.stale-{first.deck_id}" / "answer-key.json").read_text())["deck"] == first.deck_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turing", f"turing.stale-{first.deck_id}"]


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("masks", [False, True])
def test_both_classes_are_encoded_identically(sets, tmp_path, masks):
    d = build_deck(*sets, tmp_path / "d", n=N_DECK, seed=3, masks=masks)
    items = page_items(d.page.read_text())["items"]
    headers = set()
    for item in items:
        assert set(item) == ({"id", "image", "overlay"} if masks else {"id", "image"})
        for field in set(item) - {"id"}:
            assert item[field].startswith("data:image/png;base64,")
            png = base64.b64decode(item[field].split(",", 1)[1])
            chunks = _png_chunks(png)
            assert [c for c, _ in chunks if c != b"IDAT"] == [b"IHDR", b"IEND"], "ancillary PNG chunk"
            headers.add((field, chunks[0][1]))
            # the bytes are a function of the pixels alone: re-encoding what is shown gives the same file
            assert encode_png(np.asarray(Image.open(io.BytesIO(png)))) == png
    # one IHDR (size, bit depth, colour type) per field for real and generated alike
    assert len(headers) == (2 if masks else 1)
    assert all(h[8:10] == (b"\x08\x00" if f == "image" else b"\x08\x02") for f, h in headers)


def test_page_holds_no_trace_of_the_key(sets, deck, tmp_path):
    real, gen = sets
    key = _key(deck)
    html = deck.page.read_text()
    low = html.lower()
    markers = ["generated", "gen-", "fake", "truth", "answer-key", "phantom", "hinge", "toy-hinge-run", "patient",
               "real-set", "gen-set", "source", "kimg", str(real), str(gen), key["real"]["content_sha256"][:12],
               key["generated"]["content_sha256"][:12]]
    for marker in markers:
        assert marker.lower() not in low, f"the page contains {marker!r}"
    # "real" / "synthetic" appear only in the fixed template: the same count in a deck of other images
    other = build_deck(real, gen, tmp_path / "other", n=10, seed=7).page.read_text().lower()
    for word in ("real", "synthetic"):
        assert low.count(word) == other.count(word)
    # everything but the item block and the header counts is the same template for every deck
    def skeleton(text: str) -> str:
        text = re.sub(r'(id="deck-data">).*?(</script>)', r"\1\2", text, flags=re.S)
        return re.sub(r"\d+", "#", text)
    assert skeleton(html) == skeleton(build_deck(*sets, tmp_path / "s5", n=N_DECK, seed=5).page.read_text())
    # no network: a CSP that forbids every load but data: images, and no URL of any scheme but data:
    assert "default-src 'none'" in html
    assert not re.search(r"(?:https?|ftp|ws)://", html) and "src=\"http" not in html


def test_cli_deck_then_score(sets, tmp_path, capsys):
    real, gen = sets
    out = tmp_path / "cli-deck"
    assert main(["turing", "deck", "--real", str(real), "--generated", str(gen), "--out", str(out), "--n", "20",
                 "--seed", "2"]) == 0
    assert main(["turing", "deck", "--real", str(real), "--generated", str(gen), "--out", str(out)]) == 2
    capsys.readouterr()
    ref = reference_pixels(real, "test", out / "answer-key.json")
    sheets = [simulate_rater(out / "deck.html", tmp_path / "r1.csv", rater="sim-random", rule="random", seed=1),
              simulate_rater(out / "deck.html", tmp_path / "r2.csv", rater="sim-typical", rule="typicality",
                             seed=2, reference=ref)]
    assert main(["turing", "score", "--key", str(out / "answer-key.json"), *map(str, sheets),
                 "--out", str(tmp_path / "results.json")]) == 0
    printed = capsys.readouterr().out
    assert "sim-random" in printed and "Fleiss' kappa" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    direct = score(out / "answer-key.json", sheets)
    assert results["raters"]["sim-typical"]["correct"] == direct["raters"]["sim-typical"]["correct"]
    # the toy generated images are noise, the real ones discs: a rater who has seen real scans finds them all
    assert direct["raters"]["sim-typical"]["accuracy"] == 1.0
    assert direct["raters"]["sim-random"]["mean_confidence"] == 1.0


# ------------------------------------------------------------------------------------------ the page in Chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                   "(apt-get install chromium; .ci/run installs it)")
def test_page_in_headless_chromium(deck, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed in the venv")
    key = _key(deck)
    truth = {it["item_id"]: it["truth"] for it in key["items"]}
    order = [it["item_id"] for it in key["items"]]
    reload_at, revisit = 23, 10
    expected: dict[str, tuple[str, int]] = {}
    problems, requests = [], []

    def pick(i: int) -> tuple[str, int]:
        right = truth[order[i]]
        wrong = "real" if right == "synthetic" else "synthetic"
        return (right if i % 3 else wrong), 1 + i % 5  # two of three right

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True)

            def gate(route):
                url = route.request.url
                if url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    problems.append(f"network request {url}")
                    route.abort()

            context.route("**/*", gate)
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(deck.page.as_uri())
            assert page.evaluate("document.activeElement.id") == "rater"  # keyboard users start in the name field
            assert page.is_disabled("#answer-real")  # no answer without a name
            page.keyboard.type("Dr Keyboard")
            page.keyboard.press("Enter")
            for i in range(N_DECK):
                if i == reload_at:
                    page.reload()
                    assert page.input_value("#rater") == "Dr Keyboard"
                    assert page.text_content("#progress-text").startswith(f"Image {i + 1} of {N_DECK} \u2014 {i} answered")
                answer, confidence = pick(i)
                page.keyboard.press(str(confidence))
                page.keyboard.press("R" if answer == "real" else "S")
                expected[order[i]] = (answer, confidence)
                if i == revisit:  # go back one image and change the answer
                    page.keyboard.press("ArrowLeft")
                    assert page.text_content("#progress-text").startswith(f"Image {i + 1} of")
                    answer = "real" if answer == "synthetic" else "synthetic"
                    page.keyboard.press("5")
                    page.keyboard.press("R" if answer == "real" else "S")
                    expected[order[i]] = (answer, 5)
            assert f"All {N_DECK} images answered" in page.text_content("#status")
            assert page.evaluate("document.getElementById('progress').value") == N_DECK
            with page.expect_download() as download_info:
                page.click("#export")
            exported = tmp_path / "exported.csv"
            download_info.value.save_as(exported)
            assert download_info.value.suggested_filename == f"turing-{deck.deck_id}-Dr_Keyboard.csv"
        finally:
            browser.close()

    assert not problems, problems
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    with open(exported, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["item_id"] for r in rows] == order and {r["rater"] for r in rows} == {"Dr Keyboard"}
    assert {r["item_id"]: (r["answer"], int(r["confidence"])) for r in rows} == expected
    assert all(time.strptime(r["timestamp"][:19], "%Y-%m-%dT%H:%M:%S") for r in rows)
    result = score(deck.key, [exported])["raters"]["Dr Keyboard"]
    correct = sum(expected[i][0] == truth[i] for i in order)
    synthetic = [i for i in order if truth[i] == "synthetic"]
    assert result["n"] == N_DECK and result["correct"] == correct
    assert result["accuracy"] == pytest.approx(correct / N_DECK)
    assert result["sensitivity"] == pytest.approx(sum(expected[i][0] == "synthetic" for i in synthetic) / len(synthetic))
    assert result["p_two_sided"] == pytest.approx(_binom_two_sided(correct, N_DECK))
