"""The rater's page: one self-contained HTML file (inline CSS, JS and images; no network, no server).

What the page holds about each image is its random ``id`` and its PNG as a ``data:`` URI (plus the mask
overlay when the deck shows masks) — never its source: the answer key lives in a separate file. The
template below is the same for every deck; only the JSON block of items and the header text change, so
the tests can check that nothing else depends on what the images are.

Answers live in ``localStorage`` under ``medgan-turing:<deck id>`` (a reload resumes where the rater
was); "Export CSV" downloads ``rater,item_id,answer,confidence,timestamp,deck`` rows through a ``data:``
link (a ``blob:`` would work too, but a ``data:`` link keeps every URL the page touches local by
construction). A Content-Security-Policy meta tag forbids the page any network load at all.
"""

from __future__ import annotations

import html
import json
from string import Template

CSV_COLUMNS = ("rater", "item_id", "answer", "confidence", "timestamp", "deck")
STORAGE_PREFIX = "medgan-turing:"

_TEMPLATE = Template(r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Visual Turing test: $title</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { margin: 0 auto; max-width: 46rem; padding: 1rem; line-height: 1.4; }
  h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
  .row { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; margin: .6rem 0; }
  #viewer { display: flex; justify-content: center; background: #000; border-radius: .4rem; padding: .5rem; }
  #image { width: min(${display_px}px, 88vw, 62vh); height: auto; aspect-ratio: 1; display: block; }
  button { font: inherit; padding: .45rem .9rem; border-radius: .35rem; border: 1px solid #888; cursor: pointer; }
  button.answer { font-size: 1.15rem; min-width: 9rem; }
  button[aria-pressed="true"] { background: #1f6feb; color: #fff; border-color: #1f6feb; }
  button:focus-visible, input:focus-visible { outline: 3px solid #f0a000; outline-offset: 2px; }
  button:disabled { opacity: .45; cursor: not-allowed; }
  progress { width: 100%; height: .8rem; }
  #status { min-height: 1.4em; font-weight: 600; }
  kbd { border: 1px solid #888; border-radius: .2rem; padding: 0 .3rem; font-size: .9em; }
</style>
</head>
<body>
<main>
<h1>Visual Turing test</h1>
<p id="about">$about Each image is either <strong>real</strong> or <strong>synthetic</strong> (made by a
generative model); half of them are real. Decide from the image alone, and say how sure you are.</p>
<div class="row">
  <label for="rater">Your name</label>
  <input id="rater" type="text" autocomplete="off" spellcheck="false" required>
</div>
<section aria-label="Current image">
  <div id="viewer"><img id="image" alt=""></div>
  <p id="progress-text" aria-live="polite"></p>
  <progress id="progress" max="$n" value="0" aria-label="Images answered"></progress>
  <div class="row">
    <button id="answer-real" class="answer" type="button" aria-pressed="false" aria-keyshortcuts="R">Real <kbd>R</kbd></button>
    <button id="answer-synthetic" class="answer" type="button" aria-pressed="false" aria-keyshortcuts="S">Synthetic <kbd>S</kbd></button>
  </div>
  <div class="row">
    <label for="confidence">Confidence (1 = guess, 5 = certain)</label>
    <input id="confidence" type="range" min="1" max="5" step="1" value="3" aria-keyshortcuts="1 2 3 4 5">
    <output id="confidence-value" for="confidence">3</output>
  </div>
  <div class="row">
    <button id="previous" type="button" aria-keyshortcuts="ArrowLeft">&larr; Previous</button>
    <button id="next" type="button" aria-keyshortcuts="ArrowRight">Next &rarr;</button>
    <button id="toggle-mask" type="button" aria-pressed="false" aria-keyshortcuts="M" hidden>Show mask <kbd>M</kbd></button>
  </div>
</section>
<p id="status" role="status"></p>
<div class="row">
  <button id="export" type="button" aria-keyshortcuts="E">Export CSV</button>
  <button id="restart" type="button">Start over (clears this browser's answers)</button>
</div>
<details>
  <summary>Keyboard shortcuts</summary>
  <p><kbd>R</kbd> real, <kbd>S</kbd> synthetic (records the answer and moves on), <kbd>1</kbd>&ndash;<kbd>5</kbd>
  confidence, <kbd>&larr;</kbd>/<kbd>&rarr;</kbd> previous/next image, <kbd>M</kbd> mask on/off (when the deck
  has masks), <kbd>E</kbd> export. Your answers stay in this browser: closing or reloading the page resumes
  where you were. Send the exported CSV file to the study's organiser.</p>
</details>
</main>
<script type="application/json" id="deck-data">$deck_json</script>
<script>
(function () {
  "use strict";
  var deck = JSON.parse(document.getElementById("deck-data").textContent);
  var items = deck.items, N = items.length, storeKey = "$storage_prefix" + deck.deck;
  var el = function (id) { return document.getElementById(id); };
  var image = el("image"), rater = el("rater"), conf = el("confidence"), confOut = el("confidence-value");
  var btnReal = el("answer-real"), btnSynth = el("answer-synthetic"), prev = el("previous"), next = el("next");
  var maskBtn = el("toggle-mask"), statusLine = el("status"), showMask = false;
  var hasMasks = items.length > 0 && typeof items[0].overlay === "string";
  var state = load();

  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(storeKey) || "null");
      if (s && typeof s === "object" && s.answers && typeof s.position === "number") { return s; }
    } catch (e) { /* unreadable storage: start afresh */ }
    return { rater: "", position: 0, answers: {} };
  }
  function save() {
    try { localStorage.setItem(storeKey, JSON.stringify(state)); }
    catch (e) { say("This browser does not keep answers (local storage unavailable): export before closing."); }
  }
  function say(text) { statusLine.textContent = text; }
  function answeredCount() { return items.filter(function (it) { return state.answers[it.id]; }).length; }
  function show() {
    var i = Math.min(Math.max(state.position, 0), N - 1), item = items[i], a = state.answers[item.id];
    state.position = i;
    image.src = showMask && hasMasks ? item.overlay : item.image;
    image.alt = "Image " + (i + 1) + " of " + N;
    conf.value = a ? a.confidence : 3;
    confOut.textContent = conf.value;
    btnReal.setAttribute("aria-pressed", String(!!a && a.answer === "real"));
    btnSynth.setAttribute("aria-pressed", String(!!a && a.answer === "synthetic"));
    var done = answeredCount(), named = rater.value.trim() !== "";
    el("progress-text").textContent = "Image " + (i + 1) + " of " + N + " \u2014 " + done + " answered" +
      (a ? " (this one: " + a.answer + ", confidence " + a.confidence + ")" : "");
    el("progress").value = done;
    prev.disabled = i === 0;
    next.disabled = i === N - 1;
    btnReal.disabled = btnSynth.disabled = !named;
    if (!named) { say("Enter your name to start."); }
    else if (done === N) { say("All " + N + " images answered. Press \u201cExport CSV\u201d and send the file."); }
    else if (statusLine.textContent === "Enter your name to start.") { say(""); }
  }
  function go(delta) { state.position = Math.min(Math.max(state.position + delta, 0), N - 1); save(); show(); }
  function answer(value) {
    if (rater.value.trim() === "") { say("Enter your name to start."); rater.focus(); return; }
    var item = items[state.position];
    state.answers[item.id] = { answer: value, confidence: Number(conf.value), timestamp: new Date().toISOString() };
    if (state.position < N - 1) { state.position += 1; }
    else {
      var open = items.findIndex(function (it) { return !state.answers[it.id]; });
      if (open >= 0) { state.position = open; }
    }
    save(); show();
  }
  function csvField(v) {
    var s = String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function exportCsv() {
    if (state.rater === "") { say("Enter your name first: the exported file carries it."); rater.focus(); return; }
    var rows = [$csv_columns];
    items.forEach(function (it) {
      var a = state.answers[it.id];
      if (a) { rows.push([state.rater, it.id, a.answer, a.confidence, a.timestamp, deck.deck]); }
    });
    var text = rows.map(function (r) { return r.map(csvField).join(","); }).join("\r\n") + "\r\n";
    var link = document.createElement("a");
    link.href = "data:text/csv;charset=utf-8," + encodeURIComponent(text);
    link.download = "turing-" + deck.deck + "-" + (state.rater.replace(/[^A-Za-z0-9_-]+/g, "_") || "rater") + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    say("Exported " + (rows.length - 1) + " answers.");
  }
  function toggleMask() {
    if (!hasMasks) { return; }
    showMask = !showMask;
    maskBtn.setAttribute("aria-pressed", String(showMask));
    show();
  }

  rater.value = state.rater;
  rater.addEventListener("input", function () { state.rater = rater.value.trim(); save(); show(); });
  rater.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); rater.blur(); } });
  conf.addEventListener("input", function () { confOut.textContent = conf.value; });
  btnReal.addEventListener("click", function () { answer("real"); });
  btnSynth.addEventListener("click", function () { answer("synthetic"); });
  prev.addEventListener("click", function () { go(-1); });
  next.addEventListener("click", function () { go(1); });
  maskBtn.hidden = !hasMasks;
  maskBtn.addEventListener("click", toggleMask);
  el("export").addEventListener("click", exportCsv);
  el("restart").addEventListener("click", function () {
    if (window.confirm("Delete every answer kept in this browser for this deck?")) {
      state = { rater: "", position: 0, answers: {} }; rater.value = ""; save(); show();
    }
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || (t && t.tagName === "INPUT" && t.type === "text")) { return; }
    var k = e.key, onSlider = t === conf;
    if (k === "r" || k === "R") { answer("real"); }
    else if (k === "s" || k === "S") { answer("synthetic"); }
    else if (k >= "1" && k <= "5" && k.length === 1) { conf.value = k; confOut.textContent = k; }
    else if (k === "ArrowLeft" && !onSlider) { go(-1); }
    else if (k === "ArrowRight" && !onSlider) { go(1); }
    else if (k === "m" || k === "M") { toggleMask(); }
    else if (k === "e" || k === "E") { exportCsv(); }
    else { return; }
    e.preventDefault();
  });
  show();
  if (rater.value.trim() === "") { rater.focus(); }
}());
</script>
</body>
</html>
""")


def render_page(items: list[dict], *, deck_id: str, title: str, about: str, display_px: int = 512) -> str:
    """The page's HTML. ``items``: ``[{"id": str, "image": data URI[, "overlay": data URI]}]`` in show order."""
    deck_json = json.dumps({"deck": deck_id, "items": items}, separators=(",", ":"))
    deck_json = deck_json.replace("</", "<\\/")  # JSON inside <script>: never close the element early
    return _TEMPLATE.substitute(
        title=html.escape(title), about=html.escape(about), n=len(items), display_px=int(display_px),
        deck_json=deck_json, storage_prefix=STORAGE_PREFIX, csv_columns=json.dumps(list(CSV_COLUMNS)),
    )


def page_items(page_html: str) -> dict:
    """The ``{"deck": id, "items": [...]}`` block a page holds (what a browser, or a simulated rater, sees)."""
    start_tag = '<script type="application/json" id="deck-data">'
    start = page_html.index(start_tag) + len(start_tag)
    end = page_html.index("</script>", start)
    return json.loads(page_html[start:end].replace("<\\/", "</"))
