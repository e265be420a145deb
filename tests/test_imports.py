"""No import cycles inside ``uipd/``: a module that needs one of its importers is two jobs in one
place, or one job split in the wrong place.  A function-local import written to dodge a cycle is
still a cycle (it runs, only later), so every import counts wherever it is; one under
``if TYPE_CHECKING:`` does not (it never runs)."""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "uipd"

Edges = dict[str, dict[str, int]]
"""Module -> the uipd modules it imports -> the line of the first such import."""


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package is its ``__init__``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: Collection[str]) -> list[tuple[str, int]]:
    """(module imported, line) for every import that runs, at any depth: module level, in
    functions, in classes; not in the body of ``if TYPE_CHECKING:`` (its ``else`` runs).
    ``from pkg import sub`` imports the submodule ``pkg.sub``; ``from pkg import name``, ``pkg``."""
    found: list[tuple[str, int]] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:  # relative: from the module's package (its own, for an __init__)
                parts = module.split(".")
                base = parts[: len(parts) - node.level + is_package]
                origin = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                found.append((sub if sub in known else origin, node.lineno))
        todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph(root: Path) -> Edges:
    """Which modules of the package at ``root`` each of its modules imports."""
    known = modules(root)
    graph: Edges = {}
    for name, path in known.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target, line in _imports(tree, name, path.name == "__init__.py", known):
            if target in known and target != name:
                edges[target] = min(line, edges.get(target, line))
        graph[name] = edges
    return graph


def cycles(graph: Edges) -> list[list[str]]:
    """One cycle through each group of modules that import each other (Tarjan's strongly connected
    components), as the path ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_in(group, graph) for group in groups]


def _path_in(group: set[str], graph: Edges) -> list[str]:
    """The shortest cycle from the group's first module back to itself, staying in the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in group and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in {group}")


def describe(cycle: list[str], graph: Edges) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_no_import_cycles_in_uipd():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and graph["uipd.testing"], "the graph holds the package's modules and their imports"
    found = cycles(graph)
    assert not found, "import cycles inside uipd/:\n" + "\n".join(describe(c, graph) for c in found)


def test_the_checker_sees_function_local_imports_and_skips_type_checking_ones(tmp_path):
    pkg = tmp_path / "uipd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from uipd.sub.b import B\n")
    (pkg / "a.py").write_text("from uipd.sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from uipd import c\nclass B: ...\n"
        "def late():\n    from uipd import a  # dodging the cycle\n    return a\n"
    )
    (pkg / "c.py").write_text("from . import a\nimport uipd.sub.b\n")
    graph = import_graph(pkg)
    assert graph["uipd.a"] == {"uipd.sub.b": 1}, "a submodule named in a from-import, not its package"
    assert graph["uipd.sub.b"] == {"uipd.a": 6}, "the function-local import counts, the TYPE_CHECKING one does not"
    assert graph["uipd.c"] == {"uipd.a": 1, "uipd.sub.b": 2}
    assert cycles(graph) == [["uipd.a", "uipd.sub.b", "uipd.a"]]
    assert describe(cycles(graph)[0], graph) == "uipd.a (line 1) -> uipd.sub.b (line 6) -> uipd.a"
