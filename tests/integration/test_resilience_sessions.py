"""Persistent sessions against a real Mosquitto: what a service gets back after being away.

With ``clean_start=False``, a session expiry interval and a stable client id, the broker keeps
the service's subscriptions and queues its QoS 1/2 messages while it is gone; the next process
with that id receives them. With the default clean session, they are lost (by design).
"""

from __future__ import annotations

import pytest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ClientOptions, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

PERSISTENT: ClientOptions = {"clean_start": False, "session_expiry_interval": 300}


class Handler:
    def __init__(self) -> None:
        self.got: Inbox[bytes] = Inbox()

    async def __call__(self, payload: bytes) -> None:
        self.got.add(payload)


async def publish_while_away(broker: MosquittoBroker, topics: dict[str, int]) -> None:
    async with MQTTClient(broker.url, unique("away-pub")) as publisher:
        for topic, qos in topics.items():
            for payload in sent_while_away(topic):
                await publisher.publish(topic, payload, qos=qos)


def sent_while_away(topic: str) -> list[bytes]:
    return [b"%s-%d" % (topic.encode(), n) for n in range(3)]


async def test_messages_published_while_a_service_was_away_are_delivered_when_it_returns(
    mosquitto_broker: MosquittoBroker,
) -> None:
    service_id = unique("service")
    alerts, orders = unique("resilience/alerts"), unique("resilience/orders")
    first = MQTTClient(mosquitto_broker.url, service_id, **PERSISTENT)
    await first.subscribe(alerts, Handler(), qos=1)
    await first.subscribe(orders, Handler(), qos=2)
    await first.connect()
    await first.shutdown()  # the service goes away; its session stays on the broker

    await publish_while_away(mosquitto_broker, {alerts: 1, orders: 2})

    # The next version of the service subscribes in another order: what was queued for it
    # still reaches the right handler.
    on_orders, on_alerts = Handler(), Handler()
    second = MQTTClient(mosquitto_broker.url, service_id, **PERSISTENT)
    await second.subscribe(orders, on_orders, qos=2)
    await second.subscribe(alerts, on_alerts, qos=1)
    async with second:
        conn = second.client
        assert conn is not None
        assert conn.connack.session_present
        assert await on_alerts.got.wait_for(3) == sent_while_away(alerts)
        assert await on_orders.got.wait_for(3) == sent_while_away(orders)
        await second.publish(alerts, b"live", qos=1)
        await on_alerts.got.wait_for(4)
    assert len(on_orders.got.items) == 3
    assert len(on_alerts.got.items) == 4
    assert second.stats.unmatched == 0


async def test_a_clean_session_gets_nothing_published_while_it_was_away(
    mosquitto_broker: MosquittoBroker,
) -> None:
    service_id = unique("forgetful")
    topic = unique("resilience/clean")
    first = MQTTClient(mosquitto_broker.url, service_id)
    await first.subscribe(topic, Handler(), qos=1)
    await first.connect()
    await first.shutdown()

    await publish_while_away(mosquitto_broker, {topic: 1})

    handler = Handler()
    second = MQTTClient(mosquitto_broker.url, service_id)
    await second.subscribe(topic, handler, qos=1)
    async with second:
        await second.publish(topic, b"live", qos=1)
        assert await handler.got.wait_for(1) == [b"live"]
    assert handler.got.items == [b"live"]


async def test_a_filter_unsubscribed_while_offline_is_removed_from_a_resumed_session(
    mosquitto_broker: MosquittoBroker,
) -> None:
    from tars.mqtt.testing import TcpFaultProxy

    gone, kept = unique("resilience/gone"), unique("resilience/kept")
    async with TcpFaultProxy("127.0.0.1", mosquitto_broker.port) as proxy:
        client = MQTTClient(proxy.url, unique("unsub-offline"), **PERSISTENT)
        on_gone, on_kept = Handler(), Handler()
        raw: Inbox[str] = Inbox()
        client.add_message_listener(lambda packet: raw.add(packet.topic))
        await client.subscribe(gone, on_gone, qos=1)
        await client.subscribe(kept, on_kept, qos=1)
        reconnected: Inbox[None] = Inbox()

        async def on_connect() -> None:
            reconnected.add(None)

        client.on_connect(on_connect)
        async with client:
            proxy.refuse()
            await proxy.drop_connections()
            await client.unsubscribe(gone)  # no link: the broker still holds the filter
            proxy.refuse(False)
            await reconnected.wait_for(2, timeout=10)
            assert client.client is not None
            assert client.client.connack.session_present  # resumed: the old filters live on
            async with MQTTClient(mosquitto_broker.url, unique("pub")) as publisher:
                await publisher.publish(gone, b"should not come", qos=1)
                await publisher.publish(kept, b"sentinel", qos=1)
            # Same publisher, same session: had the filter survived, its message would have
            # come before the sentinel.
            assert await on_kept.got.wait_for(1, timeout=5) == [b"sentinel"]
            assert gone not in raw.items
            assert client.stats.unmatched == 0
