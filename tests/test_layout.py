"""The package's layout: no import cycles, dependencies pointing down the layers, no module too long.

Read from the source with `ast` (every import, those inside functions too), so
that an import made late to dodge a cycle still counts as one.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "engine"
MODULE_LINES_MAX = 800
# The layers, top (depended on by all) to bottom (depends on any above it). Clearing comes
# before the hub: the hub shows its pre-payment usage.
LAYERS = ("contract", "world", "core", "reference", "store", "clearing", "hub", "tools")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """The engine modules `name` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from engine.store import files` names a module; `from engine.store import open_store` a name.
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            # The longest engine module the import names (`import engine.core.engine` -> that module).
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t.startswith("engine") and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, each as one cycle through it (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, comp) for comp in sccs]


def _one_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest import cycle from the first module of a strongly connected component back to it."""
    members = set(comp)
    start = comp[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    # engine.tools.replay opens the store inside a function.
    assert "engine.store" in graph["engine.tools.replay"]
    assert "engine.core.engine" in graph["engine.store.store"]


def test_no_import_cycles():
    cycles = [" -> ".join(c) for c in _cycles(_graph())]
    assert not cycles, "import cycles: " + "; ".join(cycles)


def _layer(module: str) -> int | None:
    """The index of a module's layer in LAYERS; None for the package's top (engine, cli, _compiled)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_dependencies_point_down_the_layers():
    # A module imports only from its own layer and the ones before it in LAYERS.
    bad = []
    for name, deps in _graph().items():
        mine = _layer(name)
        if mine is None:
            continue
        bad += [f"{name} imports {d}" for d in sorted(deps) if (other := _layer(d)) is not None and other > mine]
    assert not bad, "\n".join(bad)


def test_the_layer_check_sees_a_violation():
    assert _layer("engine.core.engine") < _layer("engine.store.store") < _layer("engine.tools.demo")
    assert _layer("engine.cli") is None


def test_every_subpackage_is_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages <= set(LAYERS), subpackages - set(LAYERS)


def test_no_module_is_too_long():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES_MAX}
    assert not long, f"modules over {MODULE_LINES_MAX} lines: {long}"


def _compiled_py() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED_PY" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no COMPILED_PY")


def test_compiled_modules_guard_their_build_and_cover_the_hot_path():
    compiled = _compiled_py()
    for rel in compiled:
        last = (ROOT / rel).read_text(encoding="utf-8").rstrip().splitlines()[-1]
        assert last == "check_fresh(__file__)", f"{rel} must end with check_fresh(__file__)"
    # The settlement pipeline, its records, and every store module a commit or a lookup runs through.
    hot = {"engine/core/engine.py", "engine/core/records.py", "engine/core/reconcile.py", "engine/store/codec.py",
           "engine/store/lookups.py", "engine/store/recon.py", "engine/store/writer.py", "engine/store/store.py"}
    assert hot <= set(compiled), hot - set(compiled)
