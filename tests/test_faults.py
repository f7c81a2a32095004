"""Fault tolerance of a training run: kill anywhere (SIGKILL at 13 points, resume each time, end bit-identical),
one writer per run folder (a real second process is refused; a dead holder reads ``interrupted``), full disk
(ENOSPC injected at each kind of write: earlier files intact, no temp file left, one clear line).

The kills are driven by ``$MEDGAN_FAULT`` (``medgan.io``), not by timing. Each ``medgan train`` of the kill
chain is a process forked from a "zygote" that imported ``medgan.cli`` once (a fresh interpreter per kill would
spend most of the test importing torch); the child runs ``medgan.cli.main`` and dies by its own SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from medgan import experiments
from medgan.errors import CheckpointError, DiskFullError, RunLockedError
from medgan.io import FAULT_ENV, append_jsonl, atomic_torch_save, atomic_write_text, read_jsonl, reset_faults
from medgan.training import load_checkpoint, make_config, read_stats, run_status, run_training
from medgan.training.runs import RunLock, load_resume_checkpoint

# 8 steps of batch 8 (one tick each), a checkpoint every 2 steps, a metric at steps 4 and 8: every side output
SETS = ["deterministic=true", "aug.classical=true", "aug.diffaugment=color,translation", "tick_kimg=0.008",
        "snapshot_kimg=0.016", "metrics=test-mean", "metric_kimg=0.032"]
KIMG = 0.064


ZYGOTE = textwrap.dedent("""
    import json, os, sys, traceback
    import torch
    from medgan.cli import main
    torch.use_deterministic_algorithms(False)  # imports torch._inductor (seconds) once, not in every child
    from medgan.training import METRIC_HOOKS
    from tests_faults_hook import hook
    METRIC_HOOKS.register("test-mean")(hook)
    for line in sys.stdin:
        req = json.loads(line)
        if "wait" in req:
            _, status = os.waitpid(req["wait"], 0)
            print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.environ.pop("MEDGAN_FAULT", None)
                os.environ.update(req["env"])
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = main(req["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print(json.dumps(pid), flush=True)
""")

# a cheap metric that depends on G_ema (drawn through ctx.sample, where the `metric` point fires)
HOOK_MODULE = textwrap.dedent("""
    import numpy as np

    def hook(ctx):
        images, _ = ctx.sample(4)
        return {"value": float(np.abs(images).mean())}
""")


class Zygote:
    """``run(argv, env) -> (exit code, output)``: ``medgan.cli.main(argv)`` in a forked child (-9 = SIGKILLed);
    ``start`` -> pid and ``wait(pid)`` -> exit code for children that run side by side."""

    def __init__(self, tmp: Path):
        (tmp / "tests_faults_hook.py").write_text(HOOK_MODULE)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop(FAULT_ENV, None)
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.tmp = tmp

    def _ask(self, request: dict) -> int:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def log(self, pid: int) -> str:
        return (self.tmp / f"child-{pid}.log").read_text()

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        log = self.tmp / f"child-{len(list(self.tmp.glob('child-*')))}.log"
        pid = self._ask({"argv": argv, "env": env or {}, "log": str(log)})
        while not log.exists():
            time.sleep(0.01)
        log.rename(self.tmp / f"child-{pid}.log")  # the child keeps writing to the renamed file
        return pid

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        pid = self.start(argv, env)
        return self.wait(pid), self.log(pid)

    def close(self) -> None:
        self.proc.kill()  # an interpreter that loaded torch._inductor takes seconds to exit by itself
        self.proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def _fault_counts_from_zero():
    reset_faults()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def _argv(data: Path, out: Path, tiny: list[str], *, resume: bool) -> list[str]:
    return ["train", "--data", str(data), "--gan", "dcgan", "--out", str(out), "--kimg", str(KIMG), "--batch", "8",
            "--no-progress", "--set", *tiny, *SETS, *(["--resume"] if resume else [])]


@pytest.fixture
def assert_identical(checkpoint_tensors):
    """Every tensor (G, D, G_ema, both optimisers, RNG states, data order, latent generator) and counter equal."""

    def check(a: dict, b: dict) -> None:
        assert (a["step"], a["d_step"], a["nimg"], a["data"]["pos"], a["data"]["epoch"]) == \
               (b["step"], b["d_step"], b["nimg"], b["data"]["pos"], b["data"]["epoch"])
        assert a["best"] == b["best"]
        ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
        assert ta.keys() == tb.keys()
        unequal = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not unequal, unequal[:10]

    return check


def _curve(records: list[dict], keys=("tick", "kimg", "step", "D_total", "G_total", "grad_norm_G")) -> list[tuple]:
    return [tuple(r.get(k) for k in keys) for r in records]


def _assert_whole(run: Path) -> None:
    """What a kill may leave: whole files under final names (temp files aside), readable logs."""
    for p in run.glob("checkpoint-*.pt"):
        load_checkpoint(p)
    for name in ("config.json", "status.json"):
        if (run / name).exists():
            json.loads((run / name).read_text())
    for p in run.glob("samples-*.png"):
        Image.open(p).load()
    read_stats(run)


# (MEDGAN_FAULT, what it interrupts); each process resumes what the previous one left
KILLS = [
    ("write.partial@config.json:1", "config.json half written (fresh run)"),
    ("write.complete@status.json:1", "status.json written, not renamed"),
    ("step:3", "between training steps"),
    ("write.partial@checkpoint-last.pt:1", "checkpoint half written"),
    ("metric:1", "inside a metric evaluation"),
    ("append.partial@metric-*.jsonl:1", "half a metric line"),
    ("write.complete@checkpoint-best-*.pt:1", "best checkpoint complete, not renamed"),
    ("write.complete@samples-*.png:2", "sample grid complete, not renamed"),
    ("checkpoint.rotated:1", "checkpoint-prev.pt updated, checkpoint-last.pt not yet"),
    ("write.complete@checkpoint-last.pt:1", "checkpoint complete and fsynced, not renamed"),
    ("append.partial@stats.jsonl:2", "half a stats line"),
    ("write.partial@status.json:2", "status.json half written after a snapshot"),
    ("write.complete@status.json:4", "the final status write"),
]


def test_kill_anywhere_resumes_bit_identical(zygote, discs, tiny_overrides, tmp_path, assert_identical):
    t0 = time.perf_counter()
    straight, chain = tmp_path / "straight", tmp_path / "chain"
    code, out = zygote.run(_argv(discs, straight, tiny_overrides, resume=False))
    assert code == 0, out

    for i, (fault, what) in enumerate(KILLS):
        if fault.startswith("write.complete@status.json:4"):
            # damage the newest checkpoint first: the resume must name it and fall back to checkpoint-prev.pt
            last = chain / "checkpoint-last.pt"
            last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
        code, out = zygote.run(_argv(discs, chain, tiny_overrides, resume=i > 0), {FAULT_ENV: fault})
        assert code == -signal.SIGKILL, f"{fault} ({what}) did not fire: exit {code}\n{out}"
        if i == len(KILLS) - 1:
            assert "checkpoint-last.pt" in out and "resuming from checkpoint-prev.pt" in out, out
        _assert_whole(chain)
    # killed at its very end: status.json says running, nobody holds the lock
    assert run_status(chain)["status"] == "interrupted"
    assert experiments.run_status(chain)["status"] == "interrupted"
    code, out = zygote.run(_argv(discs, chain, tiny_overrides, resume=True))
    assert code == 0, out
    elapsed = time.perf_counter() - t0

    assert run_status(chain)["status"] == "finished"
    a, b = load_checkpoint(straight / "checkpoint-last.pt"), load_checkpoint(chain / "checkpoint-last.pt")
    assert a["nimg"] == round(KIMG * 1000)
    assert_identical(a, b)
    assert_identical(load_checkpoint(straight / "checkpoint-prev.pt"), load_checkpoint(chain / "checkpoint-prev.pt"))
    assert_identical(load_checkpoint(straight / "checkpoint-best-test-mean.pt"),
                      load_checkpoint(chain / "checkpoint-best-test-mean.pt"))
    # stats.jsonl: every tick once, in order, with the same numbers; the metric log likewise
    assert _curve(read_stats(chain)) == _curve(read_stats(straight))
    assert [s["tick"] for s in read_stats(chain)] == list(range(1, 9))
    assert read_jsonl(chain / "metric-test-mean.jsonl") == read_jsonl(straight / "metric-test-mean.jsonl")
    grids = sorted(p.name for p in straight.glob("samples-*.png"))
    assert grids == sorted(p.name for p in chain.glob("samples-*.png"))
    assert all((straight / g).read_bytes() == (chain / g).read_bytes() for g in grids)
    assert not list(chain.glob(".*.tmp")), "a temp file outlived the run"
    print(f"\nkill-anywhere: {len(KILLS)} kills, {len(KILLS) + 2} processes, {elapsed:.1f} s")


# ---------------------------------------------------------------------------------------------
# checkpoints: the last two are kept; a damaged newest is named and skipped
# ---------------------------------------------------------------------------------------------
def test_both_checkpoints_damaged_is_one_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint-last.pt").write_bytes(b"PK\x03\x04 truncated")
    (run / "checkpoint-prev.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_resume_checkpoint(run)
    msg = str(e.value)
    assert "\n" not in msg and "checkpoint-last.pt is corrupt" in msg and "checkpoint-prev.pt is empty" in msg


def test_checkpoint_write_keeps_the_previous_one_under_its_second_name(tmp_path):
    last, prev = tmp_path / "checkpoint-last.pt", tmp_path / "checkpoint-prev.pt"
    for v in range(3):
        atomic_torch_save({"v": torch.tensor(v)}, last, previous=prev)
    assert torch.load(last, weights_only=True)["v"] == 2 and torch.load(prev, weights_only=True)["v"] == 1


# ---------------------------------------------------------------------------------------------
# one writer per run folder
# ---------------------------------------------------------------------------------------------
def test_second_writer_is_refused_and_a_dead_holder_reads_interrupted(zygote, discs, tiny_overrides, tmp_path):
    run = tmp_path / "run"
    long = ["train", "--data", str(discs), "--out", str(run), "--kimg", "50", "--batch", "8", "--no-progress",
            "--set", *tiny_overrides, "tick_kimg=0.008", "snapshot_kimg=0.016"]
    first = zygote.start(long)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint-last.pt").exists():  # it holds the lock and has trained a snapshot
            assert time.time() < deadline, zygote.log(first)
            time.sleep(0.1)
        assert run_status(run)["status"] == "running"
        code, err = zygote.run([*long, "--resume"])  # a second process on the same folder
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("medgan train: error: "), err
        assert f"pid {first} on host {os.uname().nodename} since " in err and "train.lock" in err, err
        with pytest.raises(RunLockedError, match=f"pid {first} "):  # the Python twin too, and without --resume
            run_training(make_config(data=discs, out=run, kimg=50, batch=8, overrides=tiny_overrides))
    finally:
        os.kill(first, signal.SIGKILL)
        assert zygote.wait(first) == -signal.SIGKILL
    status = run_status(run)
    assert status["status"] == "interrupted" and f"pid {first} " in status["reason"] and "--resume" in status["reason"]
    assert experiments.run_status(run)["status"] == "interrupted"
    kept = load_checkpoint(run / "checkpoint-last.pt")["nimg"]
    cfg = make_config(out=run, kimg=kept / 1000 + 0.016, resume=True)
    run_training(cfg, resume=True, progress=False)
    assert run_status(run)["status"] == "finished"
    assert load_checkpoint(run / "checkpoint-last.pt")["nimg"] == kept + 16


def test_lock_is_exclusive_within_one_machine(tmp_path):
    a, b = RunLock(tmp_path), RunLock(tmp_path)
    a.acquire()
    a.announce()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host"):
        b.acquire(tries=1)
    a.release()
    b.acquire(tries=1)
    b.release()


def test_notebook_helper_resumes_an_interrupted_run(discs, tiny_overrides, tmp_path, monkeypatch, assert_identical):
    real = experiments.load_prepared(discs)
    kw = {"runs_root": tmp_path / "runs", "kimg": 0.032, "batch": 8, "progress": False,
          "overrides": [*tiny_overrides, "tick_kimg=0.008", "snapshot_kimg=0.016", "deterministic=true"]}
    monkeypatch.setenv(FAULT_ENV, "write.partial@checkpoint-last.pt:2:enospc")
    with pytest.raises(DiskFullError):
        experiments.trained_run(real, "dcgan", "quick", **kw)
    monkeypatch.delenv(FAULT_ENV)
    run = tmp_path / "runs" / f"{discs.name}-dcgan-quick"
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "running"}))  # what a SIGKILL leaves
    assert experiments.run_status(run)["status"] == "interrupted"
    assert experiments.trained_run(real, "dcgan", "quick", **kw) == run
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # resumed in place, nothing set aside
    assert json.loads((run / "config.json").read_text())["resumed_from_kimg"] == 0.016
    assert experiments.run_status(run)["status"] == "finished"
    reference = tmp_path / "reference"
    experiments.trained_run(real, "dcgan", "quick", **{**kw, "runs_root": reference})
    assert_identical(load_checkpoint(reference / run.name / "checkpoint-last.pt"), load_checkpoint(run / "checkpoint-last.pt"))


# ---------------------------------------------------------------------------------------------
# full disk
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [
    "write.partial@checkpoint-last.pt:2:enospc",   # the second snapshot
    "checkpoint.rotated:1:enospc",                 # the second snapshot (the first has nothing to rotate)
    "append.partial@stats.jsonl:3:enospc",         # the third tick's line
    "write.partial@status.json:3:enospc",          # the status written after the second snapshot
    "write.complete@samples-*.png:2:enospc",       # the second grid
])
def test_full_disk_keeps_what_was_written(fault, discs, tiny_overrides, tmp_path, monkeypatch, assert_identical):
    run = tmp_path / "run"
    sets = [*tiny_overrides, "tick_kimg=0.008", "snapshot_kimg=0.016", "deterministic=true"]
    cfg = make_config(data=discs, out=run, kimg=0.048, batch=8, overrides=sets)
    snapshots = {}

    def snapshot_files(*_a, **_k):  # the bytes of every final file just before each write
        snapshots.clear()
        for p in run.iterdir():
            if p.is_file() and not p.name.startswith("."):
                snapshots[p.name] = p.read_bytes()

    monkeypatch.setenv(FAULT_ENV, fault)
    import medgan.io as mio

    real_write, real_append = mio.atomic_write, mio.append_jsonl

    def spy_write(path, write, **kw):
        snapshot_files()
        return real_write(path, write, **kw)

    def spy_append(path, record):
        snapshot_files()
        return real_append(path, record)

    monkeypatch.setattr(mio, "atomic_write", spy_write)
    monkeypatch.setattr("medgan.images.atomic_write", spy_write)
    monkeypatch.setattr("medgan.training.loop.append_jsonl", spy_append)
    with pytest.raises(DiskFullError) as e:
        run_training(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("disk full while writing ") and "--resume" in msg
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert not list(run.glob(".*.tmp")), "a temp file outlived the failed write"
    # every file other than status.json (which now says failed) is byte for byte what it was before the write
    for name, data in snapshots.items():
        if name != "status.json":
            assert (run / name).read_bytes() == data, f"{name} changed ({msg})"
    _assert_whole(run)
    assert run_status(run)["status"] == "failed" and "disk full" in run_status(run)["reason"]
    # and it resumes to the same end as a run that never failed
    monkeypatch.delenv(FAULT_ENV)
    run_training(make_config(out=run, kimg=0.048, resume=True), resume=True, progress=False)
    straight = run_training(make_config(data=discs, out=tmp_path / "straight", kimg=0.048, batch=8, overrides=sets),
                            progress=False)
    assert_identical(load_checkpoint(straight / "checkpoint-last.pt"), load_checkpoint(run / "checkpoint-last.pt"))
    assert _curve(read_stats(run)) == _curve(read_stats(straight))


def test_full_disk_cli_is_one_line(discs, tiny_overrides, tmp_path, monkeypatch, capsys):
    from medgan.cli import main

    monkeypatch.setenv(FAULT_ENV, "write.partial@checkpoint-last.pt:1:enospc")
    run = tmp_path / "run"
    code = main(["train", "--data", str(discs), "--out", str(run), "--kimg", "0.016", "--batch", "8", "--no-progress",
                 "--set", *tiny_overrides])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("medgan train: error: disk full while writing ") and "checkpoint-last.pt" in err
    assert "no checkpoint was written yet" in err and "medgan deleted nothing" in err
    assert not (run / "checkpoint-last.pt").exists() and not list(run.glob(".*.tmp"))


def test_append_on_a_full_disk_leaves_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "stats.jsonl"
    append_jsonl(path, {"tick": 1})
    before = path.read_bytes()
    monkeypatch.setenv(FAULT_ENV, "append.partial@stats.jsonl:1:enospc")
    with pytest.raises(DiskFullError, match="stats.jsonl keeps its previous lines"):
        append_jsonl(path, {"tick": 2, "pad": "x" * 100})
    assert path.read_bytes() == before
    monkeypatch.delenv(FAULT_ENV)
    path.write_bytes(before + b'{"tick": 2, "pa')  # what a SIGKILL mid-append leaves
    assert read_jsonl(path) == [{"tick": 1}]
    append_jsonl(path, {"tick": 3})
    assert read_jsonl(path) == [{"tick": 1}, {"tick": 3}]


def test_bad_fault_spec_is_one_clear_error(tmp_path, monkeypatch):
    from medgan.errors import UserError

    monkeypatch.setenv(FAULT_ENV, "checkpiont:1")
    with pytest.raises(UserError, match="POINT"):
        atomic_write_text(tmp_path / "x.txt", "x")
