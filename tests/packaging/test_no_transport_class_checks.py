"""No code of ours checks an event loop's or a transport's concrete class (issue 20).

uvloop's ``TCPTransport`` is no ``asyncio.Transport`` subclass: one ``assert isinstance(transport,
asyncio.Transport)`` in a ``connection_made`` kept every service under uvicorn from ever
connecting, and the same line in a test helper failed the uvloop pass. Protocols get what
asyncio promises them (``write``, ``pause_reading``, ``get_extra_info``...), nothing more. The
check reads the sources with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLASSES = {
    "Transport", "BaseTransport", "ReadTransport", "WriteTransport", "DatagramTransport",
    "SelectorEventLoop", "BaseEventLoop", "_SelectorSocketTransport", "_SSLProtocolTransport",
}  # fmt: skip
SOURCES = sorted(
    path
    for folder in ("src", "tests", "bench", "examples")
    for path in (ROOT / folder).rglob("*.py")
)


def _class_checks(tree: ast.AST) -> list[int]:
    """Lines of ``isinstance(x, asyncio.<one of CLASSES>)`` (a tuple of classes too)."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance"):
            continue
        if len(node.args) != 2:
            continue
        kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
        for kind in kinds:
            if (
                isinstance(kind, ast.Attribute)
                and kind.attr in CLASSES
                and getattr(kind.value, "id", None) == "asyncio"
            ):
                lines.append(node.lineno)
    return lines


def test_no_isinstance_against_asyncio_transport_or_loop_classes() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in SOURCES
        for line in _class_checks(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, found


@pytest.mark.parametrize(
    ("code", "lines"),
    [
        ("assert isinstance(t, asyncio.Transport)", [1]),
        ("ok = isinstance(t, (bytes, asyncio.BaseTransport))", [1]),
        ("x = cast(asyncio.Transport, t)", []),
    ],
)
def test_the_check_finds_what_it_looks_for(code: str, lines: list[int]) -> None:
    assert _class_checks(ast.parse(code)) == lines
