"""No half-written file under its final name: every write in medgan goes through ``medgan.io``'s atomic helpers.

The test walks the package source (AST) and fails on a call that writes a file (``open(.., "w")``,
``write_text``, ``np.save``, ``torch.save``, ``Image.save``, ``savefig``, ``json.dump``, ``to_csv(path)``, ...)
outside ``medgan/io.py``, unless it writes to a temp path (an expression naming ``tmp``: the file an atomic
helper renames, or a temp folder renamed whole) or it is on the allow-list below, with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "medgan"

# (file relative to medgan/, enclosing function) -> why a plain write is right there
ALLOWED = {
    ("runtime.py", "peak_memory_reset"): "writes /proc/self/clear_refs, a kernel control file, not a result",
    ("training/runs.py", "RunLock.acquire"): "creates the lock file: a flock target, never read as a result",
    # medgan.data.phantoms.common.write_phantom hands these a temp folder and renames it whole when all is written
    ("data/phantoms/common.py", "_save_nifti"): "fills the phantom's temp folder (renamed whole)",
    ("data/phantoms/common.py", "write_mhd"): "fills the phantom's temp folder (renamed whole)",
    ("data/phantoms/cardiac.py", "_write_acdc_patient"): "fills the phantom's temp folder (renamed whole)",
    ("data/phantoms/fundus.py", "write_idrid.work"): "fills the phantom's temp folder (renamed whole)",
    ("metrics/bench.py", "run_bench"): "PNG inputs of a benchmark, inside a tempfile.TemporaryDirectory",
}

WRITE_METHODS = {"write_text", "write_bytes", "savefig", "save", "savez", "savez_compressed", "tofile", "imwrite",
                 "imsave"}
SHUTIL_COPIES = {"copyfile", "copy", "copy2", "copytree", "move"}
PATH_METHODS = {"to_csv", "to_parquet", "to_json", "to_pickle", "to_excel", "to_html", "write_html", "write_image"}
DUMPS = {"dump"}  # json.dump / pickle.dump to a file object


def _mode(call: ast.Call, position: int) -> str | None:
    for kw in call.keywords:
        if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
            return str(kw.value.value)
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return str(call.args[position].value)
    return None


def _is_write(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Name) and f.id == "open":
        mode = _mode(call, 1)
        return mode is not None and any(c in mode for c in "wax+")
    if not isinstance(f, ast.Attribute):
        return False
    if f.attr == "open" and not (isinstance(f.value, ast.Name) and f.value.id in ("Image", "os", "tarfile", "zipfile")):
        mode = _mode(call, 0)  # Path.open(mode)
        return mode is not None and any(c in mode for c in "wax+")
    if f.attr == "open" and isinstance(f.value, ast.Name) and f.value.id == "os":
        return any(isinstance(n, ast.Attribute) and n.attr in ("O_WRONLY", "O_RDWR", "O_CREAT") for n in ast.walk(call))
    if f.attr == "open_memmap":
        return (_mode(call, 1) or "") in ("w+", "r+")
    if f.attr in WRITE_METHODS:
        return True
    if f.attr in SHUTIL_COPIES:
        return isinstance(f.value, ast.Name) and f.value.id == "shutil"
    if f.attr in PATH_METHODS:  # frame.to_csv(index=False) returns text; with a path it writes
        return bool(call.args) or any(kw.arg in ("path", "path_or_buf", "buf", "file") for kw in call.keywords)
    return f.attr in DUMPS and isinstance(f.value, ast.Name) and f.value.id in ("json", "pickle")


def _to_temp_or_stream(call: ast.Call) -> bool:
    """The destination (an argument or the receiver) names a temp path, or the write goes to stdout/stderr or
    an in-memory buffer (``buf``)."""
    parts = [*call.args, *(kw.value for kw in call.keywords)]
    if isinstance(call.func, ast.Attribute):
        parts.append(call.func.value)
    text = " ".join(ast.unparse(p) for p in parts).lower()
    return any(word in text for word in ("tmp", "sys.stdout", "sys.stderr", "buf"))


def _walk(node: ast.AST, scope: tuple[str, ...] = ()):
    """Every node below ``node`` with the dotted name of the function/class it sits in."""
    for child in ast.iter_child_nodes(node):
        inner = (*scope, child.name) if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else scope
        yield child, ".".join(inner)
        yield from _walk(child, inner)


def non_atomic_writes(root: Path = ROOT) -> list[tuple[str, str, int, str]]:
    """(file, function, line, code) of every plain file write outside medgan/io.py and the allow-list."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel == "io.py":
            continue
        for node, func in _walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and _is_write(node) and not _to_temp_or_stream(node) \
                    and (rel, func) not in ALLOWED:
                found.append((rel, func, node.lineno, ast.unparse(node)[:100]))
    return found


def test_every_final_write_is_atomic():
    bad = non_atomic_writes()
    assert not bad, "non-atomic writes (use medgan.io.atomic_write*/write_json):\n" + "\n".join(
        f"  medgan/{f}:{line} in {func or '<module>'}: {code}" for f, func, line, code in bad)


def test_allow_list_names_real_places():
    """An entry whose function no longer exists (or no longer writes) must go: the list only shrinks by hand."""
    writers = set()
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        writers |= {(rel, func) for node, func in _walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Call) and _is_write(node) and not _to_temp_or_stream(node)}
    assert set(ALLOWED) <= writers, set(ALLOWED) - writers


@pytest.mark.parametrize("code", [
    'open(path, "w").write("x")',
    'Path(out).write_text("x")',
    "np.save(out / 'a.npy', a)",
    "torch.save(state, run / 'checkpoint-last.pt')",
    "Image.fromarray(a).save(out)",
    "fig.savefig(out, dpi=100)",
    "json.dump(meta, open(out, 'w'))",
    "frame.to_csv(out, index=False)",
    'with path.open("a") as f: pass',
    "shutil.copyfile(a, out)",
])
def test_the_checker_sees_each_kind_of_write(tmp_path, code):
    pkg = tmp_path / "medgan"
    pkg.mkdir()
    (pkg / "mod.py").write_text(f"def f(out, path, a, state, run, fig, meta, frame):\n    {code}\n")
    assert {(f, func) for f, func, _, _ in non_atomic_writes(pkg)} == {("mod.py", "f")}
    (pkg / "mod.py").write_text(f"def f(tmp, a, state, fig, meta, frame):\n    out = path = run = tmp\n    "
                                f"{code.replace('out', 'tmp').replace('path', 'tmp').replace('run /', 'tmp /')}\n")
    assert non_atomic_writes(pkg) == []


def test_atomic_folder_swaps_in_whole_or_leaves_the_old_folder(tmp_path):
    from medgan.io import atomic_folder

    target = tmp_path / "set"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["set"] and (target / "old.txt").read_text() == "old"
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # nothing shows before the swap
    assert [p.name for p in target.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["set"]
    assert target.stat().st_mode & 0o777 == 0o755  # readable by others, not mkdtemp's private 0o700
