"""Run the real ``tars-mqtt`` (the installed script) and read what a person would see.

Every wait is on a line of output with a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

__all__ = ["SERVICE", "TARS_MQTT", "Proc", "Spawn"]

TARS_MQTT = str(Path(sys.executable).with_name("tars-mqtt"))
SERVICE = str(Path(__file__).resolve().parents[1] / "cli" / "service.py")


class Proc:
    """A started process whose stdout is read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def line(self, timeout: float = 10.0) -> str:
        """The next line of stdout (without its newline); EOFError when the output ended."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            raise EOFError(f"output ended; seen so far: {self.seen!r}")
        text = raw.decode().rstrip("\n")
        self.seen.append(text)
        return text

    async def line_with(self, text: str, timeout: float = 10.0) -> str:
        """The first line (from now) containing ``text``."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.line(timeout)
                if text in line:
                    return line

    async def block(self, timeout: float = 10.0) -> list[str]:
        """The next lines up to a blank line (one table of the live ``fleet``)."""
        lines: list[str] = []
        while (line := await self.line(timeout)) != "":
            lines.append(line)
        return lines

    async def block_where(
        self, predicate: Callable[[list[str]], bool], timeout: float = 15.0
    ) -> list[str]:
        """The first block (from now) for which ``predicate`` holds; the last one shown if not."""
        last: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await self.block(timeout)
                    if predicate(last):
                        return last
        except TimeoutError:
            raise AssertionError("no such table; the last one:\n" + "\n".join(last)) from None

    async def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        """Wait for the exit; return (status, rest of stdout, stderr)."""
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


class Spawn(Protocol):
    """The type of the ``spawn`` fixture."""

    async def __call__(self, *argv: str, env: dict[str, str] | None = None) -> Proc: ...
