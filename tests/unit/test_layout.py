"""The code's layout keeps its promises (ARCHITECTURE.md, "Code map"): no import cycle, the tiers
never import the engine, the policy never imports the engine, modules small enough to hold in
one's head, and no module importing or reaching into another module's underscore names."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "tierstore"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODS = modules()


def _target(name: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_imports(name: str, path: Path) -> set[str]:
    """Modules ``name`` imports when it is imported (not under TYPE_CHECKING, not inside a
    function), including the packages those live in."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for n in nodes:
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(n, ast.ClassDef):
                visit(n.body)
            elif isinstance(n, ast.ImportFrom):
                tgt = _target(name, path, n)
                if tgt.startswith("tierstore"):
                    for a in n.names:
                        found.add(f"{tgt}.{a.name}" if f"{tgt}.{a.name}" in MODS else tgt)
            elif isinstance(n, ast.Import):
                found.update(a.name for a in n.names if a.name.startswith("tierstore"))
            elif isinstance(n, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(n, field, []) or [])
                for h in getattr(n, "handlers", []):
                    visit(h.body)

    visit(ast.parse(path.read_text()).body)
    for t in list(found):  # importing a.b.c runs a.b's __init__ too
        parts = t.split(".")
        for i in range(2, len(parts)):
            parent = ".".join(parts[:i])
            if parent in MODS and not name.startswith(parent + "."):
                found.add(parent)
    return {t for t in found if t in MODS and t != name}


GRAPH = {name: _top_level_imports(name, path) for name, path in MODS.items()}


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            strong(v)
    assert cycles == []


@pytest.mark.parametrize("package, forbidden", [("tierstore.tiers", "tierstore.engine"),
                                                ("tierstore.policy", "tierstore.engine"),
                                                ("tierstore.catalog", "tierstore.tiers."),
                                                ("tierstore", "tierstore.testing")])
def test_layering(package, forbidden):
    bad = {m: sorted(t for t in deps if t.startswith(forbidden))
           for m, deps in GRAPH.items() if m.startswith(package) and not m.startswith("tierstore.testing")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_modules_are_small():
    big = {name: n for name, p in MODS.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_no_module_uses_another_modules_private_names():
    """``from x import _name`` and ``module._name`` across tierstore modules."""
    bad = collections.defaultdict(list)
    for name, path in MODS.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and _target(name, path, n).startswith("tierstore"):
                tgt = _target(name, path, n)
                for a in n.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad[name].append(f"from {tgt} import {a.name}")
                    if f"{tgt}.{a.name}" in MODS:
                        aliases[a.asname or a.name] = f"{tgt}.{a.name}"
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                    and n.attr.startswith("_") and not n.attr.startswith("__")):
                bad[name].append(f"{n.value.id}.{n.attr}")
    assert dict(bad) == {}
