"""Fault tests: publishing while the link is down (the outbox), against a real Mosquitto.

The client reaches the broker through a :class:`~tars.mqtt.testing.TcpFaultProxy`; the tests cut
the link (``refuse`` + ``drop_connections``), publish, and let it come back. An independent
``mosquitto_sub`` on the broker itself says what was really delivered, and in which order.
What each configuration may lose is listed in docs/resilience.md; these tests hold it to that.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import mqtt5
import pytest

from support.mosquitto_cli import Inbox, MosquittoSub, unique
from tars.mqtt import (
    ClientStateError,
    ExponentialBackoff,
    MQTTClient,
    OutboxFullError,
)
from tars.mqtt.testing import MosquittoBroker, TcpFaultProxy
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = pytest.mark.mosquitto


class Cuttable:
    """A client behind a proxy, and switches to take its link away and give it back."""

    def __init__(self, client: MQTTClient, proxy: TcpFaultProxy) -> None:
        self.client = client
        self.proxy = proxy
        self.ups: Inbox[None] = Inbox()
        self.downs: Inbox[None] = Inbox()
        client.on_connect(self._up)
        client.on_disconnect(self._down)

    async def _up(self) -> None:
        self.ups.add(None)

    async def _down(self) -> None:
        self.downs.add(None)

    async def cut(self) -> None:
        """Lose the link; reconnection attempts are refused until :meth:`mend`."""
        self.proxy.refuse()
        await self.proxy.drop_connections()
        await self.downs.wait_for(len(self.ups.items))
        assert not self.client.connected

    async def mend(self) -> None:
        """Let the client reconnect, and wait until it has."""
        self.proxy.refuse(False)
        await self.ups.wait_for(len(self.downs.items) + 1)


@asynccontextmanager
async def cuttable_client(
    broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory, **options: Any
) -> AsyncIterator[Cuttable]:
    proxy = await make_tcp_proxy(broker.host, broker.port)
    fast = ExponentialBackoff(min_delay=0.05, max_delay=0.2, refused_delay=0.1)
    client = MQTTClient(proxy.url, unique("outbox"), backoff=fast, **options)
    cuttable = Cuttable(client, proxy)
    async with client:
        await cuttable.ups.wait_for(1)
        yield cuttable


async def delivered(client: MQTTClient, observer: MosquittoSub, topic: str) -> list[bytes]:
    """Everything the observer got from ``client`` on ``topic``, once all of it is there: a
    last QoS 2 marker from the same client arrives after everything it sent before (Mosquitto
    forwards a QoS 2 message on its PUBREL, so a QoS 1 marker could overtake QoS 2 ones)."""
    await client.publish(topic, b"end", qos=2)
    async with asyncio.timeout(5):
        while not observer.messages.items or observer.messages.items[-1].payload != b"end":
            await observer.wait_for(len(observer.messages.items) + 1)
    return [m.payload for m in observer.messages.items[:-1]]


async def test_qos0_is_dropped_while_disconnected_by_default(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    topic = unique("resilience/outbox")
    async with (
        MosquittoSub(mosquitto_broker, topic, qos=1) as observer,
        cuttable_client(mosquitto_broker, make_tcp_proxy) as link,
    ):
        client = link.client
        await link.cut()
        await client.publish(topic, b"qos0 while down")  # returns at once: dropped
        assert client.stats.dropped_offline == 1
        await link.mend()
        assert await delivered(client, observer, topic) == []


async def test_qos0_is_queued_with_queue_qos0_offline(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    topic = unique("resilience/outbox")
    async with (
        MosquittoSub(mosquitto_broker, topic, qos=1) as observer,
        cuttable_client(mosquitto_broker, make_tcp_proxy, queue_qos0_offline=True) as link,
    ):
        client = link.client
        await link.cut()
        await client.publish(topic, b"qos0 while down")
        await link.mend()
        assert await delivered(client, observer, topic) == [b"qos0 while down"]
        assert client.stats.dropped_offline == 0


async def test_offline_publishes_are_sent_in_order_after_reconnecting(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    topic = unique("resilience/outbox")
    async with (
        MosquittoSub(mosquitto_broker, topic, qos=2) as observer,
        cuttable_client(mosquitto_broker, make_tcp_proxy) as link,
    ):
        client = link.client
        await link.cut()
        waiting = []
        for n in range(6):
            if n % 2 == 0:  # awaited: returns once the broker acknowledged, after the link is back
                task = asyncio.create_task(client.publish(topic, b"%d" % n, qos=1))
                waiting.append(task)
                await asyncio.sleep(0)  # let it reach the outbox before the next one
            else:
                await client.publish(topic, b"%d" % n, qos=1, wait=False)
        # Order holds per QoS level (MQTT does not order across levels): QoS 2 comes last here.
        await client.publish(topic, b"qos2", qos=2, wait=False)
        assert not any(task.done() for task in waiting)
        await link.mend()
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
        expected = [b"%d" % n for n in range(6)] + [b"qos2"]
        assert await delivered(client, observer, topic) == expected
        await client.flush(timeout=5)


@pytest.mark.parametrize(
    ("policy", "sent", "failed"),
    [
        ("drop_oldest", [b"2", b"3", b"4"], [b"0", b"1"]),
        ("drop_newest", [b"0", b"1", b"2"], [b"3", b"4"]),
        ("raise", [b"0", b"1", b"2"], [b"3", b"4"]),
    ],
)
async def test_a_full_outbox_applies_its_policy(
    mosquitto_broker: MosquittoBroker,
    make_tcp_proxy: TcpProxyFactory,
    policy: Literal["drop_oldest", "drop_newest", "raise"],
    sent: list[bytes],
    failed: list[bytes],
) -> None:
    topic = unique("resilience/outbox")
    options: dict[str, Any] = {"outbox_max_messages": 3, "outbox_policy": policy}
    async with (
        MosquittoSub(mosquitto_broker, topic, qos=1) as observer,
        cuttable_client(mosquitto_broker, make_tcp_proxy, **options) as link,
    ):
        client = link.client
        await link.cut()
        tasks = {}
        for n in range(5):
            payload = b"%d" % n
            tasks[payload] = asyncio.create_task(client.publish(topic, payload, qos=1))
            await asyncio.sleep(0)  # in the outbox (or refused) before the next one
        await link.mend()
        await asyncio.wait(tasks.values(), timeout=5)
        assert await delivered(client, observer, topic) == sent
        refused = [p for p, task in tasks.items() if task.exception() is not None]
        assert refused == failed
        assert all(isinstance(tasks[p].exception(), OutboxFullError) for p in failed)
        expected_count = 0 if policy == "raise" else len(failed)
        assert client.stats.outbox_dropped == expected_count


async def test_block_policy_holds_publishers_until_the_link_is_back(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    topic = unique("resilience/outbox")
    options: dict[str, Any] = {"outbox_max_messages": 2, "outbox_policy": "block"}
    async with (
        MosquittoSub(mosquitto_broker, topic, qos=1) as observer,
        cuttable_client(mosquitto_broker, make_tcp_proxy, **options) as link,
    ):
        client = link.client
        await link.cut()
        await client.publish(topic, b"0", qos=1, wait=False)
        await client.publish(topic, b"1", qos=1, wait=False)
        blocked = asyncio.create_task(
            client.publish(topic, b"2", qos=1, properties={"user_properties": [("kept", "yes")]})
        )
        with pytest.raises(TimeoutError):  # no room: the publisher waits
            await asyncio.wait_for(asyncio.shield(blocked), timeout=0.3)
        await link.mend()
        await asyncio.wait_for(blocked, timeout=5)
        assert await delivered(client, observer, topic) == [b"0", b"1", b"2"]
        # The blocked publish kept its MQTT 5 properties on the way.
        assert observer.messages.items[2].user_properties == "kept:yes"
        assert client.stats.outbox_dropped == 0


async def test_shutdown_releases_a_publisher_blocked_on_the_outbox(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    options: dict[str, Any] = {"outbox_max_messages": 1, "outbox_policy": "block"}
    async with cuttable_client(mosquitto_broker, make_tcp_proxy, **options) as link:
        client = link.client
        await link.cut()
        queued = asyncio.create_task(client.publish("resilience/outbox/x", b"0", qos=1))
        blocked = asyncio.create_task(client.publish("resilience/outbox/x", b"1", qos=1))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(blocked), timeout=0.3)
        await client.shutdown()
        for task in (queued, blocked):
            with pytest.raises(ClientStateError):
                await asyncio.wait_for(task, timeout=1)


async def test_the_byte_limit_and_the_ttl_bound_the_outbox(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    topic = unique("resilience/outbox")
    ttl = 1.0
    options: dict[str, Any] = {
        "outbox_max_bytes": 10,
        "outbox_policy": "drop_newest",
        "outbox_message_ttl": ttl,
    }
    async with (
        MosquittoSub(mosquitto_broker, topic, qos=1) as observer,
        cuttable_client(mosquitto_broker, make_tcp_proxy, **options) as link,
    ):
        client = link.client
        await link.cut()
        old = asyncio.create_task(client.publish(topic, b"old!", qos=1))
        await asyncio.sleep(ttl)  # the subject here is time itself: let "old!" outlive its TTL
        fresh = asyncio.create_task(client.publish(topic, b"new!", qos=1))
        too_many = asyncio.create_task(client.publish(topic, b"more", qos=1))  # 12 bytes > 10
        await link.mend()
        await asyncio.wait([old, fresh, too_many], timeout=5)
        assert fresh.exception() is None
        assert isinstance(old.exception(), OutboxFullError)  # expired
        assert isinstance(too_many.exception(), OutboxFullError)  # over the byte limit
        assert await delivered(client, observer, topic) == [b"new!"]
        assert (client.stats.outbox_expired, client.stats.outbox_dropped) == (1, 1)


async def test_a_publisher_waiting_for_acks_is_not_failed_by_a_lost_link(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    """``wait=False`` QoS 1 publishes wait while 1000 are unacknowledged (bounded memory); a
    link lost meanwhile sends the waiting one to the outbox instead of failing it."""
    topic = unique("resilience/capacity")
    total = 1001  # one more than the client keeps unacknowledged before it waits
    received: Inbox[bytes] = Inbox()

    async def on_message(payload: bytes) -> None:
        received.add(payload)

    async with (
        MQTTClient(mosquitto_broker.url, unique("capacity-rx")) as receiver,
        cuttable_client(mosquitto_broker, make_tcp_proxy) as link,
    ):
        await receiver.subscribe(topic, on_message, qos=1)
        client = link.client
        link.proxy.blackhole()  # the link stays up, but no ack comes back
        for n in range(total - 1):
            await client.publish(topic, b"%d" % n, qos=1, wait=False)
        waiting = asyncio.create_task(client.publish(topic, b"last", qos=1, wait=False))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), timeout=0.3)
        await link.cut()
        link.proxy.restore()
        await asyncio.wait_for(waiting, timeout=1)  # queued in the outbox, not failed
        await link.mend()
        await client.flush(timeout=10)
        await received.wait_for(total, timeout=10)
        assert set(received.items) == {b"%d" % n for n in range(total - 1)} | {b"last"}


class DeafBroker:
    """A fake broker that answers CONNECT, then never reads again, so the client's writes pile
    up until its transport pushes back; :meth:`reset` aborts those connections with a RST."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.closing = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> DeafBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"mqtt://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.closing.set()
        self.reset()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the CONNECT
        writer.write(mqtt5.ConnAckPacket().write())
        self.writers.append(writer)
        await self.closing.wait()

    def reset(self) -> None:
        for writer in self.writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self.writers.clear()


async def test_a_publisher_waiting_for_the_socket_is_not_failed_by_a_lost_link() -> None:
    """A publish waiting for the transport's buffer to drain has handed its message over
    already: losing the link then is not an error for it (QoS 1/2 are resent, QoS 0 is at most
    once anyway)."""
    big = b"x" * 1_000_000
    async with DeafBroker() as broker:
        client = MQTTClient(broker.url, unique("deaf"))

        async def flood() -> None:
            for _ in range(100):
                await client.publish("resilience/deaf", big)

        async with client:
            flooding = asyncio.create_task(flood())
            with pytest.raises(TimeoutError):  # the broker reads nothing: writes back up
                await asyncio.wait_for(asyncio.shield(flooding), timeout=1)
            conn = client.client
            assert conn is not None
            assert conn.write_paused
            broker.reset()
            await asyncio.wait_for(flooding, timeout=5)
