"""The how-to's examples run: every ``python`` block of docs/testing.md is a test module (the
page says so), run here by a fresh pytest process exactly as a service's suite would run it:
the plugin found through its entry point, pytest-asyncio in auto mode, warnings as errors.

(tests/docs/ compiles and type-checks the same blocks, like every block of docs/.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.subpytest import run_pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def pytest_blocks() -> list[str]:
    return _BLOCK.findall(DOC.read_text())


def test_every_example_of_the_how_to_is_a_test_module() -> None:
    blocks = pytest_blocks()
    assert len(blocks) >= 5
    for code in blocks:
        assert re.search(r"^async def test_", code, re.M), code


@pytest.mark.mosquitto
async def test_every_example_of_the_how_to_passes(tmp_path: Path) -> None:
    blocks = pytest_blocks()
    tests = 0
    for number, code in enumerate(blocks, start=1):
        (tmp_path / f"test_testing_md_{number}.py").write_text(code)
        tests += len(re.findall(r"^async def test_|^def test_", code, re.M))
    returncode, text = await run_pytest(tmp_path, "-rs", timeout=50)
    assert returncode == 0, text
    assert f"{tests} passed" in text, text
    assert "skipped" not in text, text
