"""No network, no code from data: the pipeline runs with sockets blocked, and every checkpoint load refuses pickled code.

* train -> generate -> fid -> segment through the CLI's Python entry (``medgan.cli.main``) with every
  network socket call patched to record the attempt and raise: the test fails on any attempt, even one
  the code would have caught and survived (e.g. a weights download with a fallback).
* every ``torch.load`` call in the package passes ``weights_only=True`` (an AST walk over the source): a
  checkpoint or weights file can hold tensors, never code that runs on load.
"""

from __future__ import annotations

import ast
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from medgan.cli import main
from medgan.metrics.features import extract_features

PACKAGE = Path(__file__).resolve().parents[1] / "medgan"


class NetworkBlocked(OSError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Patch the socket entry points; yields the list of attempts (each also raises ``NetworkBlocked``)."""
    attempts: list[str] = []
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what: str):
        attempts.append(what)
        raise NetworkBlocked(f"network access attempted in a test: {what}")

    def connect(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):  # local IPC (multiprocessing) is not network
            return original_connect(self, address)
        refuse(f"connect {address!r}")

    def connect_ex(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return original_connect_ex(self, address)
        refuse(f"connect_ex {address!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(f"create_connection {address!r}"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(f"getaddrinfo {host!r}"))
    monkeypatch.setattr(socket, "gethostbyname", lambda host: refuse(f"gethostbyname {host!r}"))
    yield attempts


def test_the_blocker_blocks(no_network):
    """The fixture itself works: a lookup and a TCP connect are both recorded and refused."""
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("example.org", 80), timeout=1)
    with pytest.raises(NetworkBlocked):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))
    assert len(no_network) == 2


def test_train_generate_segment_fid_offline(no_network, make_discs, tiny_overrides, tmp_path, monkeypatch, capsys):
    """The whole chain on a tiny set; FID on the domain (U-Net) features the segment step trained."""
    monkeypatch.setenv("MEDGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no weights anywhere: nothing to find, nothing to fetch
    real = make_discs(tmp_path / "real", n=24, size=16, test_patients=1)
    run, gen, seg = tmp_path / "run", tmp_path / "gen", tmp_path / "seg"
    assert main(["train", "--data", str(real), "--gan", "dcgan", "--out", str(run), "--kimg", "0.016", "--batch", "8",
                 "--set", *tiny_overrides, "--no-progress"]) == 0
    assert main(["generate", str(run), "--n", "12", "--out", str(gen), "--batch", "6", "--seed", "1"]) == 0
    assert main(["segment", "--train", str(gen), "--test", str(real), "--seeds", "1", "--epochs", "1", "--out", str(seg),
                 "--set", "depth=2", "--set", "width=4", "--device", "cpu"]) == 0
    fid_json = tmp_path / "fid.json"
    assert main(["fid", str(real), str(gen), "--features", f"unet:{seg}", "--no-floor", "--bootstrap", "0",
                 "--json", str(fid_json)]) == 0
    capsys.readouterr()
    assert json.loads(fid_json.read_text())["features"].startswith("unet")
    assert no_network == [], f"network access attempted: {no_network}"


def test_inception_random_features_offline(no_network, tmp_path, monkeypatch):
    """The extractor most likely to reach for a download (Inception) builds and runs with sockets blocked."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    features = extract_features(np.zeros((2, 1, 16, 16), np.float32), "inception-random", batch=2, device="cpu",
                                progress=False)
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    assert no_network == [], f"network access attempted: {no_network}"


def torch_load_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if name == "load" and owner == "torch":
                yield node


def weights_only_true(call: ast.Call) -> bool:
    return any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def test_every_torch_load_is_weights_only():
    calls, unsafe = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in torch_load_calls(tree):
            calls += 1
            if not weights_only_true(call):
                unsafe.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}")
        # an alias (``from torch import load``) would dodge the walk above: refuse it
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
                unsafe.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports torch.load by name")
    assert calls >= 4, "the walk found too few torch.load calls: is it still looking at the package?"
    assert not unsafe, "torch.load without weights_only=True:\n" + "\n".join(unsafe)


def test_the_ast_check_flags_an_unsafe_load():
    bad = ast.parse("import torch\nstate = torch.load(path, map_location='cpu')\nok = torch.load(p, weights_only=True)\n")
    flags = [weights_only_true(c) for c in torch_load_calls(bad)]
    assert flags == [False, True]
