"""No import circle anywhere under ``src/tars``.

Two modules that import each other can only be read, tested and changed together, and the one
imported first sees the other half-initialised. The graph is built from the sources with
``ast`` (nothing is imported): every ``import``/``from ... import`` of a module of ours,
wherever it stands (module level, inside a function, inside ``if TYPE_CHECKING:``).

Imports under ``if TYPE_CHECKING:`` never run, but they are counted on purpose: a circle that
exists only for the type checker still means neither module can be understood without the
other (the circle issue 10 names, ``_broker_core`` <-> ``_broker_link``, was of that kind).
What is not counted is the implicit import of a parent package (``tars.mqtt`` when
``tars.mqtt._x`` is imported): Python runs it first and it is never a circle of our making.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# edges[importer][imported] = line of the first import statement that makes the edge
Graph = dict[str, dict[str, int]]


def module_names(src: Path) -> dict[str, Path]:
    """Every module under ``src/tars`` by dotted name (a package by its ``__init__.py``)."""
    names: dict[str, Path] = {}
    for path in sorted((src / "tars").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, names: Mapping[str, Path]
) -> Iterator[str]:
    """Our modules an import statement runs: ``from pkg import sub`` is ``pkg.sub``, and
    ``from module import name`` is ``module``."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in names)
        return
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    for alias in node.names:
        if f"{base}.{alias.name}" in names:
            yield f"{base}.{alias.name}"
        elif base in names:
            yield base


def import_graph(src: Path) -> Graph:
    """Which of our modules each of our modules imports, with the line that does it."""
    names = module_names(src)
    graph: Graph = {name: {} for name in names}
    for module, path in names.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, module, is_package, names):
                    if target != module:
                        graph[module].setdefault(target, node.lineno)
    return graph


def find_cycles(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per back edge a depth-first walk finds; [] when none."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, {})):
            if target in on_path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target)
        on_path.discard(path.pop())
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return cycles


def describe(cycle: list[str], graph: Graph) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def test_no_import_cycle_in_src() -> None:
    graph = import_graph(SRC)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles under src/tars:\n  " + "\n  ".join(
        describe(cycle, graph) for cycle in cycles
    )


def test_the_graph_sees_relative_absolute_and_type_checking_imports() -> None:
    """Guards the test above against passing because it reads no edge at all."""
    graph = import_graph(SRC)
    assert len(graph) > 30
    # relative, module level: ``from ._broker_core import ...``
    assert "tars.mqtt.testing._broker_core" in graph["tars.mqtt.testing._broker"]
    # relative, two levels up: ``from .._errors import ...``
    assert "tars.mqtt._errors" in graph["tars.mqtt.testing._broker"]
    # absolute: ``from tars.mqtt import ClientOptions, MQTTClient``
    assert "tars.mqtt" in graph["tars.mqtt.testing.pytest_plugin"]


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    package = tmp_path / "tars" / "demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_a.py").write_text("from ._b import B\nA = 1\n")
    (package / "_b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._c import C\nB = 2\n"
    )
    (package / "_c.py").write_text("def f() -> int:\n    from . import _d, _a\n    return _a.A\n")
    (package / "_d.py").write_text("")
    graph = import_graph(tmp_path)
    cycles = find_cycles(graph)
    assert cycles == [["tars.demo._a", "tars.demo._b", "tars.demo._c", "tars.demo._a"]]
    assert "tars.demo._b (line 3) -> tars.demo._c" in describe(cycles[0], graph)
