"""Run a small test suite in a fresh pytest process, as a service's own suite would be run."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def run_pytest(directory: Path, *extra: str, timeout: float) -> tuple[int, str]:
    """pytest on ``directory`` (warnings as errors, asyncio auto mode, no cache) in a fresh
    process; return its exit code and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        *extra,
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        str(directory),
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, output.decode()
