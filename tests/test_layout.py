"""The code's shape: no import cycle between packages, and no module too large to read."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "cafe_etl"
MAX_LINES = 450


def _unit(module: str) -> str:
    """The package a module belongs to (``pipeline``, ``warehouse``, …); a top-level
    module (``engine``, ``rules``, ``errors``, …) is a unit of its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[str, set[str]]:
    """Unit → the units its modules import (at any depth: local imports count too)."""
    graph: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        module = "cafe_etl." + ".".join(path.relative_to(SOURCE).with_suffix("").parts).removesuffix(".__init__")
        unit = _unit(module)
        graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cafe_etl"):
                names = [node.module] if node.module != "cafe_etl" else [f"cafe_etl.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("cafe_etl.")]
            graph[unit] |= {_unit(name) for name in names if _unit(name) not in (unit, "cafe_etl", "__version__")}
    return graph


def test_no_import_cycle_between_packages():
    graph = _imports()
    assert "pipeline" not in graph["warehouse"] and "warehouse" not in graph["engine"]
    cycles = []

    def visit(unit: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(unit, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif len(path) < len(graph):
                visit(nxt, path + [nxt])

    for unit in graph:
        visit(unit, [unit])
    assert cycles == []


def test_no_module_is_too_large_to_read():
    sizes = {path.relative_to(SOURCE).as_posix(): len(path.read_text().splitlines()) for path in SOURCE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
