"""How to test a service against broker faults, with the in-memory broker of the testing kit.

Each test is a recipe a service author can copy: the ``in_memory_broker`` and
``mqtt_client_factory`` fixtures come from the tars-core pytest plugin (installed with the
package), the fault is one call on the broker, and the test waits on what the service would
see (a handler call, a reconnection), never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

import pytest

from tars.mqtt import Envelope, MQTTClient, SubscribeError
from tars.mqtt.testing import InMemoryBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory

T = TypeVar("T")


class Seen(Generic[T]):
    """What a handler or hook saw, and a way to wait for it (a few lines to copy)."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[T]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items[:count]


def count_connects(client: MQTTClient) -> Seen[None]:
    """One item per (re)connection from now on, added once the client is usable again."""
    seen: Seen[None] = Seen()

    async def connected() -> None:
        seen.add(None)

    client.on_connect(connected)
    return seen


async def envelope_inbox(client: MQTTClient, topic: str) -> Seen[Envelope]:
    seen: Seen[Envelope] = Seen()

    async def handle(event: Envelope) -> None:
        seen.add(event)

    await client.subscribe(topic, handle, qos=1)
    return seen


async def test_a_duplicate_delivery_is_deduplicated(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    service = await mqtt_client_factory("billing", dedupe_ttl=60, dedupe_max_entries=10_000)
    orders = await envelope_inbox(service, "orders/created")
    shop = await mqtt_client_factory("shop")

    in_memory_broker.duplicate_next("orders/#")  # the next delivery goes out twice
    first = await shop.publish_event("orders/created", "order.created", {"id": 1}, qos=1)
    second = await shop.publish_event("orders/created", "order.created", {"id": 2}, qos=1)

    assert [event.id for event in await orders.wait_for(2)] == [first, second]
    assert service.stats.deduplicated == 1


async def test_without_dedup_a_qos_1_duplicate_reaches_the_handler_twice(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    """QoS 1 is at least once: this is what ``dedupe_ttl`` is for."""
    service = await mqtt_client_factory("billing")  # dedupe_ttl=0: off
    orders = await envelope_inbox(service, "orders/created")
    shop = await mqtt_client_factory("shop")

    in_memory_broker.duplicate_next("orders/#")
    sent = await shop.publish_event("orders/created", "order.created", {"id": 1}, qos=1)

    assert [event.id for event in await orders.wait_for(2)] == [sent, sent]


async def test_a_dropped_link_is_survived(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    service = await mqtt_client_factory("billing", reconnect_min_delay=0.05)
    orders = await envelope_inbox(service, "orders/created")
    connects = count_connects(service)
    shop = await mqtt_client_factory("shop")

    await in_memory_broker.drop_link("billing")  # no DISCONNECT: a network failure
    await connects.wait_for(1)  # reconnected, subscriptions restored

    assert in_memory_broker.subscriptions("billing") == ["orders/created"]
    sent = await shop.publish_event("orders/created", "order.created", {"id": 1}, qos=1)
    assert [event.id for event in await orders.wait_for(1)] == [sent]


async def test_a_stalled_link_is_detected_by_the_watchdog_and_replaced(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    """A half-open link: no error, no close, just silence. Only the heartbeat round trip
    notices it (after ``heartbeat_interval * watchdog_missed_heartbeats`` seconds)."""
    service = await mqtt_client_factory(
        "billing",
        enable_heartbeat=True,
        heartbeat_interval=1,
        watchdog_missed_heartbeats=2,
        reconnect_min_delay=0.05,
    )
    orders = await envelope_inbox(service, "orders/created")
    lost: Seen[None] = Seen()

    async def disconnected() -> None:
        lost.add(None)

    service.on_disconnect(disconnected)
    connects = count_connects(service)
    shop = await mqtt_client_factory("shop")

    in_memory_broker.stall("billing")
    await lost.wait_for(1, timeout=5)  # the watchdog gave up on the silent link
    assert service.stats.stale_links == 1
    await connects.wait_for(1)  # a new link, the old one taken over by the broker

    sent = await shop.publish_event("orders/created", "order.created", {"id": 1}, qos=1)
    assert [event.id for event in await orders.wait_for(1)] == [sent]
    in_memory_broker.unstall()  # nothing is left to unstall: the stalled link is gone
    assert service.connected


async def test_a_refused_subscription_raises_subscribe_error(
    in_memory_broker: InMemoryBroker, mqtt_client: MQTTClient
) -> None:
    in_memory_broker.refuse_subscriptions("admin/#")  # 0x87: not authorized

    async def handle(payload: bytes) -> None:
        raise AssertionError("never subscribed, never called")

    with pytest.raises(SubscribeError) as refused:
        await mqtt_client.subscribe("admin/users", handle)
    assert (refused.value.topic, refused.value.reason_code) == ("admin/users", 0x87)
    assert in_memory_broker.subscriptions("test-client") == []

    in_memory_broker.clear_faults()
    await mqtt_client.subscribe("admin/users", handle)
    assert in_memory_broker.subscriptions("test-client") == ["admin/users"]


@pytest.mark.parametrize("session_expiry", [0, 60])
async def test_a_broker_restart_that_loses_sessions_is_followed_by_resubscribing(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory, session_expiry: int
) -> None:
    """Whether or not the service asked for a persistent session, a broker that comes back
    without it (CONNACK session present = 0) gets the subscriptions again."""
    service = await mqtt_client_factory(
        "billing", session_expiry_interval=session_expiry, reconnect_min_delay=0.05
    )
    orders = await envelope_inbox(service, "orders/created")
    connects = count_connects(service)

    await in_memory_broker.restart(keep_sessions=False, downtime=0.2)
    assert in_memory_broker.subscriptions("billing") == []
    await connects.wait_for(1)

    assert in_memory_broker.subscriptions("billing") == ["orders/created"]
    shop = await mqtt_client_factory("shop")
    sent = await shop.publish_event("orders/created", "order.created", {"id": 1}, qos=1)
    assert [event.id for event in await orders.wait_for(1)] == [sent]


async def test_a_broker_restart_that_keeps_sessions_keeps_the_subscriptions(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    service = await mqtt_client_factory(
        "billing", session_expiry_interval=60, reconnect_min_delay=0.05
    )
    orders = await envelope_inbox(service, "orders/created")
    connects = count_connects(service)

    await in_memory_broker.restart(keep_sessions=True)
    assert in_memory_broker.subscriptions("billing") == ["orders/created"]  # while away
    await connects.wait_for(1)

    shop = await mqtt_client_factory("shop")
    sent = await shop.publish_event("orders/created", "order.created", {"id": 1}, qos=1)
    assert [event.id for event in await orders.wait_for(1)] == [sent]
