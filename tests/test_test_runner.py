"""The unit suite's xdist mode does what the Makefile says: every test of a file runs on one worker.

Modules build expensive fixtures once per module (the trained U-Net, the notebook reruns' data and runs) and the
notebook rerun files order their tests so later reruns reuse earlier runs; a scheduler that split a file across
workers would silently build them twice and break that order. ``--dist loadgroup`` with ``xdist_group`` marks did
exactly that under pytest 9 + xdist 3.8, without any error.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def makefile_xdist() -> list[str]:
    m = re.search(r"^XDIST\s*\?=\s*(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile: no 'XDIST ?= ...' line"
    return shlex.split(m.group(1))


def test_every_test_of_a_file_runs_on_one_worker(tmp_path):
    args = makefile_xdist()
    assert "-n" in args and int(args[args.index("-n") + 1]) >= 2  # otherwise nothing is checked
    body = ("import os, time\nimport pytest\n\n\n@pytest.mark.parametrize('i', range(6))\ndef test_x(i):\n"
            "    time.sleep(0.2)\n    with open(os.environ['OUT'], 'a') as f:\n"
            "        f.write(__name__ + ' ' + os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n")
    for name in ("test_one.py", "test_two.py"):
        (tmp_path / name).write_text(body)
    out = tmp_path / "workers.txt"
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env={**os.environ, "OUT": str(out)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen: dict[str, set[str]] = {}
    for line in out.read_text().splitlines():
        module, worker = line.split()
        seen.setdefault(module, set()).add(worker)
    assert sorted(seen) == ["test_one", "test_two"] and all(len(w) == 1 for w in seen.values()), seen
