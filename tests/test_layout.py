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
# The layers, top (depended on by all) to bottom (depends on any above it): STYLE.md.
LAYERS = ("contract", "world", "core", "reference", "store", "hub", "clearing", "tools")
# Layers that must never import the ones listed: the settlement core and what it rests on
# know nothing of the store, the hub, clearing or the tools.
# Found outside the store's modules and being mended on other branches: each is reported as
# an expected failure while it remains, and any other cycle or long module fails the test.
KNOWN_CYCLES = {
    # demo imports report and report imports demo, each inside functions.
    ("engine.tools.demo", "engine.tools.report", "engine.tools.demo"),
}
KNOWN_LONG = {"engine.hub.server", "engine.tools.synth"}
FORBIDDEN = {
    low: ("engine.store", "engine.hub", "engine.clearing", "engine.tools")
    for low in ("engine.contract", "engine.world", "engine.core", "engine.reference")
}


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
    cycles = [tuple(c) for c in _cycles(_graph())]
    text = "; ".join(" -> ".join(c) for c in cycles)
    assert set(cycles) <= KNOWN_CYCLES, f"import cycles: {text}"
    if cycles:
        pytest.xfail(f"known import cycles outside the store, mended elsewhere: {text}")


def test_lower_layers_never_import_the_upper_ones():
    bad = []
    for name, deps in _graph().items():
        for low, banned in FORBIDDEN.items():
            if name == low or name.startswith(low + "."):
                bad += [f"{name} imports {d}" for d in sorted(deps) if d.startswith(banned)]
    assert not bad, "\n".join(bad)


def test_every_subpackage_is_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages <= set(LAYERS), subpackages - set(LAYERS)


def test_no_module_is_too_long():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES_MAX}
    assert set(long) <= KNOWN_LONG, f"modules over {MODULE_LINES_MAX} lines: {long}"
    if long:
        pytest.xfail(f"known modules over {MODULE_LINES_MAX} lines outside the store, split elsewhere: {long}")


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
