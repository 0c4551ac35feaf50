"""Colour on a terminal, plain text in a pipe (the other tests read pipes)."""

from __future__ import annotations

import asyncio
import os
import pty

import pytest

from support.cli_process import TARS_MQTT
from support.mosquitto_cli import connected_client, unique
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


async def _read_until(fd: int, text: bytes, timeout: float = 15.0) -> bytes:
    """Read the terminal's output until ``text`` shows up (a reader thread: pty reads block)."""
    seen = b""
    async with asyncio.timeout(timeout):
        while text not in seen:
            seen += await asyncio.to_thread(os.read, fd, 4096)
    return seen


@pytest.mark.parametrize(("no_color", "coloured"), [("", True), ("1", False)])
async def test_sub_colours_a_terminal_unless_no_color(
    shared_mosquitto: MosquittoBroker, no_color: str, coloured: bool
) -> None:
    topic = unique("cli-tty")
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        TARS_MQTT, "sub", topic, "-n", "1", "--url", shared_mosquitto.url,
        stdout=slave, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": no_color},
    )  # fmt: skip
    os.close(slave)
    try:
        assert process.stderr is not None
        assert b"subscribed" in await asyncio.wait_for(process.stderr.readline(), 15)
        async with connected_client(shared_mosquitto, "cli-tty") as client:
            await client.publish_event(topic, "tty.test", {"x": 1}, qos=1)
        out = await _read_until(master, b'{"x":1}')
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)
    assert (b"\x1b[1mtty.test\x1b[0m" in out) is coloured
    assert (b"\x1b[" in out) is coloured
