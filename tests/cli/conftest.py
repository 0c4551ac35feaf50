"""Fixtures of the CLI tests: processes started here are killed (by PID) after each test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from support.cli_process import Proc, Spawn


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """``await spawn(*argv, env=None)``: start a process with its stdout and stderr piped."""
    started: list[Proc] = []

    async def start(*argv: str, env: dict[str, str] | None = None) -> Proc:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        proc = Proc(process)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        await proc.process.wait()
