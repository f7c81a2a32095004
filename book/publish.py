"""Make an executed notebook fit to publish: ``python book/publish.py book/executed/NAME.ipynb``.

The Makefile runs it on every notebook papermill executed, in place, before the book is built:

- the cell papermill injected (tag ``injected-parameters``: this machine's absolute data/runs paths) is tagged
  ``remove-cell``, so the book leaves it out. It stays in the notebook: nbval re-executes ``book/executed/`` and
  must get the same paths, to reuse the same runs;
- stderr stream outputs (library warnings, progress bars: they print the kernel's temporary file paths) and the
  build-log lines of ``medgan.experiments`` (``runs/x: not reused (...); kept as ...``) are moved from the page to
  ``NAME.log`` next to the notebook. The cells nbval compares (tag ``nbval-check-output``) never print to stderr:
  each notebook silences warnings in its setup cell, so dropping stderr cannot make nbval see a difference.

Running it twice changes nothing the second time (the log is rewritten from what is still in the notebook, so a
second pass keeps the first pass's log rather than emptying it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

INJECTED = "injected-parameters"
HIDDEN = "remove-cell"
BUILD_LOG_LINE = re.compile(r"^\S+: not reused \(.*\); kept as \S+$")  # medgan.experiments._set_aside


def _text(output: dict) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else text


def publish(nb: dict) -> list[str]:
    """Edit the notebook dict in place (see the module doc); returns the log lines taken off its pages."""
    log: list[str] = []
    for i, cell in enumerate(nb.get("cells", [])):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED in tags and HIDDEN not in tags:
            tags.append(HIDDEN)
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                kept.append(output)
                continue
            lines = _text(output).splitlines(keepends=True)
            moved = lines if output.get("name") == "stderr" else [ln for ln in lines if BUILD_LOG_LINE.match(ln.strip())]
            log += [f"[cell {i} {output.get('name')}] {ln.rstrip()}" for ln in moved]
            rest = [ln for ln in lines if ln not in moved] if moved is not lines else []
            if rest:
                kept.append({**output, "text": "".join(rest)})
        cell["outputs"] = kept
    return log


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python book/publish.py EXECUTED.ipynb [...]", file=sys.stderr)
        return 2
    for name in argv:
        path = Path(name)
        nb = json.loads(path.read_text())
        log = publish(nb)
        if log:  # a second pass finds nothing to move: keep the first pass's log
            path.with_suffix(".log").write_text("\n".join(log) + "\n")
        tmp = path.with_name(path.name + ".publish-tmp")
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(path)  # atomic: a killed run never leaves half a notebook for the book
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
