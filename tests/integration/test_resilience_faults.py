"""Faults found from the outside (issue 12, D): a client id clash, one client object used under
two event loops. Against a real Mosquitto."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mqtt5 import PublishPacket

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import BackoffPolicy, ExponentialBackoff, MQTTClient, keepalive_topic
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


class RecordingBackoff:
    """Answers like ``inner`` and remembers the attempt numbers asked about."""

    def __init__(self, inner: BackoffPolicy, grown: asyncio.Event) -> None:
        self.inner = inner
        self.attempts: list[int] = []
        self.grown = grown  # set once the backoff is asked for attempt 3

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        self.attempts.append(attempt)
        if attempt >= 3:
            self.grown.set()
        return self.inner.next_delay(attempt, refused=refused)


async def test_two_clients_with_one_client_id_back_off_and_say_why(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto closes the older of two links with one client id, without a DISCONNECT: each
    client then looks like it lost its network. Without D6 both reconnected about 3 times a
    second for ever; now links that die right after being accepted keep the backoff growing,
    and the likely cause is logged once."""
    client_id = unique("clash")
    grown = asyncio.Event()
    policies = [
        RecordingBackoff(ExponentialBackoff(min_delay=0.05, max_delay=1.0), grown) for _ in "ab"
    ]
    clients = [MQTTClient(shared_mosquitto.url, client_id, backoff=p) for p in policies]
    warned: Inbox[str] = Inbox()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "another client" in record.getMessage():
                warned.add(record.getMessage())

    watch = Watch()
    logging.getLogger("tars.mqtt").addHandler(watch)
    try:
        await clients[0].connect()
        await clients[1].connect()
        await warned.wait_for(1, timeout=15)
        # The backoff grows: attempt numbers past the first few are asked for.
        async with asyncio.timeout(15):
            await grown.wait()
    finally:
        logging.getLogger("tars.mqtt").removeHandler(watch)
        for client in clients:
            await client.shutdown()
    assert client_id in warned.items[0]
    connects = sum(c.stats.connects for c in clients)
    print(f"\n[clash] {connects} connects before the backoff reached attempt 3")


def test_one_client_object_under_two_event_loops(shared_mosquitto: MosquittoBroker) -> None:
    """Two ``asyncio.run`` calls with one client: the second run has its heartbeat and its
    subscriptions too (loop objects are made at connect time, never in ``__init__``)."""
    client = MQTTClient(
        shared_mosquitto.url, unique("loops"), enable_heartbeat=True, heartbeat_interval=1
    )
    topic = unique("loops/topic")

    async def run_once(n: int) -> tuple[int, bytes]:
        beats: Inbox[None] = Inbox()
        got: Inbox[bytes] = Inbox()
        echo = keepalive_topic(client.client_id)

        def on_packet(packet: PublishPacket) -> None:
            if packet.topic == echo:
                beats.add(None)

        async def on_message(payload: bytes) -> None:
            got.add(payload)

        remove = client.add_message_listener(on_packet)
        try:
            async with client:
                await client.subscribe(topic, on_message, qos=1)
                await beats.wait_for(2, timeout=5)  # the heartbeat round trip works
                await client.publish(topic, b"run %d" % n, qos=1)
                [payload] = await got.wait_for(1)
                return client.stats.stale_links, payload
        finally:
            remove()

    assert asyncio.run(run_once(1)) == (0, b"run 1")
    assert asyncio.run(run_once(2)) == (0, b"run 2")
