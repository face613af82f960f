"""The import graph of agent/ and checkpoint/, read from the source with ast.

Every ``import`` counts: at module level, in a function, under ``if TYPE_CHECKING:``. An
edge goes to the module named: ``from a.b import c`` names ``a.b``, or only ``a.b.c`` when
``c`` is a module (``from . import tree`` uses the package's child, not the package). The
packages of the module named count too (importing ``agent.notices.protocol`` runs
``agent/notices/__init__.py``), except the importer's own packages: they are running
already, or every package whose ``__init__`` imports a child would be a cycle.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "checkpoint")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file."""
    return {
        module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def _absolute(name: str, path: Path, level: int, module: str | None) -> str:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, known: Iterable[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement of one module."""
    known = set(known)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(name, path, node.level, node.module) if node.level else node.module
            assert target is not None
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if len(submodules) < len(node.names):  # some names are the package's own
                yield target, node.lineno
            for sub in submodules:
                yield sub, node.lineno


def graph(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> dict[str, dict[str, int]]:
    """module -> {module of the tree it imports: first line}."""
    found = modules(root, packages)
    edges: dict[str, dict[str, int]] = {}
    for name, path in found.items():
        out = edges.setdefault(name, {})
        for target, line in imports_of(name, path, found):
            for module in _run_by_import(name, target):
                if module in found and module != name:
                    out.setdefault(module, line)
    return edges


def _run_by_import(importer: str, target: str) -> list[str]:
    """What importing ``target`` runs: its packages' ``__init__`` first (but not those of
    the importer's own packages, which are running already), then the module."""
    mine = set(_ancestors(importer))
    return [p for p in _ancestors(target) if p not in mine] + [target]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a
    cycle through its modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(_cycle_through(sorted(scc), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _cycle_through(scc: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """One cycle inside a component, for the message: from its first module back to it."""
    members, start = set(scc), scc[0]
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges.get(v, {})):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    return scc


def describe(path: list[str], edges: dict[str, dict[str, int]]) -> str:
    return (
        " -> ".join(f"{a} (line {edges[a][b]})" for a, b in itertools.pairwise(path))
        + f" -> {path[-1]}"
    )
