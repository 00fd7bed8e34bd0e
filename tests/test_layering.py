"""The package's import layering: imports point one way (down the layer list) and no module cycles.

Every module under ``src/talksplat`` is parsed with :mod:`ast` (nothing is imported or executed).
All ``import x`` / ``from x import y`` / relative imports count, wherever they are written: at the
top, inside functions (lazy imports), and under ``if TYPE_CHECKING:``. TYPE_CHECKING-only imports
count for both layering and cycles: an annotation that needs a higher layer's type is the same
design smell as a run-time import, and counting them keeps the rule simple (one graph).

Resolution: ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the package
(a submodule import), else to ``pkg`` (its ``__init__``). The parent packages that Python executes
implicitly before a submodule are not edges: otherwise every ``__init__`` that re-exports its
submodules would form a cycle with them.

A module's layer is its first package component under ``talksplat`` (``talksplat.features.audio``
-> ``features``); the top-level modules ``talksplat`` (``__init__``), ``talksplat.errors`` and
``talksplat._native`` belong to ``core``, ``talksplat.demo`` to ``demo``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "talksplat"
SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import only from its own layer or a lower one.
LAYERS = (
    "core",
    "io",
    "tracking",
    "features",
    "headmodel",
    "gaussians",
    "fields",
    "synthetic",   # depends on io and tracking only; placed here so it can later use gaussians/fields
    "prepare",     # above headmodel: prepare fits the head model
    "data",
    "engine",
    "recipes",
    "render",
    "eval",
    "serve",
    "demo",
    "cli",
)
# Edges tolerated while callers move, each with the reason; the test below fails once one is gone, so
# the list cannot go stale.
TRANSITIONAL_EDGES: set[tuple[str, str]] = set()
TOP_LEVEL = {PACKAGE: "core", f"{PACKAGE}.errors": "core", f"{PACKAGE}._native": "core",
             f"{PACKAGE}.demo": "demo"}


@dataclass(frozen=True)
class Import:
    source: str   # importing module
    target: str   # imported module (resolved as described in the module docstring)
    line: int


def _modules() -> dict[str, Path]:
    """{dotted module name: file} for every module of the package."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _from_base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if _is_package(path) else module.split(".")[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import of the package's own modules written anywhere in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, path, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield Import(module, target, node.lineno)


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, or None when its package is not in :data:`LAYERS`."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    first = module.split(".")[1]
    return first if first in LAYERS else None


def _all_edges() -> tuple[dict[str, Path], list[Import]]:
    modules = _modules()
    return modules, [imp for name, path in modules.items() for imp in _imports(name, path, modules)]


def _graph() -> tuple[dict[str, Path], list[Import]]:
    """The modules and their imports, less :data:`TRANSITIONAL_EDGES`."""
    modules, edges = _all_edges()
    return modules, [e for e in edges if (e.source, e.target) not in TRANSITIONAL_EDGES]


def _rank(layer: str) -> int:
    return LAYERS.index(layer)


def upward_imports(edges: list[Import]) -> list[str]:
    """Imports from a higher layer, as readable lines."""
    bad = []
    for imp in edges:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is not None and dst is not None and _rank(dst) > _rank(src):
            bad.append(f"{imp.source} (layer {src}) imports {imp.target} (layer {dst}), line {imp.line}")
    return sorted(set(bad))


def strongly_connected(nodes: list[str], edges: list[Import]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a self-import)."""
    succ: dict[str, set[str]] = {n: set() for n in nodes}
    for imp in edges:
        if imp.target in succ:
            succ[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        # Recursion depth is bounded by the longest import chain (tens of modules).
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in succ[v]:
                components.append(sorted(component))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return sorted(components)


def _cycle_lines(components: list[list[str]], edges: list[Import]) -> list[str]:
    lines = []
    for component in components:
        members = set(component)
        inner = sorted({f"{e.source} -> {e.target} (line {e.line})" for e in edges
                        if e.source in members and e.target in members})
        lines.append(f"cycle between {', '.join(component)}: " + "; ".join(inner))
    return lines


def test_every_module_is_in_a_layer():
    modules, _ = _graph()
    unknown = sorted(m for m in modules if layer_of(m) is None)
    assert not unknown, ("modules whose package is not in the layer list (add it to LAYERS in "
                         "tests/test_layering.py at the right place): " + ", ".join(unknown))


def test_no_upward_imports():
    _, edges = _graph()
    bad = upward_imports(edges)
    assert not bad, "imports from a higher layer (order: " + " -> ".join(LAYERS) + "):\n" + "\n".join(bad)


def test_no_import_cycles():
    modules, edges = _graph()
    cycles = _cycle_lines(strongly_connected(list(modules), edges), edges)
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(cycles)


def test_transitional_edges_still_exist():
    _, edges = _all_edges()
    present = {(e.source, e.target) for e in edges}
    stale = sorted(f"{a} -> {b}" for a, b in TRANSITIONAL_EDGES - present)
    assert not stale, "remove these from TRANSITIONAL_EDGES in tests/test_layering.py: " + ", ".join(stale)


# ----------------------------------------------------------------------------------------------------
# The checker itself, on small synthetic graphs (so a broken checker cannot pass silently)


def test_checker_finds_a_three_module_cycle_and_ignores_a_chain():
    edges = [Import("a", "b", 1), Import("b", "c", 1), Import("c", "a", 1), Import("c", "d", 1)]
    assert strongly_connected(["a", "b", "c", "d"], edges) == [["a", "b", "c"]]
    assert strongly_connected(["a", "b"], [Import("a", "b", 1)]) == []


def test_checker_flags_an_upward_import_but_not_a_downward_one():
    up = Import("talksplat.io.audio", "talksplat.features.audio", 3)
    down = Import("talksplat.features.audio", "talksplat.io.audio", 4)
    assert upward_imports([up, down]) == [
        "talksplat.io.audio (layer io) imports talksplat.features.audio (layer features), line 3"]


@pytest.mark.parametrize("module,layer", [("talksplat", "core"), ("talksplat.errors", "core"),
                                          ("talksplat.core.constants", "core"), ("talksplat.demo", "demo"),
                                          ("talksplat.engine.trainer", "engine"), ("talksplat.train.trainer", None)])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_imports_inside_functions_and_type_checking_are_seen(tmp_path):
    code = ("from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from talksplat.fields.hashgrid import GridLayout\n"
            "def f():\n    from ..gaussians import rasterize\n    import talksplat.io.video\n")
    path = tmp_path / "x.py"
    path.write_text(code)
    modules = {"talksplat.features.x": path, "talksplat.gaussians.rasterize": path}
    targets = {i.target for i in _imports("talksplat.features.x", path, modules)}
    assert targets == {"talksplat.fields.hashgrid", "talksplat.gaussians.rasterize", "talksplat.io.video"}
