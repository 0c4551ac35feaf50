"""Fault tests: a link that stays open but carries nothing (issue 4, test 3, and the ack timeout).

A :class:`~tars.mqtt.testing.TcpFaultProxy` sits between the client and a real Mosquitto and
blackholes the path: no socket closes, so only the client's own liveness checks can notice. The
heartbeat watchdog must declare the link stale within ``watchdog_missed_heartbeats`` intervals,
and a QoS 1 publish whose ack never comes must do the same after ``publish_timeout``; the normal
reconnect then runs. Detection times are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio

import pytest
from mqtt5 import PublishPacket

from support.mosquitto_cli import Inbox, MosquittoSub, mosquitto_pub, unique
from tars.mqtt import MQTTClient, keepalive_topic
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

INTERVAL = 1.0  # the shortest heartbeat interval the configuration allows
MISSED = 3  # watchdog_missed_heartbeats, the default


def liveness_tasks() -> list[asyncio.Task[object]]:
    """The client's link task: liveness runs on its connection's timer, not a task of its own."""
    return [t for t in asyncio.all_tasks() if t.get_name() == "tars-mqtt-supervisor"]


async def test_a_blackholed_link_is_declared_stale_and_replaced(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    loop = asyncio.get_running_loop()
    proxy = await make_tcp_proxy(mosquitto_broker.host, mosquitto_broker.port)
    topic = unique("resilience/stale")
    client = MQTTClient(
        proxy.url,
        unique("stale"),
        enable_heartbeat=True,
        heartbeat_interval=INTERVAL,
        watchdog_missed_heartbeats=MISSED,
    )
    echoes: Inbox[float] = Inbox()
    ups: Inbox[float] = Inbox()
    downs: Inbox[float] = Inbox()
    got: Inbox[bytes] = Inbox()
    echo_topic = keepalive_topic(client.client_id)

    def on_packet(packet: PublishPacket) -> None:
        if packet.topic == echo_topic:
            echoes.add(loop.time())

    async def on_up() -> None:
        ups.add(loop.time())

    async def on_down() -> None:
        downs.add(loop.time())

    async def on_message(payload: bytes) -> None:
        got.add(payload)

    client.add_message_listener(on_packet)
    client.on_connect(on_up)
    client.on_disconnect(on_down)
    await client.subscribe(topic, on_message, qos=1)
    async with client:
        await echoes.wait_for(2)  # heartbeats make the round trip through the broker
        blackholed_at = loop.time()
        proxy.blackhole()
        await downs.wait_for(1, timeout=MISSED * INTERVAL + 3)
        proxy.restore()
        detected = downs.items[0] - blackholed_at
        await ups.wait_for(2, timeout=5)
        print(
            f"\n[blackhole] stale after {detected:.3f} s ({detected / INTERVAL:.2f} heartbeat "
            f"intervals); reconnected {ups.items[1] - downs.items[0]:.3f} s later"
        )
        # Only heartbeats sent after the blackhole, each given its full interval, count
        # (issue 12, D7): between MISSED and MISSED + 1 intervals.
        assert detected <= (MISSED + 1) * INTERVAL + 0.5
        assert client.stats.stale_links == 1
        assert client.connected

        # The subscription works on the new link.
        await mosquitto_pub(mosquitto_broker, topic, b"after the blackhole", qos=1)
        assert await got.wait_for(1) == [b"after the blackhole"]

        # The new link is left alone: more than MISSED intervals of heartbeats come back on
        # it, and one liveness task serves every link.
        seen = len(echoes.items)
        await echoes.wait_for(seen + MISSED + 1, timeout=(MISSED + 3) * INTERVAL)
        assert client.stats.stale_links == 1
        assert client.stats.connects == 2
        assert len(liveness_tasks()) == 1
    assert liveness_tasks() == []


async def test_an_unacknowledged_publish_is_resent_with_dup_on_the_resumed_session(
    make_tcp_proxy: TcpProxyFactory,
) -> None:
    # Debug logging makes Mosquitto print every PUBLISH it receives with its DUP flag: an
    # observer of the wire that does not depend on the client.
    broker = MosquittoBroker(persistence=False, extra_config="log_type debug")
    await broker.astart()
    try:
        proxy = await make_tcp_proxy(broker.host, broker.port)
        topic = unique("resilience/dup")
        client_id = unique("dup")
        client = MQTTClient(
            proxy.url,
            client_id,
            clean_start=False,
            session_expiry_interval=300,
            publish_timeout=1.0,
        )
        downs: Inbox[None] = Inbox()

        async def on_down() -> None:
            proxy.restore()
            downs.add(None)

        client.on_disconnect(on_down)
        async with MosquittoSub(broker, topic, qos=1) as observer, client:
            proxy.blackhole()
            publish = asyncio.create_task(client.publish(topic, b"owed", qos=1))
            await downs.wait_for(1, timeout=6)  # the ack timeout declared the link stale
            await asyncio.wait_for(publish, timeout=5)  # acknowledged on the next link
            captured = await observer.wait_for(1)
            assert captured[0].payload == b"owed"
            conn = client.client
            assert conn is not None
            assert conn.connack.session_present
            assert client.stats.stale_links == 1
        received = [
            line for line in broker.log_text().splitlines() if f"PUBLISH from {client_id} (" in line
        ]
        # The first copy died in the blackhole; the copy that arrived carries DUP (d1).
        assert len(received) == 1
        assert f"Received PUBLISH from {client_id} (d1, q1," in received[0]
    finally:
        await broker.astop()
        broker.close()


async def test_the_ack_clock_starts_at_the_publish_not_at_the_links_last_input(
    shared_mosquitto: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    """With the defaults (no heartbeat, keep-alive 60 s) a live link may read nothing for
    longer than ``publish_timeout``: a publish after such a spell gets its full timeout."""
    loop = asyncio.get_running_loop()
    proxy = await make_tcp_proxy(shared_mosquitto.host, shared_mosquitto.port)
    timeout = 0.5
    client = MQTTClient(proxy.url, unique("idle"), publish_timeout=timeout)
    downs: Inbox[float] = Inbox()

    async def on_down() -> None:
        proxy.restore()
        downs.add(loop.time())

    client.on_disconnect(on_down)
    async with client:
        await asyncio.sleep(2 * timeout)  # the subject is time itself: an idle link
        proxy.blackhole()
        published_at = loop.time()
        publish = asyncio.create_task(client.publish(unique("resilience/idle"), b"x", qos=1))
        [down] = await downs.wait_for(1, timeout=5)
        print(f"\n[idle] stale {down - published_at:.3f} s after the publish")
        assert down - published_at >= timeout - 0.01  # not at once
        await asyncio.wait_for(publish, timeout=5)  # acknowledged on the next link
        assert client.stats.stale_links == 1
