"""The package's shape: imports run one way through the layers, with no cycle, and modules stay small.

The layers (README, "Design"): errors/io/runtime/config -> data -> models, losses, augment, sampling ->
training -> generate -> segmentation, metrics -> plots, experiments, sweep, bench -> cli.
Every medgan import counts, function-level ones too, so a cycle cannot hide inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "medgan"

# module prefix -> layer (the longest matching prefix wins)
LAYERS = {
    "medgan": 0, "medgan.errors": 0, "medgan.io": 0, "medgan.runtime": 0, "medgan.config": 0,
    "medgan.registry": 0, "medgan.images": 0,
    "medgan.data": 1,
    "medgan.models": 2, "medgan.losses": 2, "medgan.augment": 2, "medgan.sampling": 2,
    "medgan.training": 3, "medgan.train": 3,
    "medgan.generate": 4, "medgan.export": 4,
    "medgan.segmentation": 5, "medgan.unet": 5, "medgan.metrics": 5, "medgan.classify": 5,
    "medgan.plots": 6, "medgan.experiments": 6, "medgan.sweep": 6, "medgan.bench": 6, "medgan.train_bench": 6,
    "medgan.beyond": 6, "medgan.turing": 6, "medgan.table2": 6,
    "medgan.cli": 7,
}
MAX_LINES = 520  # "no module over ~500 lines"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(name: str) -> int:
    best = max((prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def medgan_imports(name: str, path: Path) -> dict[str, list[tuple[int, bool]]]:
    """``{imported module: [(line, at module top?)]}`` for every import of a medgan module in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found: dict[str, list[tuple[int, bool]]] = {}

    def add(target: str, node: ast.AST) -> None:
        found.setdefault(target, []).append((node.lineno, id(node) in top_level))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "medgan":
                    add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "medgan":
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                add(sub if sub in MODULES else mod, node)  # `from pkg import submodule` imports the submodule
    return found


GRAPH = {name: medgan_imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        assert any(name == p or name.startswith(p + ".") for p in LAYERS if p != "medgan") or name == "medgan", (
            f"{name} is in no layer: add it to LAYERS here and to the README's Design section")


def test_no_import_goes_up_a_layer():
    upward = [f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)}) at line {line}"
              for src, deps in GRAPH.items() for dst, sites in deps.items() for line, _ in sites
              if dst in MODULES and layer_of(dst) > layer_of(src)]
    assert not upward, "\n".join(upward)


def test_medgan_imports_are_at_module_top():
    # an import inside a function is how a cycle hides; layer order makes them unnecessary
    hidden = [f"{src}:{line} imports {dst} inside a function" for src, deps in GRAPH.items()
              for dst, sites in deps.items() for line, top in sites if not top]
    assert not hidden, "\n".join(hidden)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    edges = {src: {dst for dst in deps if dst in MODULES and dst != src} for src, deps in GRAPH.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_cycles():
    # the guard above is only as good as this search
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_layer_check_sees_function_level_and_relative_imports(tmp_path):
    src = tmp_path / "medgan" / "data" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from medgan.training import loop\n    from ..cli import main\n")
    found = medgan_imports("medgan.data.x", src)
    assert found["medgan.training.loop"] == [(2, False)]
    assert found["medgan.cli"] == [(3, False)]
    assert layer_of("medgan.training.loop") > layer_of("medgan.data.x")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (> {MAX_LINES}): split it by responsibility"


def test_core_modules_never_import_the_cli():
    users = [src for src, deps in GRAPH.items() if "medgan.cli" in deps and src != "medgan.cli"]
    assert not users, users
