"""A worker group: three instances of one service share a ``$share`` subscription on Mosquitto.

Issue 13's "N instances of a service share work without stepping on each other", on the broker
that has shared subscriptions (ejabberd has none, see test_cluster_instances.py). The instances
are configured as a replicated service is (one ``client_id``, ``instance=`` a, b, c); 10,000
QoS 1 events must each be handled exactly once, by one instance, and each instance must get a
share of the work. Killing a member mid-stream is the reliability issue's test (it needs
acknowledgement after handling to lose nothing).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import pytest

from support.mosquitto_cli import unique
from support.stream import PacedStream
from tars.mqtt import Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

EVENTS = 10_000


async def test_three_instances_share_a_stream_each_event_handled_once(
    mosquitto_broker: MosquittoBroker,
) -> None:
    service, topic = unique("stt"), unique("jobs")
    handled: collections.Counter[int] = collections.Counter()
    by_instance: collections.Counter[str] = collections.Counter()
    topics: set[str] = set()
    done = asyncio.Event()

    def worker(name: str) -> tuple[MQTTClient, Callable[[Message], Awaitable[None]]]:
        client = MQTTClient(mosquitto_broker.url, service, instance=name)

        async def on_job(message: Message) -> None:
            handled[message.envelope.data["n"]] += 1
            by_instance[client.client_id] += 1
            topics.add(message.topic)
            if len(handled) == EVENTS:
                done.set()

        return client, on_job

    workers = []
    for name in ("a", "b", "c"):
        client, on_job = worker(name)
        await client.subscribe(f"$share/{service}/{topic}", on_job, qos=1)  # sent on connect
        workers.append(client)
    producer = MQTTClient(mosquitto_broker.url, unique("producer"))
    stream = PacedStream(producer, lambda n: topic, events=EVENTS, batch=500, pause=0.0)
    async with producer, workers[0], workers[1], workers[2]:
        await asyncio.wait_for(stream.run(), timeout=30)
        await producer.flush(timeout=30)
        await asyncio.wait_for(done.wait(), timeout=30)

    twice = [n for n, count in handled.items() if count > 1]
    print(
        f"\n$share group of 3 on Mosquitto, {EVENTS} QoS 1 events: per instance {dict(by_instance)}"
    )
    assert (len(handled), twice) == (EVENTS, [])
    assert topics == {topic}  # the handler sees the real topic, not the $share filter
    assert set(by_instance) == {f"{service}-{name}" for name in ("a", "b", "c")}
    assert min(by_instance.values()) > EVENTS // 10  # everyone got a share of the work
