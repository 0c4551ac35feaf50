"""InMemoryBroker over TCP with Mosquitto's own clients as independent MQTT 5 and 3.1.1 peers.

mosquitto_pub and mosquitto_sub share no code with the broker or its tests, so they catch
what a self-consistent pair of our own would not (a field we encode where they do not expect it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import RawPeer, wait_until

pytestmark = pytest.mark.mosquitto

V5 = ("-V", "mqttv5")


@pytest.fixture
async def tcp_broker() -> AsyncIterator[tuple[InMemoryBroker, int]]:
    async with InMemoryBroker(name="mosquitto-clients") as broker:
        port = await broker.serve_tcp()
        yield broker, port


async def run(*args: str, timeout: float = 10) -> tuple[int, str]:
    """Run a Mosquitto client to completion: (exit status, output)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def publish(port: int, topic: str, message: str, *options: str) -> None:
    status, output = await run(
        "mosquitto_pub", *V5, "-p", str(port), "-t", topic, "-m", message, *options
    )
    assert status == 0, output


async def started_sub(
    broker: InMemoryBroker, client_id: str, *args: str
) -> asyncio.subprocess.Process:
    """Start mosquitto_sub and wait until the broker holds its subscription."""
    process = await asyncio.create_subprocess_exec(
        "mosquitto_sub",
        *V5,
        "-i",
        client_id,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    await wait_until(lambda: bool(broker.subscriptions(client_id)))
    return process


async def finished(process: asyncio.subprocess.Process, timeout: float = 10) -> str:
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output
    return output.decode()


async def test_mosquitto_sub_receives_what_mosquitto_pub_sends(
    tcp_broker: tuple[InMemoryBroker, int],
) -> None:
    broker, port = tcp_broker
    sub = await started_sub(
        broker, "sub", "-p", str(port), "-t", "sensors/#", "-q", "2", "-C", "3", "-F", "%q %t %p"
    )
    await publish(port, "sensors/a", "zero", "-q", "0")
    await publish(port, "sensors/b", "one", "-q", "1")
    await publish(port, "sensors/c", "two", "-q", "2")
    lines = (await finished(sub)).splitlines()
    assert lines == ["0 sensors/a zero", "1 sensors/b one", "2 sensors/c two"]


async def test_retained_message_from_mosquitto_pub(tcp_broker: tuple[InMemoryBroker, int]) -> None:
    broker, port = tcp_broker
    await publish(port, "cfg/mode", "eco", "-q", "1", "-r")
    assert broker.retained("cfg/mode") == b"eco"
    status, output = await run(
        "mosquitto_sub", *V5, "-p", str(port), "-t", "cfg/#", "-C", "1", "-F", "%r %t %p"
    )
    assert (status, output.strip()) == (0, "1 cfg/mode eco")


async def test_will_of_a_mosquitto_client_is_sent_when_dropped(
    tcp_broker: tuple[InMemoryBroker, int],
) -> None:
    broker, port = tcp_broker
    watcher = await RawPeer.over_tcp(port)
    await watcher.connect("watcher")
    await watcher.subscribe("status/#", qos=1)
    sub = await started_sub(
        broker,
        "willer",
        "-p",
        str(port),
        "-t",
        "anything",
        "--will-topic",
        "status/willer",
        "--will-payload",
        "offline",
        "--will-qos",
        "1",
    )
    try:
        await broker.drop_link("willer")
        got = await watcher.receive_publish()
        assert (got.topic, got.payload) == ("status/willer", b"offline")
    finally:
        sub.kill()
        await sub.wait()
        await watcher.disconnect()


async def test_persistent_mosquitto_session_gets_queued_messages(
    tcp_broker: tuple[InMemoryBroker, int],
) -> None:
    broker, port = tcp_broker
    first = await started_sub(broker, "keeper", "-p", str(port), "-t", "jobs/#", "-q", "1", "-c")
    first.kill()  # gone without DISCONNECT; the session (expiry "never", from -c) stays
    await first.wait()
    await wait_until(lambda: broker.connected_clients == [])
    await publish(port, "jobs/1", "a", "-q", "1")
    await publish(port, "jobs/2", "b", "-q", "1")
    assert broker.sessions()["keeper"].queued == 2
    status, output = await run(
        "mosquitto_sub",
        *V5,
        "-p",
        str(port),
        "-i",
        "keeper",
        "-c",
        "-t",
        "jobs/#",
        "-q",
        "1",
        "-C",
        "2",
        "-F",
        "%t %p",
    )
    assert (status, output.splitlines()) == (0, ["jobs/1 a", "jobs/2 b"])


async def test_mqtt_311_mosquitto_clients_talk_to_mqtt5_ones(
    tcp_broker: tuple[InMemoryBroker, int],
) -> None:
    broker, port = tcp_broker
    v311 = ("-V", "mqttv311")
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub", *v311, "-i", "old-sub", "-p", str(port), "-t", "mix/#", "-q", "2",
        "-C", "2", "-F", "%q %t %p",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    await wait_until(lambda: bool(broker.subscriptions("old-sub")))
    await publish(port, "mix/a", "from-5", "-q", "2", "-D", "publish", "user-property", "k", "v")
    status, output = await run(
        "mosquitto_pub", *v311, "-p", str(port), "-t", "mix/b", "-m", "from-311", "-q", "1"
    )
    assert status == 0, output
    lines = (await finished(sub)).splitlines()
    assert lines == ["2 mix/a from-5", "1 mix/b from-311"]


async def test_mqtt_31_mosquitto_client_is_refused(tcp_broker: tuple[InMemoryBroker, int]) -> None:
    broker, port = tcp_broker
    status, output = await run(
        "mosquitto_pub", "-V", "mqttv31", "-p", str(port), "-t", "t", "-m", "x"
    )
    assert status != 0
    assert "unacceptable protocol version" in output
    assert broker.connected_clients == []


async def test_refused_subscription_reaches_mosquitto_sub(
    tcp_broker: tuple[InMemoryBroker, int],
) -> None:
    broker, port = tcp_broker
    broker.refuse_subscriptions("private/#")
    status, output = await run("mosquitto_sub", *V5, "-p", str(port), "-t", "private/x", "-E", "-d")
    assert status == 0, output
    assert "Subscribed (mid: 1): 135" in output  # 0x87, not authorized
    assert "All subscription requests were denied" in output
    # No client id given: mosquitto_sub (v5) leaves it to the broker, which assigned one.
    assert "received CONNACK (0)" in output
    assert "Client auto-" in output
