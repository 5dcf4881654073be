"""No import cycle among the modules of `flayer` and `baselines`: every import counts, also one
inside a function (a lazy import hides a cycle; it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("flayer", "baselines")


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for file in (root / package).rglob("*.py"):
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


def imports(name: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that `name` imports (the nearest enclosing known module of each
    imported name; a module's own parent packages do not count)."""
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    targets: list[str] = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                        for alias in node.names]
    out = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "flayer"
    pkg.mkdir()
    (tmp_path / "baselines").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from flayer.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from flayer import a\n")
    (pkg / "c.py").write_text("import flayer.a\n")
    known = modules(tmp_path)
    graph = {m: imports(m, f, known) for m, f in known.items()}
    assert cycles(graph) == [["flayer.a", "flayer.b"]]


def test_no_import_cycle_in_the_package():
    known = modules()
    assert "flayer.protocol.rounds" in known and "baselines.fedavg" in known
    graph = {m: imports(m, f, known) for m, f in known.items()}
    assert cycles(graph) == []
