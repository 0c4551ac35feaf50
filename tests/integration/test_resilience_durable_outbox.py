"""Fault test: the durable outbox (``outbox_path``) across a kill -9 of the publisher (issue 12 B).

The broker is stopped; a real publisher process accepts N QoS 1 events while no link is up and
is killed -9 by its PID; the broker comes back; a new process with the same client id and path
delivers all N. An independent ``mosquitto_sub`` says what reached the broker: every id, in
order, exactly once, and the outbox file is empty at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from support.cli_process import Proc
from support.mosquitto_cli import MosquittoSub, unique
from tars.mqtt import (
    ClientState,
    ClientStateError,
    ExponentialBackoff,
    MQTTClient,
    MQTTClientConfig,
)
from tars.mqtt._core.durable import DurableOutbox
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

N = 200
PUBLISHER = str(Path(__file__).resolve().parents[1] / "support" / "outbox_publisher.py")


async def publisher(*argv: str) -> Proc:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        PUBLISHER,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Proc(process)


def stored(path: Path) -> int:
    """Records in the outbox file (opened only while no publisher holds it)."""
    with DurableOutbox(path, max_messages=N * 2, max_bytes=1 << 20) as box:
        return box.count


async def test_events_accepted_offline_survive_a_kill_9_and_are_delivered_once_in_order(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    client_id, topic = unique("durable-pub"), unique("durable") + "/events"
    directory = tmp_path / "outbox"
    file = MQTTClientConfig(
        mqtt_url=broker.url, client_id=client_id, outbox_path=directory
    ).outbox_file
    assert file is not None
    await broker.astop()

    first = await publisher("accept", broker.url, client_id, str(directory), topic, str(N))
    try:
        started = time.perf_counter()
        assert await first.line(timeout=30) == f"ACCEPTED {N}"
        accepted_in = time.perf_counter() - started
        os.kill(first.process.pid, signal.SIGKILL)
        status = await first.process.wait()
    finally:
        first.kill()
    assert status == -signal.SIGKILL
    assert stored(file) == N  # every accepted event is on disk, nothing else

    await broker.astart()
    async with MosquittoSub(broker, topic, qos=1) as observer:
        second = await publisher("deliver", broker.url, client_id, str(directory), topic)
        try:
            assert await second.line(timeout=30) == "DELIVERED"
            code, _, err = await second.finish(timeout=30)
        finally:
            second.kill()
        assert code == 0, err
        # The marker was published after the backlog was loaded: it arrives after every
        # event and after any duplicate of one, so this is everything that will arrive.
        received = await observer.messages.wait_for(N + 1, timeout=30)

    payloads = [m.payload.decode() for m in received]
    assert payloads == [str(n) for n in range(N)] + ["end"]
    assert all(m.qos == 1 for m in received)
    assert stored(file) == 0
    print(f"\n{N} events accepted offline in {accepted_in:.2f} s (process start included)")


async def test_shutdown_keeps_offline_events_and_the_next_connect_sends_them(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    topic = unique("durable") + "/kept"
    await broker.astop()
    client = MQTTClient(
        broker.url,
        unique("durable-kept"),
        outbox_path=tmp_path,
        backoff=ExponentialBackoff(min_delay=0.05, max_delay=0.2, refused_delay=0.1),
    )
    connecting = asyncio.create_task(client.connect())
    while client.state is ClientState.CREATED:
        await asyncio.sleep(0)
    for n in range(5):
        await client.publish(topic, str(n), qos=1, wait=False)
    await client.shutdown()
    with pytest.raises(ClientStateError):
        await connecting
    assert client.stats.outbox_dropped == 0  # kept on disk, not dropped
    await broker.astart()
    async with MosquittoSub(broker, topic, qos=1) as observer:
        await client.connect()  # the same object again: the file is opened anew
        try:
            await client.flush(timeout=10)
            received = await observer.messages.wait_for(5)
        finally:
            await client.shutdown()
    assert [m.payload.decode() for m in received] == [str(n) for n in range(5)]


async def test_a_stored_record_that_no_longer_passes_is_dropped_and_the_rest_delivered(
    shared_mosquitto: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record with ``retain`` among its properties (which the checks of an earlier version
    let through) used to raise a bare TypeError inside the link's callback at each CONNACK:
    the link dropped, the client reconnected into the same record, for ever, at every start.
    Now it is dropped when the file is loaded (logged, counted) and the others are sent; so is
    a record whose properties column was damaged (it failed every start with a JSON error)."""
    broker = shared_mosquitto
    client_id, topic = unique("durable-bad"), unique("durable") + "/bad"
    file = MQTTClientConfig(
        mqtt_url=broker.url, client_id=client_id, outbox_path=tmp_path
    ).outbox_file
    assert file is not None
    with DurableOutbox(file, max_messages=10, max_bytes=1 << 20) as box:  # the earlier run
        box.append(topic, b"before", 1)
        box.append(topic, b"bad", 1, properties={"retain": True})
        damaged = box.append(topic, b"damaged", 1, properties={"content_type": "x"}).seq
        box.append(topic, b"after", 1, properties={"content_type": "text/plain"})
    db = sqlite3.connect(file)  # and one record's properties damaged on the disk
    db.execute("UPDATE outbox SET properties = '{not json' WHERE seq = ?", (damaged,))
    db.commit()
    db.close()
    async with MosquittoSub(broker, topic, qos=1) as observer:
        client = MQTTClient(broker.url, client_id, outbox_path=tmp_path, enable_health=False)
        async with client:
            await client.flush(timeout=10)
            await client.publish(topic, b"end", qos=1)  # after all the backlog, on one link
            received = await observer.messages.wait_for(3, timeout=10)
            stats = client.stats
    assert [m.payload for m in received] == [b"before", b"after", b"end"]
    assert stats.connects == 1  # no link was lost to it
    assert stats.properties_dropped == 0  # still MQTT 5: no fallback after a lost link
    assert stats.outbox_dropped == 2
    assert stored(file) == 0
    assert "can no longer be sent" in caplog.text
    assert "cannot be read back" in caplog.text
