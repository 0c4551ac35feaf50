"""Fault tests: slow, hung and waiting handlers, and the overflow policies (issue 4, test 6).

Each subscription has its own bounded queue and worker, so a handler that sleeps or hangs holds
up only its own topic; its queue's overflow policy decides what happens when it fills:
``drop_newest`` and ``drop_oldest`` drop (and count), ``block`` stops reading the link, which
holds up every topic of the client until the handler catches up (the documented caveat). The
policies apply to messages acknowledged on arrival: QoS 0, and QoS 1/2 with
``acknowledge="on_arrival"`` (with the default, a QoS 1/2 message is never dropped by a full
queue: see test_ack_after_handling.py).
"""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from mqtt5 import PublishPacket

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = pytest.mark.mosquitto


class Gate:
    """A handler that records what it got and, while closed, hangs on every message."""

    def __init__(self) -> None:
        self.started: Inbox[bytes] = Inbox()
        self.done: Inbox[bytes] = Inbox()
        self.open = asyncio.Event()

    async def __call__(self, payload: bytes) -> None:
        self.started.add(payload)
        await self.open.wait()
        self.done.add(payload)


class Arrivals:
    """Counts the PUBLISH packets of one topic that reached the client (a message listener,
    called after the message was offered to the subscriptions)."""

    def __init__(self, client: MQTTClient, topic: str) -> None:
        self.inbox: Inbox[bytes] = Inbox()
        self.topic = topic
        client.add_message_listener(self)

    def __call__(self, packet: PublishPacket) -> None:
        if packet.topic == self.topic:
            self.inbox.add(packet.payload)


async def send_one(publisher: MQTTClient, topic: str, payload: bytes, arrivals: Arrivals) -> None:
    """Publish one message and wait until it reached the subscriber (and its queue)."""
    seen = len(arrivals.inbox.items)
    await publisher.publish(topic, payload, qos=1)
    await arrivals.inbox.wait_for(seen + 1)


async def test_a_hung_sleeping_or_failing_handler_does_not_hold_up_other_topics(
    shared_mosquitto: MosquittoBroker,
) -> None:
    hung_topic, sleepy_topic, failing_topic, fast_topic = (
        unique("resilience/iso") for _ in range(4)
    )
    hung = Gate()
    fast: Inbox[bytes] = Inbox()
    slept: Inbox[bytes] = Inbox()

    async def sleepy(payload: bytes) -> None:
        await asyncio.sleep(30)
        slept.add(payload)

    async def quick(payload: bytes) -> None:
        fast.add(payload)

    async def failing(payload: bytes) -> None:
        raise ValueError(f"cannot handle {payload!r}")

    async with MQTTClient(shared_mosquitto.url, unique("iso")) as client:
        hung_sub = await client.subscribe(hung_topic, hung, qos=1)
        sleepy_sub = await client.subscribe(sleepy_topic, sleepy, qos=1, timeout=0.5)
        failing_sub = await client.subscribe(failing_topic, failing, qos=1)
        await client.subscribe(fast_topic, quick, qos=1)
        for n in range(5):
            await client.publish(hung_topic, b"%d" % n, qos=1)
            await client.publish(sleepy_topic, b"%d" % n, qos=1)
            await client.publish(failing_topic, b"%d" % n, qos=1)
        await hung.started.wait_for(1)
        for n in range(20):
            await client.publish(fast_topic, b"%d" % n, qos=1)
        assert await fast.wait_for(20, timeout=2) == [b"%d" % n for n in range(20)]
        assert hung_sub.queued == 4
        assert hung.done.items == []
        assert sleepy_sub.stats.timed_out < 5  # still working through its queue, one by one
        hung.open.set()
        await hung.done.wait_for(5)
        await sleepy_sub.join()
        await failing_sub.join()
        assert slept.items == []
        assert sleepy_sub.stats.timed_out == 5
        assert failing_sub.stats.failed == 5
        assert (client.stats.timed_out, client.stats.failed, client.stats.handled) == (5, 5, 25)


async def test_a_handler_can_make_a_request_to_the_same_client(
    shared_mosquitto: MosquittoBroker,
) -> None:
    """Request/response inside a handler: the answer arrives on the client's internal response
    route, not through the waiting handler's queue, so nothing deadlocks."""
    ask_topic, service_topic = unique("resilience/ask"), unique("resilience/svc")
    answers: Inbox[object] = Inbox()

    async with MQTTClient(shared_mosquitto.url, unique("reqrep")) as client:

        async def service(request: Message) -> None:
            await client.reply(request, "double.result", {"value": 2 * request.envelope.data["x"]})

        async def asker(envelope: Envelope) -> None:
            answer = await client.request(
                service_topic,
                "double.request",
                {"x": envelope.data["x"]},
                response_topic=f"{ask_topic}/answers",
                timeout=5,
            )
            answers.add(answer.data["value"])

        await client.subscribe(service_topic, service, qos=1)
        await client.subscribe(ask_topic, asker, qos=1)
        for x in range(3):
            await client.publish_event(ask_topic, "ask", {"x": x}, qos=1)
        assert await answers.wait_for(3) == [0, 2, 4]


@pytest.mark.parametrize(
    ("overflow", "handled", "dropped"),
    [
        ("drop_newest", [b"0", b"1", b"2"], 3),  # the queue keeps the two that came first
        ("drop_oldest", [b"0", b"4", b"5"], 3),  # the queue keeps the two that came last
    ],
)
async def test_drop_policies_drop_and_count_while_the_handler_is_stuck(
    shared_mosquitto: MosquittoBroker,
    overflow: Literal["drop_newest", "drop_oldest"],
    handled: list[bytes],
    dropped: int,
) -> None:
    topic, other = unique("resilience/drop"), unique("resilience/other")
    gate = Gate()
    others: Inbox[bytes] = Inbox()

    async def on_other(payload: bytes) -> None:
        others.add(payload)

    # Acknowledged on arrival, QoS 1 is at the queue's mercy like QoS 0 (by default it is
    # never dropped: see the next test).
    client = MQTTClient(shared_mosquitto.url, unique("drop"), acknowledge="on_arrival")
    async with client:
        arrivals = Arrivals(client, topic)
        sub = await client.subscribe(topic, gate, qos=1, queue_size=2, overflow=overflow)
        await client.subscribe(other, on_other, qos=1)
        await client.publish(topic, b"0", qos=1)
        await gate.started.wait_for(1)
        for n in range(1, 6):
            await client.publish(topic, b"%d" % n, qos=1)
        await arrivals.inbox.wait_for(6)
        assert (sub.queued, sub.stats.dropped) == (2, dropped)
        await client.publish(other, b"unaffected", qos=1)
        assert await others.wait_for(1) == [b"unaffected"]
        gate.open.set()
        await sub.join()
        assert gate.done.items == handled
        assert client.stats.dropped == dropped


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
async def test_by_default_a_full_queue_drops_qos_0_but_never_qos_1(
    shared_mosquitto: MosquittoBroker, overflow: Literal["drop_newest", "drop_oldest"]
) -> None:
    """Acknowledged after handling (the default), a QoS 1 message waits for its handler however
    full the queue: it is the broker's until then (issue 12: an overloaded worker loses none)."""
    topic, topic0 = unique("resilience/nodrop"), unique("resilience/qos0")
    gate = Gate()
    async with MQTTClient(shared_mosquitto.url, unique("nodrop")) as client:
        arrivals = Arrivals(client, topic)
        sub = await client.subscribe(topic, gate, qos=1, queue_size=2, overflow=overflow)
        await client.publish(topic, b"0", qos=1)
        await gate.started.wait_for(1)
        for n in range(1, 6):
            await client.publish(topic, b"%d" % n, qos=1)
        await arrivals.inbox.wait_for(6)
        assert (sub.queued, sub.stats.dropped) == (5, 0)
        gate.open.set()
        await sub.join()
        assert gate.done.items == [b"%d" % n for n in range(6)]

        zero: Inbox[bytes] = Inbox()
        stuck = asyncio.Event()

        async def slow(payload: bytes) -> None:
            await stuck.wait()
            zero.add(payload)

        arrivals0 = Arrivals(client, topic0)
        sub0 = await client.subscribe(topic0, slow, qos=0, queue_size=2, overflow=overflow)
        for n in range(6):
            await client.publish(topic0, b"%d" % n, qos=0)
        await arrivals0.inbox.wait_for(6)
        assert sub0.stats.dropped > 0  # QoS 0 keeps the overflow policies
        stuck.set()
        await sub0.join()
        assert client.stats.dropped == sub0.stats.dropped


async def test_block_policy_holds_the_whole_link_until_the_handler_catches_up(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topic, other = unique("resilience/block"), unique("resilience/other")
    gate = Gate()
    others: Inbox[bytes] = Inbox()

    async def on_other(payload: bytes) -> None:
        others.add(payload)

    async with (
        MQTTClient(shared_mosquitto.url, unique("block"), acknowledge="on_arrival") as client,
        MQTTClient(shared_mosquitto.url, unique("block-pub")) as publisher,
    ):
        arrivals = Arrivals(client, topic)
        sub = await client.subscribe(topic, gate, qos=1, queue_size=2, overflow="block")
        await client.subscribe(other, on_other, qos=1)
        for n in range(4):  # one taken by the handler, two queued, one past the limit
            await send_one(publisher, topic, b"%d" % n, arrivals)
        assert sub.queued == 3
        # The client stops reading the link: nothing more arrives, on any topic.
        for n in range(4, 6):
            await publisher.publish(topic, b"%d" % n, qos=1)
        await publisher.publish(other, b"held up", qos=1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(others.wait_for(1), timeout=0.3)
        assert len(arrivals.inbox.items) == 4
        gate.open.set()
        # Nothing was dropped: everything arrives, in order, once the handler catches up.
        assert await gate.done.wait_for(6) == [b"%d" % n for n in range(6)]
        assert await others.wait_for(1) == [b"held up"]
        assert client.stats.dropped == 0


@pytest.mark.slow
async def test_a_blocked_link_is_not_mistaken_for_a_dead_one(
    shared_mosquitto: MosquittoBroker,
) -> None:
    """While ``block`` keeps the link paused, no heartbeat or ack can come back: the watchdog
    and the ack timeout must not tear the link down for it."""
    topic = unique("resilience/block-watchdog")
    gate = Gate()
    client = MQTTClient(
        shared_mosquitto.url,
        unique("block-wd"),
        enable_heartbeat=True,
        heartbeat_interval=1.0,
        publish_timeout=1.0,
    )
    async with client, MQTTClient(shared_mosquitto.url, unique("wd-pub")) as publisher:
        echoes = Arrivals(client, f"system/keepalive/{client.client_id}")
        arrivals = Arrivals(client, topic)
        sub = await client.subscribe(topic, gate, qos=1, queue_size=1, overflow="block")
        for n in range(3):  # one taken by the handler, one queued, one past the limit
            await send_one(publisher, topic, b"%d" % n, arrivals)
        paused_at = len(echoes.inbox.items)
        # Acks cannot be read either: this publish stays unacknowledged while paused.
        pending = asyncio.create_task(client.publish(topic, b"3", qos=1))
        # Longer than 3 heartbeat intervals and than the ack timeout, link paused throughout.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(echoes.inbox.wait_for(paused_at + 5), timeout=4.5)
        assert client.stats.stale_links == 0
        gate.open.set()
        await asyncio.wait_for(pending, timeout=5)
        await gate.done.wait_for(4)
        await sub.join()
        assert client.stats.stale_links == 0
        assert client.stats.connects == 1


async def test_a_blocked_client_still_reconnects(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    """A link lost while ``block`` holds reading paused is replaced at once (subscriptions
    restored, client connected), not when the handler catches up.

    A paused socket does not notice a reset until it writes: the heartbeat's writes do.
    """
    proxy = await make_tcp_proxy(mosquitto_broker.host, mosquitto_broker.port)
    topic = unique("resilience/block-reconnect")
    gate = Gate()
    ups: Inbox[None] = Inbox()

    async def on_up() -> None:
        ups.add(None)

    client = MQTTClient(proxy.url, unique("block-rc"), enable_heartbeat=True, heartbeat_interval=1)
    client.on_connect(on_up)
    async with client, MQTTClient(mosquitto_broker.url, unique("rc-pub")) as publisher:
        arrivals = Arrivals(client, topic)
        await client.subscribe(topic, gate, qos=1, queue_size=1, overflow="block")
        for n in range(3):  # one taken by the handler, one queued, one past the limit
            await send_one(publisher, topic, b"%d" % n, arrivals)
        await proxy.drop_connections()
        await ups.wait_for(2, timeout=5)
        assert client.connected
        gate.open.set()
        assert await gate.done.wait_for(3) == [b"0", b"1", b"2"]
