"""The client's own count of who wants a filter stays right when calls cross (in-memory broker).

A filter is unsubscribed from the broker when no subscription of the client wants it any more;
a call that takes back a subscription twice would tell the broker to drop a filter another
handler still wants, and that handler would hear nothing, silently.
"""

from __future__ import annotations

import asyncio

from support.mosquitto_cli import Inbox
from tars.mqtt.testing import InMemoryBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory


async def test_a_cancelled_subscribe_already_unsubscribed_leaves_a_later_one_subscribed(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    """``subscribe(t, first)`` waits for its SUBACK; ``unsubscribe(t)`` takes it back;
    ``subscribe(t, second)`` follows; then the first call is cancelled (a timeout around it).
    The cancelled call has nothing left to take back: ``second`` stays subscribed."""
    service = await mqtt_client_factory("svc")
    panel = await mqtt_client_factory("panel")
    first: Inbox[bytes] = Inbox()
    second: Inbox[bytes] = Inbox()

    async def on_first(payload: bytes) -> None:
        first.add(payload)

    async def on_second(payload: bytes) -> None:
        second.add(payload)

    in_memory_broker.stall("svc")  # every request waits, in order, for unstall()
    subscribing = asyncio.create_task(service.subscribe("x/cmd", on_first, qos=1))
    await asyncio.sleep(0)  # its SUBSCRIBE is queued and it awaits the SUBACK
    unsubscribing = asyncio.create_task(service.unsubscribe("x/cmd"))
    await asyncio.sleep(0)
    again = asyncio.create_task(service.subscribe("x/cmd", on_second, qos=1))
    await asyncio.sleep(0)
    # The crossing the test is about: the first call still awaits its SUBACK, the unsubscribe
    # took its subscription back, the second one holds the filter (else this proves nothing).
    assert not subscribing.done()
    assert not unsubscribing.done()
    assert [s.handler for s in service._dispatcher.subscriptions("x/cmd")] == [on_second]
    subscribing.cancel()
    in_memory_broker.unstall("svc")
    async with asyncio.timeout(5):
        await asyncio.gather(subscribing, return_exceptions=True)
        await unsubscribing
        await again

    await panel.publish("x/cmd", b"go", qos=1)
    await second.wait_for(1)
    assert first.items == []
    assert in_memory_broker.subscriptions("svc") == ["x/cmd"]
