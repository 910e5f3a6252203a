"""The import graph of curation/, annotations/ and loops/: no cycles, data flows one way, no module imports another's
private (`_name`) names, and no module is over 400 lines (docs/architecture.md, "The one-way rule").

The graph is read from the source with `ast`, so it counts imports inside functions too: a cycle hidden in a
function still couples two modules, and breaks as soon as someone hoists the import.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "annotations", "loops")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """First-party modules that `name` imports anywhere in its source (the nearest known module of each)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod.
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    edges = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_graph_reads_function_level_imports():
    graph = _graph()
    assert "loops.registry" in graph["curation.cli.reward"]  # imported inside a command function


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_data_flows_one_way():
    """curation never imports annotations or loops (the CLI in curation/cli/ wires all three);
    annotations never imports loops."""
    forbidden = {"curation": ("annotations", "loops"), "annotations": ("loops",)}
    wrong = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in sorted(targets)
        if not name.startswith("curation.cli")
        and target.split(".")[0] in forbidden.get(name.split(".")[0], ())
    ]
    assert not wrong, "\n".join(wrong)


def _private_imports(name: str, path: Path, modules: dict[str, Path]) -> list[str]:
    """`_name`s that module `name` imports from another first-party module (at any depth of its source)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        if base.split(".")[0] not in PACKAGES or base == name:
            continue
        found += [f"{name} imports {base}.{a.name}" for a in node.names
                  if a.name.startswith("_") and not a.name.startswith("__") and f"{base}.{a.name}" not in modules]
    return found


def test_no_module_imports_another_modules_private_names():
    """A `_name` is its module's own business; what another module needs is made public where it lives."""
    modules = _modules()
    wrong = [line for name, path in modules.items() for line in _private_imports(name, path, modules)]
    assert not wrong, "\n".join(wrong)


def test_the_private_import_check_sees_one(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from curation.store import _first_line, among\n")
    assert _private_imports("curation.x", path, {}) == ["curation.x imports curation.store._first_line"]


MAX_LINES = 400
GENERATED = ("/migrations/",)  # Alembic revisions: written once, never edited after they ship


def test_no_library_module_is_over_400_lines():
    """Small modules, each with one job; split a module by job before it grows past this."""
    long = [f"{path.relative_to(REPO)}: {n} lines" for path in _modules().values()
            if not any(part in path.as_posix() for part in GENERATED)
            and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "split these by job (docs/architecture.md):\n" + "\n".join(long)
