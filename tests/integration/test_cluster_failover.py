"""Failover on a real 3-node ejabberd cluster: nodes killed with ``kill -9`` under a QoS 1 stream.

A subscriber with dedup on, on node 1, and a producer on node 0, each given the whole cluster as
a broker list. Node 1 dies mid-stream: the subscriber must be back on another node within a
second with the default settings and never handle an event twice. Then the producer's node
dies: its QoS 1 events are resent on the next node, so every one of them is acknowledged (the
producer's loss is 0). What the subscriber misses is only what the broker dropped with the dead
node (ejabberd keeps a session on one node only: the messages of the gap had nobody to go to);
the test prints the figures.
"""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from support.ejabberd import EjabberdCluster
from support.mosquitto_cli import Inbox, unique
from support.stream import PacedStream
from tars.mqtt import Envelope, MQTTClient

pytestmark = [pytest.mark.ejabberd, pytest.mark.slow]

EVENTS = 3000
BATCH = 50  # events per pacing step: about 1,000 a second, so the kills land mid-stream


def urls(cluster: EjabberdCluster, *order: int) -> str:
    return ",".join(cluster.nodes[i].url for i in order)


async def test_subscriber_and_producer_survive_their_nodes_being_killed(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    cluster = ejabberd_cluster
    topic = unique("cluster/jobs")
    handled: collections.Counter[int] = collections.Counter()
    last = asyncio.Event()

    async def on_job(event: Envelope) -> None:
        seq = event.data["n"]
        handled[seq] += 1
        if seq == EVENTS - 1:
            last.set()

    subscriber = MQTTClient(
        urls(cluster, 1, 2, 0), unique("worker"), dedupe_ttl=60, dedupe_max_entries=100_000
    )
    producer = MQTTClient(urls(cluster, 0, 2), unique("producer"))
    ups: Inbox[float] = Inbox()

    @subscriber.on_connect
    async def subscriber_up() -> None:
        ups.add(time.monotonic())

    producer_ups: Inbox[str] = Inbox()

    @producer.on_connect
    async def producer_up() -> None:
        producer_ups.add(producer.broker)

    await subscriber.subscribe(topic, on_job, qos=1)
    stream = PacedStream(producer, lambda n: topic, events=EVENTS, batch=BATCH, pause=0.05)
    half, two_thirds = stream.passed(EVENTS // 3), stream.passed(2 * EVENTS // 3)

    async with subscriber, producer:
        await ups.wait_for(1)
        assert subscriber.broker == cluster.nodes[1].redacted_url
        streaming = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(half.wait(), timeout=30)
            killed_at = time.monotonic()
            await cluster.akill(1)  # the subscriber's node
            [_, back] = await ups.wait_for(2, timeout=10)
            failover = back - killed_at
            assert subscriber.broker != cluster.nodes[1].redacted_url

            await asyncio.wait_for(two_thirds.wait(), timeout=30)
            await cluster.akill(0)  # the producer's node
            [_, moved_to] = await producer_ups.wait_for(2, timeout=10)
            assert moved_to == cluster.nodes[2].redacted_url
            await asyncio.wait_for(streaming, timeout=60)
            # Every QoS 1 event was acknowledged by a broker: publish-side resends lost nothing.
            await producer.flush(timeout=30)
            await asyncio.wait_for(last.wait(), timeout=30)
        finally:
            streaming.cancel()

    twice = [n for n, count in handled.items() if count > 1]
    lost = EVENTS - len(handled)
    print(
        f"\ncluster failover: subscriber back on another node {failover:.3f} s after kill -9; "
        f"handled {len(handled)} of {EVENTS}, lost with the dead nodes {lost}, "
        f"handled twice {len(twice)}; producer stats {producer.stats.published} published"
    )
    assert failover < 1.0
    assert twice == []
    assert lost < EVENTS // 3  # only the gap while nobody was subscribed anywhere


async def test_shared_subscription_on_a_broker_without_them_fails_at_once(
    ejabberd_cluster: EjabberdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """ejabberd's CONNACK says it has no ``$share``: subscribing fails with SubscribeError at
    once, before or after connect(), and the link stays up (ejabberd would DISCONNECT 0x9E)."""
    from tars.mqtt import SubscribeError

    async def on_job(payload: bytes) -> None:
        pass

    client = MQTTClient(ejabberd_cluster.nodes[0].url, unique("group"), wait_for_broker=False)
    await client.subscribe("$share/workers/jobs", on_job, qos=1)  # before connect: restored
    ups: Inbox[float] = Inbox()

    @client.on_connect
    async def connected() -> None:
        ups.add(time.monotonic())

    async with client:
        assert "does not offer shared subscriptions" in caplog.text
        with pytest.raises(SubscribeError, match="0x9e"):
            await client.subscribe("$share/workers/more", on_job, qos=1)
        await client.publish(unique("still/up"), b"x", qos=1)  # the link is still up
        assert client.connected
        assert len(ups.items) == 1  # never reconnected
