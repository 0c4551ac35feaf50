"""Retained state after a broker restart (issue 20, section 2), on a real Mosquitto.

The fleet's services publish their own retained status; a broker without persistence that is
killed forgets it. After the link comes back on such a broker (no session present), tars-core
re-publishes the last retained message the service published on each topic where the broker
holds none, and not over a retained message someone else published before the check (a window
of a few round trips is left: docs/resilience.md). Each test has its own broker, persistence
off, killed with SIGKILL and started again on the same port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from support.mosquitto_cli import Inbox, MosquittoSub, mosquitto_pub, unique
from tars.adapters.mqtt_client import MQTTClient as DropInClient
from tars.mqtt import Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker, TcpFaultProxy

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

FAST = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2}


@pytest.fixture
def volatile_broker() -> Iterator[MosquittoBroker]:
    """A Mosquitto of this test's own, persistence off: a restart forgets everything."""
    broker = MosquittoBroker(persistence=False)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


async def collect(broker_url: str, topic_filter: str) -> tuple[MQTTClient, Inbox[Message]]:
    """A fresh subscriber (a client of its own) collecting what arrives on ``topic_filter``."""
    inbox: Inbox[Message] = Inbox()

    async def handler(msg: Message) -> None:
        inbox.add(msg)

    client = MQTTClient(broker_url, unique("observer"), wait_for_broker=False)
    await client.subscribe(topic_filter, handler, qos=1)
    await client.connect()
    return client, inbox


async def wait_reconnected(client: MQTTClient, connects: int) -> None:
    back = asyncio.Event()

    @client.on_connect
    async def _check() -> None:
        if client.stats.connects >= connects:
            back.set()

    if client.stats.connects < connects:
        async with asyncio.timeout(15):
            await back.wait()


async def test_a_service_retained_state_is_back_after_a_kill_9_restart(
    volatile_broker: MosquittoBroker,
) -> None:
    base = unique("retained/state")
    topics = [f"{base}/mode", f"{base}/volume", f"{base}/cleared", f"{base}/health"]
    service = MQTTClient(volatile_broker.url, unique("svc"), **FAST)
    await service.connect()
    try:
        await service.publish(topics[0], b"listening", qos=1, retain=True)
        await service.publish(topics[1], b"7", qos=0, retain=True)
        await service.publish(topics[2], b"to be cleared", qos=1, retain=True)
        await service.publish(topics[2], b"", qos=1, retain=True)  # cleared: forgotten
        await service.publish_event(topics[3], "health.status", {"ok": True}, qos=1, retain=True)

        await volatile_broker.akill()
        await volatile_broker.astart()
        await wait_reconnected(service, 2)

        # The broker lost everything; the service put its three topics back, in order.
        observer, inbox = await collect(volatile_broker.url, f"{base}/#")
        try:
            received = await inbox.wait_for(3, timeout=10)
        finally:
            await observer.shutdown()
        assert [m.topic for m in received] == [topics[0], topics[1], topics[3]]

        # A fresh subscriber now gets them as retained messages, and nothing on the cleared one.
        async with MosquittoSub(volatile_broker, f"{base}/#", qos=1) as fresh:
            got = await fresh.wait_for(3)
            await mosquitto_pub(volatile_broker, f"{base}/end", b"end", qos=1)
            got = await fresh.wait_for(4)
        retained = {c.topic: c.payload for c in got if c.retain}
        assert retained[topics[0]] == b"listening"
        assert retained[topics[1]] == b"7"
        assert b'"ok":true' in retained[topics[3]]
        assert topics[2] not in retained
        assert [c.topic for c in got[3:]] == [f"{base}/end"]
    finally:
        await service.shutdown()


async def test_a_service_subscribed_to_its_own_retained_topic_still_receives_on_it(
    volatile_broker: MosquittoBroker,
) -> None:
    """A service that takes commands on the topic it publishes its mode on, retained: after a
    kill -9 restart its mode is back, and so is its subscription (the check never subscribes
    or unsubscribes a filter of the service's own)."""
    mode = unique("retained/own") + "/mode"
    service = MQTTClient(volatile_broker.url, unique("svc"), **FAST)
    modes: Inbox[Message] = Inbox()

    async def on_mode(msg: Message) -> None:
        modes.add(msg)

    await service.subscribe(mode, on_mode, qos=1)
    await service.connect()
    try:
        await service.publish(mode, b"listening", qos=1, retain=True)
        await modes.wait_for(1)  # its own publish, back through its subscription

        await volatile_broker.akill()
        await volatile_broker.astart()
        await wait_reconnected(service, 2)

        observer, inbox = await collect(volatile_broker.url, mode)
        try:
            (back,) = await inbox.wait_for(1, timeout=10)  # put back, after the check
        finally:
            await observer.shutdown()
        assert back.payload == b"listening"
        # Its own re-publish reached it too, and so does a command from someone else.
        await mosquitto_pub(volatile_broker, mode, b"docked", qos=1)
        got = await modes.wait_for(3)
        assert [m.payload for m in got] == [b"listening", b"listening", b"docked"]
        async with MosquittoSub(volatile_broker, mode, qos=1) as fresh:
            (now,) = await fresh.wait_for(1)
        assert (now.payload, now.retain) == (b"listening", True)
    finally:
        await service.shutdown()


async def test_a_retained_message_someone_else_published_meanwhile_is_not_overwritten(
    volatile_broker: MosquittoBroker,
) -> None:
    """The broker restarts; another client publishes retained state on one of our topics
    before the service is back (its connections refused by a proxy meanwhile): the service
    puts back only the topic that is still empty."""
    base = unique("retained/theirs")
    taken, empty = f"{base}/taken", f"{base}/empty"
    async with TcpFaultProxy(volatile_broker.host, volatile_broker.port) as proxy:
        service = MQTTClient(proxy.url, unique("svc"), **FAST)
        await service.connect()
        try:
            await service.publish(taken, b"mine", qos=1, retain=True)
            await service.publish(empty, b"mine too", qos=1, retain=True)

            proxy.refuse()
            await volatile_broker.akill()
            await volatile_broker.astart()
            await mosquitto_pub(volatile_broker, taken, b"theirs", qos=1, retain=True)
            proxy.refuse(False)
            await wait_reconnected(service, 2)

            observer, inbox = await collect(volatile_broker.url, empty)
            try:
                (back,) = await inbox.wait_for(1, timeout=10)
            finally:
                await observer.shutdown()
            assert back.payload == b"mine too"
            # Had the service written over "taken", it would have done so before "empty".
            async with MosquittoSub(volatile_broker, taken, qos=1) as fresh:
                (now,) = await fresh.wait_for(1)
            assert (now.payload, now.retain) == (b"theirs", True)
        finally:
            await service.shutdown()


async def test_republish_retained_false_leaves_the_broker_as_it_restarted(
    volatile_broker: MosquittoBroker,
) -> None:
    """Two services on one broker, the option off for one of them: once the other's state is
    back (the restore ran), the first one's topic is still empty."""
    base = unique("retained/off")
    off = MQTTClient(volatile_broker.url, unique("off"), republish_retained=False, **FAST)
    on = MQTTClient(volatile_broker.url, unique("on"), **FAST)
    await off.connect()
    await on.connect()
    try:
        await off.publish(f"{base}/off", b"not back", qos=1, retain=True)
        await on.publish(f"{base}/on", b"back", qos=1, retain=True)
        await volatile_broker.akill()
        await volatile_broker.astart()
        await wait_reconnected(off, 2)
        await wait_reconnected(on, 2)
        observer, inbox = await collect(volatile_broker.url, f"{base}/#")
        try:
            (first,) = await inbox.wait_for(1, timeout=10)
            assert (first.topic, first.payload) == (f"{base}/on", b"back")
            await off.publish(f"{base}/marker", b"m", qos=1)
            second = (await inbox.wait_for(2))[1]
        finally:
            await observer.shutdown()
        assert second.topic == f"{base}/marker"  # nothing on f"{base}/off" came before it
    finally:
        await off.shutdown()
        await on.shutdown()


async def test_a_service_on_the_drop_in_gets_its_retained_state_back_unchanged(
    volatile_broker: MosquittoBroker,
) -> None:
    """The fleet's services, unchanged on the drop-in: their retained status, published in a
    reconnect loop that no longer runs, comes back after the broker lost it."""
    base = unique("retained/fleet")
    service = DropInClient(
        volatile_broker.url, unique("router"), reconnect_min_delay=0.1, reconnect_max_delay=0.5
    )
    await service.connect()
    try:
        assert service.client is not None
        await service.client.publish(f"{base}/mode", "listening", qos=1, retain=True)
        await service.publish_event(f"{base}/status", "router.status", {"up": True}, retain=True)
        await volatile_broker.akill()
        await volatile_broker.astart()
        await wait_reconnected(service.native, 2)
        observer, inbox = await collect(volatile_broker.url, f"{base}/#")
        try:
            mode, status = await inbox.wait_for(2, timeout=10)
        finally:
            await observer.shutdown()
        assert (mode.topic, mode.payload) == (f"{base}/mode", b"listening")
        assert (status.topic, status.envelope.data) == (f"{base}/status", {"up": True})
    finally:
        await service.shutdown()
