"""Failover on a real 3-node RabbitMQ cluster (MQTT 3.1.1): nodes killed with ``kill -9`` under
a QoS 1 stream. The ejabberd failover tests (``test_cluster_failover.py``,
``test_cluster_instances.py``) run here too, and RabbitMQ's own question is measured: what of a
persistent MQTT session, which RabbitMQ keeps in a queue, survives its node's death.

The services use ``protocol="auto"`` (the default): on each node they try MQTT 5 once, RabbitMQ
closes the link, they speak 3.1.1 from then on; the failover times include that. Every test
prints its figures; docs/scale-out.md quotes them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.mosquitto_cli import Inbox, unique
from support.rabbitmq import RabbitMQCluster
from support.stream import PacedStream
from tars.mqtt import Envelope, MQTTClient

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.timeout(300)]


def urls(cluster: RabbitMQCluster, *order: int) -> str:
    return ",".join(cluster.nodes[i].url for i in order)


def spans(numbers: list[int], step: int = 1) -> str:
    """``[1, 2, 3, 7]`` as ``"1-3, 7"``: the gaps, for the printed figures."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n - runs[-1][-1] == step:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


class Watched:
    """A client, what its handler got (``{"n": ...}`` events), and when it (re)connected."""

    def __init__(self, url: str, client_id: str, *, last: int, **options: Any) -> None:
        self.client = MQTTClient(
            url, client_id, dedupe_ttl=60, dedupe_max_entries=100_000, **options
        )
        self.handled: collections.Counter[int] = collections.Counter()
        self.arrivals: list[tuple[float, int]] = []
        self.ups: Inbox[tuple[float, str]] = Inbox()
        self.done = asyncio.Event()
        self._last = last
        self.client.on_connect(self._up)

    async def _up(self) -> None:
        self.ups.add((time.monotonic(), self.client.broker))

    async def on_job(self, event: Envelope) -> None:
        n = event.data["n"]
        self.handled[n] += 1
        self.arrivals.append((time.monotonic(), n))
        if n >= self._last:
            self.done.set()

    def lost(self, expected: Iterator[int] | range) -> list[int]:
        return sorted(set(expected) - self.handled.keys())

    def twice(self) -> list[int]:
        return [n for n, count in self.handled.items() if count > 1]


# A persistent session in a quorum queue: what docs/scale-out.md tells a RabbitMQ fleet to use.
# RabbitMQ 3.10 declares the QoS 1 queue of a *clean* session durable (auto-delete, classic) on
# the client's node; when that node dies it either deletes the queue at once or keeps it, and
# refuses the client's subscription on every other node, until the node is back (see
# test_a_clean_session_subscriber_is_back_at_the_latest_with_its_queues_node below).
PERSISTENT: dict[str, Any] = {"session_expiry_interval": 3600, "clean_start": False}


@pytest.fixture
async def session_queues(rabbitmq_cluster: RabbitMQCluster) -> Any:
    """Gives the test a way to choose the queue type of persistent sessions; classic again
    afterwards (RabbitMQ's default, what the other tests expect)."""
    yield rabbitmq_cluster.aset_durable_queue_type
    await rabbitmq_cluster.arevive()
    await rabbitmq_cluster.aset_durable_queue_type("classic")


async def test_subscriber_and_producer_survive_their_nodes_being_killed(
    rabbitmq_cluster: RabbitMQCluster, session_queues: Any
) -> None:
    """test_cluster_failover.py on RabbitMQ: the subscriber's node dies a third into a stream
    of 3,000 QoS 1 events, the producer's node two thirds in. The subscriber has a persistent
    session in a quorum queue. The first node is started again before the second dies:
    RabbitMQ's client-id tracking and its quorum queues are Raft groups, which need a majority
    of the nodes (the stream waits at half-way until it is back)."""
    await session_queues("quorum")
    cluster = rabbitmq_cluster
    events = 3000
    topic = unique("rmq/jobs")
    subscriber = Watched(urls(cluster, 1, 2, 0), unique("worker"), last=events - 1, **PERSISTENT)
    producer = MQTTClient(urls(cluster, 0, 2), unique("producer"))
    producer_ups: Inbox[str] = Inbox()

    @producer.on_connect
    async def producer_up() -> None:
        producer_ups.add(producer.broker)

    await subscriber.client.subscribe(topic, subscriber.on_job, qos=1)
    stream = PacedStream(producer, lambda n: topic, events=events, batch=50, pause=0.05)
    third, two_thirds = stream.passed(events // 3), stream.passed(2 * events // 3)
    majority_again = stream.hold_at(events // 2)

    async with subscriber.client, producer:
        await subscriber.ups.wait_for(1, timeout=15)
        assert subscriber.client.broker == cluster.nodes[1].redacted_url
        streaming = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(third.wait(), timeout=30)
            killed_at = time.monotonic()
            await cluster.akill(1)  # the subscriber's node
            [_, (back, where)] = await subscriber.ups.wait_for(2, timeout=15)
            failover = back - killed_at
            assert where == cluster.nodes[2].redacted_url
            await cluster.astart_node(1)
            majority_again.set()

            await asyncio.wait_for(two_thirds.wait(), timeout=30)
            await cluster.akill(0)  # the producer's node
            [_, moved_to] = await producer_ups.wait_for(2, timeout=15)
            assert moved_to == cluster.nodes[2].redacted_url
            await asyncio.wait_for(streaming, timeout=60)
            # Every QoS 1 event was acknowledged by a broker: publish-side resends lost nothing.
            await producer.flush(timeout=60)
            await asyncio.wait_for(subscriber.done.wait(), timeout=60)
        finally:
            streaming.cancel()

    lost = subscriber.lost(range(events))
    stats = producer.stats
    print(
        f"\nRabbitMQ failover (persistent session, quorum queue): subscriber back on node 3 "
        f"{failover:.3f} s after kill -9; handled {len(subscriber.handled)} of {events}, lost "
        f"{len(lost)} ({spans(lost)}), handled twice {len(subscriber.twice())}, deduplicated "
        f"{subscriber.client.stats.deduplicated}; producer {stats.published} published, "
        f"{stats.publish_failed} refused, {stats.outbox_dropped} dropped"
    )
    assert failover < 1.0
    assert subscriber.twice() == []
    assert stats.publish_failed == 0
    assert stats.outbox_dropped == 0
    assert lost == []  # the queue outlived the node: what the broker took, it delivered


async def test_a_clean_session_subscriber_is_back_at_the_latest_with_its_queues_node(
    rabbitmq_cluster: RabbitMQCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean-session subscriber (the client's default) on RabbitMQ's defaults: its QoS 1
    queue is durable, on its node. After that node's ``kill -9`` RabbitMQ 3.10 either deletes
    the queue at once (the subscriber is back on another node within a second) or keeps it and
    closes every new link of that client id on its first SUBSCRIBE until the node is back (a
    race inside RabbitMQ: about one run in three here). Either way the client keeps trying,
    says why at each refusal, and handles events again once RabbitMQ takes its subscription:
    at the latest right after the node is back."""
    caplog.set_level(logging.INFO, "tars.mqtt")  # each refusal: a WARNING first, then INFO
    cluster = rabbitmq_cluster
    topic = unique("rmq/clean")
    subscriber = Watched(urls(cluster, 1, 2, 0), unique("clean"), last=1_000_000)
    producer = MQTTClient(urls(cluster, 0, 2), unique("producer"))
    await subscriber.client.subscribe(topic, subscriber.on_job, qos=1)
    refused = "ended before it was ready"
    async with subscriber.client, producer:
        await subscriber.ups.wait_for(1, timeout=15)
        killed_at = time.monotonic()
        await cluster.akill(1)  # the subscriber's node, where its queue is
        try:
            await subscriber.ups.wait_for(2, timeout=5)
            outcome = f"back on another node {subscriber.ups.items[1][0] - killed_at:.2f} s after"
        except TimeoutError:
            # RabbitMQ kept the queue: the client was refused, and said so, at every attempt.
            said = [r for r in caplog.records if refused in r.getMessage()]
            assert said, "5 s without a link and no word why"
            assert "mqtt://tars:***@" in said[0].getMessage()  # the broker named, redacted
            await cluster.astart_node(1)
            back_at = time.monotonic()
            await subscriber.ups.wait_for(2, timeout=30)
            outcome = (
                f"refused {len(said)} times in 5 s, back "
                f"{subscriber.ups.items[1][0] - back_at:.2f} s after its node"
            )
        # The subscription is live again: a new event reaches the handler.
        n = 1_000_000
        await producer.publish_event(topic, "job", {"n": n}, qos=1)
        await asyncio.wait_for(subscriber.done.wait(), timeout=15)
    print(f"\nclean-session subscriber on RabbitMQ, its node killed -9: {outcome}")


INSTANCES = ("a", "b", "c")
ORDERS = {"a": (0, 2, 1), "b": (1, 0, 2), "c": (2, 0, 1)}


async def test_three_instances_on_three_nodes_survive_their_nodes_being_killed(
    rabbitmq_cluster: RabbitMQCluster, session_queues: Any
) -> None:
    """test_cluster_instances.py on RabbitMQ: one service, ``instance=`` a, b, c, each on its
    own node with a persistent session in a quorum queue; the producer spreads 6,000 events
    over ``jobs/<instance>``; node 2 (b's) dies a quarter in and is started again (the stream
    waits at a third until it is: RabbitMQ needs a majority of its nodes), node 1 (the
    producer's, a's and by then b's) dies half-way."""
    await session_queues("quorum")
    cluster = rabbitmq_cluster
    events = 6000
    service = unique("worker")
    topics = {name: f"{unique('rmq/jobs')}/{name}" for name in INSTANCES}
    instances = {
        name: Watched(
            urls(cluster, *ORDERS[name]),
            service,
            instance=name,
            last=events - len(INSTANCES),
            **PERSISTENT,
        )
        for name in INSTANCES
    }
    a, b, c = (instances[name] for name in INSTANCES)
    producer = MQTTClient(urls(cluster, 0, 2, 1), unique("producer"))
    producer_ups: Inbox[str] = Inbox()

    @producer.on_connect
    async def producer_up() -> None:
        producer_ups.add(producer.broker)

    for name, instance in instances.items():
        await instance.client.subscribe(topics[name], instance.on_job, qos=1)
    stream = PacedStream(
        producer,
        lambda n: topics[INSTANCES[n % len(INSTANCES)]],
        events=events,
        batch=60,
        pause=0.04,
    )
    first_kill, second_kill = stream.passed(events // 4), stream.passed(events // 2)
    majority_again = stream.hold_at(events // 3)
    started = time.monotonic()
    async with producer, a.client, b.client, c.client:
        for instance in instances.values():
            await instance.ups.wait_for(1, timeout=15)
        assert [i.client.broker for i in (a, b, c)] == [
            cluster.nodes[n].redacted_url for n in (0, 1, 2)
        ]
        assert [i.client.client_id for i in (a, b, c)] == [f"{service}-{n}" for n in INSTANCES]
        streaming = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(first_kill.wait(), timeout=30)
            first_at = time.monotonic()
            await cluster.akill(1)  # instance b's node
            await b.ups.wait_for(2, timeout=15)
            assert b.client.broker == cluster.nodes[0].redacted_url
            await cluster.astart_node(1)
            majority_again.set()

            await asyncio.wait_for(second_kill.wait(), timeout=30)
            second_at = time.monotonic()
            await cluster.akill(0)  # the producer's node, where a (and now b) are
            await a.ups.wait_for(2, timeout=15)
            await b.ups.wait_for(3, timeout=15)
            [_, producer_moved_to] = await producer_ups.wait_for(2, timeout=15)
            assert producer_moved_to == cluster.nodes[2].redacted_url
            await asyncio.wait_for(streaming, timeout=60)
            await producer.flush(timeout=60)
            for instance in instances.values():
                await asyncio.wait_for(instance.done.wait(), timeout=60)
        finally:
            streaming.cancel()
    elapsed = time.monotonic() - started

    def back(instance: Watched, killed_at: float, count: int) -> float:
        return instance.ups.items[count - 1][0] - killed_at

    failovers = {
        "b (node 2 killed)": back(b, first_at, 2),
        "a (node 1 killed)": back(a, second_at, 2),
        "b (node 1 killed)": back(b, second_at, 3),
    }
    share = {name: range(INSTANCES.index(name), events, len(INSTANCES)) for name in INSTANCES}
    lost = {name: instances[name].lost(share[name]) for name in INSTANCES}
    strays = {
        name: [n for n in instances[name].handled if n % len(INSTANCES) != INSTANCES.index(name)]
        for name in INSTANCES
    }
    stats = producer.stats
    print(
        f"\n3 instances on 3 RabbitMQ nodes, {events} QoS 1 events in {elapsed:.1f} s:"
        + "".join(f"\n  failover of {who}: {s:.3f} s after kill -9" for who, s in failovers.items())
        + "".join(
            f"\n  instance {name}: handled {len(instances[name].handled)} of "
            f"{len(share[name])}, lost {len(lost[name])} ({spans(lost[name], 3)}), "
            f"handled twice {len(instances[name].twice())}"
            for name in INSTANCES
        )
        + f"\n  producer: {stats.published} published, {stats.publish_failed} refused, "
        f"{stats.outbox_dropped} dropped"
    )
    assert all(seconds < 1.0 for seconds in failovers.values()), failovers
    assert [instances[name].twice() for name in INSTANCES] == [[], [], []]
    assert strays == {name: [] for name in INSTANCES}
    assert stats.publish_failed == 0
    assert stats.outbox_dropped == 0
    assert lost == {name: [] for name in INSTANCES}  # quorum queues outlive their nodes


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_what_a_persistent_session_keeps_when_its_node_is_killed(
    rabbitmq_cluster: RabbitMQCluster, session_queues: Any, queue_type: str
) -> None:
    """A subscriber with a persistent session (``session_expiry_interval`` > 0: clean session
    0 on 3.1.1, a durable queue ``mqtt-subscription-<id>qos1`` declared on its node) and a
    producer on another node; 3,000 QoS 1 events; the subscriber's node is killed with
    ``kill -9`` a third in, and started again 5 s later.

    quorum: the queue has replicas on the other nodes; a new leader takes over and the
    subscriber, back on another node, resumes it. classic: the queue lives on the dead node
    only; RabbitMQ refuses it elsewhere until that node is back (the subscriber keeps trying),
    then the queue comes back from that node's disk. Measured: what the subscriber handled,
    lost and handled twice, and how long it was without its messages.
    """
    await session_queues(queue_type)
    cluster = rabbitmq_cluster
    events = 3000
    topic = unique(f"rmq/{queue_type}")
    client_id = unique(f"durable-{queue_type}")
    # The last event is a marker published once the killed node is back: queues are FIFO,
    # so when it arrives, whatever survived of the stream has arrived.
    subscriber = Watched(urls(cluster, 1, 2, 0), client_id, last=events, **PERSISTENT)
    producer = MQTTClient(urls(cluster, 0, 2), unique("producer"))
    await subscriber.client.subscribe(topic, subscriber.on_job, qos=1)
    stream = PacedStream(producer, lambda n: topic, events=events, batch=50, pause=0.05)
    third = stream.passed(events // 3)
    async with subscriber.client, producer:
        await subscriber.ups.wait_for(1, timeout=15)
        queues = {q["name"]: q for q in await cluster.aqueues(0)}
        queue = queues[f"mqtt-subscription-{client_id}qos1"]
        assert queue["type"] == queue_type
        assert queue["durable"] is True
        streaming = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(third.wait(), timeout=30)
            handled_before = len(subscriber.handled)
            killed_at = time.monotonic()
            await cluster.akill(1)  # the subscriber's node, where its queue was declared
            # Started again a little later: a classic queue can come back only with its node.
            await asyncio.sleep(5)  # the outage's length, not a wait for an outcome
            restart = asyncio.create_task(cluster.astart_node(1))
            await asyncio.wait_for(streaming, timeout=120)
            await producer.flush(timeout=120)
            await asyncio.wait_for(restart, timeout=120)
            await producer.publish_event(topic, "job", {"n": events}, qos=1)
            await asyncio.wait_for(subscriber.done.wait(), timeout=120)
            resumed_after = next(
                (at for at, n in subscriber.arrivals if at > killed_at and n >= handled_before),
                None,
            )
        finally:
            streaming.cancel()
    lost = subscriber.lost(range(events))
    gap = None if resumed_after is None else resumed_after - killed_at
    stats = producer.stats
    print(
        f"\npersistent session in a {queue_type} queue, its node killed -9 (back 5 s later): "
        f"handled {events - len(lost)} of {events}, lost {len(lost)} ({spans(lost)}), "
        f"handled twice {len(subscriber.twice())}, deduplicated "
        f"{subscriber.client.stats.deduplicated}, reconnects {len(subscriber.ups.items) - 1}, "
        f"first event after the kill {gap if gap is None else round(gap, 2)} s later; producer "
        f"{stats.published} published, {stats.publish_failed} refused"
    )
    assert subscriber.twice() == []
    assert stats.publish_failed == 0
    if queue_type == "quorum":
        assert lost == []  # the queue was replicated: nothing the broker took was lost
