"""The folders show the layers: nothing in ``tars.mqtt._core`` does I/O or knows asyncio.

websockets keeps its sans-I/O ``protocol.py`` apart from ``asyncio/``; we keep ours in
``_core/``. The check reads the sources with ``ast`` (nothing is imported) and counts every
import statement, at any depth, ``if TYPE_CHECKING:`` included: a core module that needs asyncio
even for a type is no longer sans-I/O. The core also never imports the shell above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "tars" / "mqtt" / "_core"
FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "trio", "anyio", "uvloop"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
    return found


CORE_MODULES = sorted(CORE.glob("*.py"))


def test_the_core_package_is_not_empty() -> None:
    assert len(CORE_MODULES) >= 5, CORE_MODULES


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_does_no_io(path: Path) -> None:
    bad = [
        f"{path.name}:{line} imports {name}"
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
        or (
            name.startswith(("..", "tars.mqtt."))
            and any(part in name for part in ("_asyncio", "client", "testing", "_cli"))
        )
    ]
    assert not bad, bad


def test_the_rule_catches_an_asyncio_import(tmp_path: Path) -> None:
    """The check itself can fail: a module that imports asyncio under TYPE_CHECKING is found."""
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n")
    assert (3, "asyncio") in _imports(module)
