"""Many workers, one study, on a real PostgreSQL server: N trials in all, none run twice, a SIGKILLed worker's
trial failed then re-run, and ``medgan sweep status``/``export`` reading the shared storage.

The server is started by a session fixture in a temp folder as an unprivileged user on a free port (as
``postgres`` when the tests run as root). The workers are real ``medgan sweep`` subprocesses; their metric is
the cheap ``meanabs`` below, installed through the test-only ``MEDGAN_SWEEP_TEST_HOOK`` (a subprocess cannot be
monkeypatched). ``MEDGAN_TEST_HOOK_SLEEP`` makes that hook sleep so a worker can be killed inside a trial.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model.g_filters=8", "model.d_filters=8", "grid=4", "loss.vgg_weight=0", "tick_kimg=0.032",
        "snapshot_kimg=1", "ema_kimg=0"]


def meanabs(ctx):
    """The workers' metric: mean |generated image| over 8 samples (no Inception). Marks the run folder while
    it runs, and sleeps ``MEDGAN_TEST_HOOK_SLEEP`` s, so the kill test can SIGKILL a worker inside a trial."""
    (Path(ctx.run_dir) / "in-hook").write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("MEDGAN_TEST_HOOK_SLEEP", "0")))
    barrier = os.environ.get("MEDGAN_TEST_HOOK_BARRIER")
    if barrier:  # wait (at most 120 s) until two worker processes are inside a trial at the same time
        (Path(barrier) / str(os.getpid())).touch()
        deadline = time.time() + 120
        while len(list(Path(barrier).iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
    image, _ = ctx.sample(8)
    return {"value": float(np.abs(image).mean()), "features": "none"}


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """``postgresql://medgan@127.0.0.1:<port>/postgres``: a throw-away server, stopped and deleted afterwards."""
    pytest.importorskip("psycopg", reason="psycopg[binary] is not installed (requirements.txt pins it)")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are absent: `apt-get install postgresql` "
                    "(.ci/run installs them)")
    folder = Path(tempfile.mkdtemp(prefix="medgan-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's `postgres` user
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the PostgreSQL server as")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True, timeout=120)

    run(bindir / "initdb", "-D", folder / "data", "-U", "medgan", "--auth=trust", "-E", "UTF8")
    run(bindir / "pg_ctl", "-D", folder / "data", "-l", folder / "log", "-w", "start", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        yield f"postgresql://medgan@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _worker(data, out, storage, study, trials, *, sleep=0.0, grace=4, barrier="", extra=()) -> subprocess.Popen:
    env = {**os.environ, "MEDGAN_SWEEP_TEST_HOOK": "kid=test_sweep_workers:meanabs", "OMP_NUM_THREADS": "1",
           "MEDGAN_TEST_HOOK_BARRIER": str(barrier),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "MEDGAN_TEST_HOOK_SLEEP": str(sleep)}
    cmd = [sys.executable, "-m", "medgan.cli", "sweep", "--data", str(data), "--gan", "dcgan", "--out", str(out),
           "--trials", str(trials), "--kimg", "0.032", "--batch", "8", "--metric", "kid", "--storage", storage,
           "--study", study, "--heartbeat", "1", "--grace", str(grace), *extra, "--set", *FAST]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: float = 300) -> str:
    text, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, text[-3000:]
    return text


def _study(storage, name):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow  # ~28 s: two worker processes, 5 + 1 trials
def test_two_workers_share_one_study_exactly(postgres_url, small_discs, tmp_path):
    from optuna.trial import TrialState

    from medgan.sweep import counted_trials

    n = 5
    barrier = tmp_path / "barrier"  # both workers hold a trial at once before either finishes one
    barrier.mkdir()
    workers = [_worker(small_discs, tmp_path / f"w{i}", postgres_url, "two-workers", n, barrier=barrier)
               for i in range(2)]
    texts = [_finish(p) for p in workers]
    trials = _study(postgres_url, "two-workers").get_trials()
    counted = counted_trials(trials)
    # exactly n trials in the whole study, all complete, each trained once, in one worker's folder
    assert len(counted) == n and all(t.state == TrialState.COMPLETE for t in counted)
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in counted]
    assert len(set(run_dirs)) == n
    trained = sorted(p for i in range(2) for p in (tmp_path / f"w{i}").glob("trial-*"))
    assert trained == sorted(run_dirs), "a surplus trial trained, or a trial trained twice"
    for d in run_dirs:
        assert len((d / "metric-kid.jsonl").read_text().splitlines()) == 1  # one training run, one metric line
    # both workers took part, at the same time (the barrier), and each wrote the whole table
    assert len({t.user_attrs["worker"] for t in counted}) == 2 and len(list(barrier.iterdir())) == 2
    for i, text in enumerate(texts):
        frame = pd.read_csv(tmp_path / f"w{i}" / "trials.csv")
        assert len(frame) == n and set(frame["status"]) == {"finished"}, text[-2000:]
    # a worker started later joins the same study and, the budget being full, runs nothing
    _finish(_worker(small_discs, tmp_path / "late", postgres_url, "two-workers", n))
    assert not list((tmp_path / "late").glob("trial-*"))
    # ... and one asked for more trials runs just the extra ones
    _finish(_worker(small_discs, tmp_path / "late", postgres_url, "two-workers", n + 1))
    assert len(list((tmp_path / "late").glob("trial-*"))) == 1
    assert len(counted_trials(_study(postgres_url, "two-workers").get_trials())) == n + 1


@pytest.mark.slow  # ~23 s: a 15 s grace period before the dead worker's trial is re-queued
def test_killed_worker_trial_is_failed_then_retried(postgres_url, small_discs, tmp_path, capsys):
    from optuna.trial import TrialState

    from medgan.cli import main
    from medgan.sweep import counted_trials

    # n = 2 and a 15 s grace: the survivor runs trial 1 well within the grace, then must wait for the dead
    # worker's trial to go stale and run its retry instead of leaving the study one trial short
    n = 2
    victim = _worker(small_discs, tmp_path / "victim", postgres_url, "killed", n, sleep=600, grace=15)
    marker = tmp_path / "victim" / "trial-0" / "in-hook"
    deadline = time.time() + 180
    while not marker.exists():
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[0][-3000:]
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = _worker(small_discs, tmp_path / "survivor", postgres_url, "killed", n, grace=15)
    _finish(survivor)

    trials = _study(postgres_url, "killed").get_trials()
    lost = trials[0]
    assert lost.state == TrialState.FAIL and lost.number == 0
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == lost.params  # the same knobs, re-run
    counted = counted_trials(trials)
    assert len(counted) == n and all(t.state == TrialState.COMPLETE for t in counted)
    assert not (tmp_path / "victim" / "trial-0" / "metric-kid.jsonl").exists()  # killed inside the hook
    frame = pd.read_csv(tmp_path / "survivor" / "trials.csv")
    assert list(frame["status"]).count("lost") == 1 and list(frame["status"]).count("finished") == n
    assert frame.set_index("trial").loc[0, "reason"].endswith(f"re-run as trial {retry[0].number}")

    # status and export read the shared storage
    assert main(["sweep", "status", "killed", "--storage", postgres_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counted"] == n and status["states"] == {"COMPLETE": n} and status["diverged_share"] == 0.0
    assert status["status_counts"] == {"finished": n, "lost": 1} and len(status["best"]) == n
    assert status["best"][0]["value"] == frame[frame["status"] == "finished"]["value"].min()
    out = tmp_path / "trials.parquet"
    assert main(["sweep", "export", "killed", "--storage", postgres_url, "--out", str(out)]) == 0
    written = Path(capsys.readouterr().out.split()[1])
    table = pd.read_parquet(written) if written.suffix == ".parquet" else pd.read_csv(written)
    pd.testing.assert_frame_equal(table.drop(columns="reason"), frame.drop(columns="reason"), check_dtype=False)
