"""The dev broker on the command line: ``python -m tars.mqtt.testing``, ``tars-mqtt broker``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from unit.testing.raw_peer import RawPeer

TARS_MQTT = str(Path(sys.executable).with_name("tars-mqtt"))
COMMANDS = {
    "module": [sys.executable, "-m", "tars.mqtt.testing"],
    "script": [TARS_MQTT, "broker"],
}


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
async def test_runs_until_ctrl_c_and_prints_its_url(command: list[str]) -> None:
    process = await start(*command, "--port", "0")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        assert "not for production" in line
        url = line.split()[-1]
        assert url.startswith("mqtt://127.0.0.1:")
        peer = await RawPeer.over_tcp(int(url.rsplit(":", 1)[1]))
        await peer.connect("cli-user")
        await peer.subscribe("t", qos=1)
        await peer.publish("t", b"hello", qos=1)
        assert (await peer.receive_publish()).payload == b"hello"
        process.send_signal(signal.SIGINT)
        disconnect = await peer.next()
        assert getattr(disconnect, "reason_code", None) == 0x8B  # server shutting down
        await peer.expect_closed()
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        await stop(process)


async def test_sigterm_stops_it_cleanly() -> None:
    process = await start(*COMMANDS["module"], "--port", "0")
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        await asyncio.wait_for(process.stdout.readline(), 15)
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert await process.stderr.read() == b""
    finally:
        await stop(process)


async def test_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await start(*COMMANDS["script"], "--port", str(port))
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 15)
        finally:
            await stop(process)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in stderr.decode()


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
async def test_help_says_it_is_a_dev_and_test_broker(command: list[str]) -> None:
    process = await start(*command, "--help")
    stdout, _ = await asyncio.wait_for(process.communicate(), 15)
    text = " ".join(stdout.decode().split())
    assert process.returncode == 0
    assert "development and test MQTT 5 and 3.1.1 broker" in text
    assert "never use it in production" in text
    assert "--port" in text


async def test_tars_mqtt_needs_a_command() -> None:
    process = await start(TARS_MQTT)
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 2
    assert "broker" in stderr.decode()


async def test_ws_port_adds_a_websocket_listener() -> None:
    from tars.mqtt import Message, MQTTClient

    process = await start(*COMMANDS["script"], "--port", "0", "--ws-port", "0")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        assert "not for production" in line
        ws_url = line.split()[-1]
        assert ws_url.startswith("ws://127.0.0.1:")
        assert ws_url.endswith("/mqtt")
        got: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def keep(message: Message) -> None:
            if not got.done():
                got.set_result(message)

        async with MQTTClient(ws_url, "cli-ws", wait_for_broker=False) as client:
            await client.subscribe("t/ws", keep, qos=1)
            await client.publish("t/ws", b"over websockets", qos=1)
            message = await asyncio.wait_for(got, 10)
        assert (message.payload, message.qos) == (b"over websockets", 1)
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        await stop(process)
