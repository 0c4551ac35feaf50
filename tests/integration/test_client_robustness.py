"""What a misbehaving caller, broker or moment must not do to the client (review findings).

On the in-memory broker of the testing kit: the faults are exact and the tests fast.
"""

from __future__ import annotations

import asyncio

import pytest

from support.mosquitto_cli import Inbox
from tars.mqtt import ClientState, ConnectError, Message, MQTTClient, PayloadTooLarge
from tars.mqtt.testing import InMemoryBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory


def link_events(client: MQTTClient) -> tuple[Inbox[None], Inbox[None]]:
    """(links up, links lost), from the client's own hooks: wait on these, never poll."""
    ups: Inbox[None] = Inbox()
    downs: Inbox[None] = Inbox()

    async def up() -> None:
        ups.add(None)

    async def down() -> None:
        downs.add(None)

    client.on_connect(up)
    client.on_disconnect(down)
    return ups, downs


async def test_bad_publish_properties_fail_the_call_not_a_later_reconnect(
    mqtt_client_factory: MQTTClientFactory, in_memory_broker: InMemoryBroker
) -> None:
    client = await mqtt_client_factory("props")
    ups, downs = link_events(client)
    with pytest.raises(TypeError, match="properties"):
        await client.publish("t", b"x", qos=1, properties={"bogus": 1})
    restarting = asyncio.create_task(in_memory_broker.restart(downtime=0.3))
    await downs.wait_for(1)
    assert client.state is ClientState.RECONNECTING
    with pytest.raises(TypeError, match="properties"):  # offline: refused, not queued
        await client.publish("t", b"x", qos=1, wait=False, properties={"bogus": 1})
    await restarting
    await ups.wait_for(1)
    assert client.state is ClientState.CONNECTED
    await client.publish("t", b"after", qos=1)


async def test_a_queued_message_the_broker_cannot_take_fails_alone() -> None:
    # The outbox keeps a message the next broker's Maximum Packet Size refuses: that message's
    # publish fails with PayloadTooLarge; the link comes up and everything else goes on.
    async with InMemoryBroker(max_packet_size=1024) as broker:
        client = MQTTClient(broker.url, "outbox-size", connector=broker.connector)
        got: Inbox[bytes] = Inbox()

        async def on_t(payload: bytes) -> None:
            got.add(payload)

        await client.subscribe("t", on_t, qos=1)
        _, downs = link_events(client)
        async with client:
            restarting = asyncio.create_task(broker.restart(downtime=0.3))
            await downs.wait_for(1)
            too_big = asyncio.create_task(client.publish("t", b"x" * 4000, qos=1))
            fine = asyncio.create_task(client.publish("t", b"small", qos=1))
            await restarting
            with pytest.raises(PayloadTooLarge):
                await asyncio.wait_for(too_big, timeout=5)
            await asyncio.wait_for(fine, timeout=5)
            assert await got.wait_for(1) == [b"small"]
            assert client.connected


async def test_a_host_name_the_resolver_cannot_encode_fails_fast() -> None:
    # A label over 63 characters makes the IDNA codec raise UnicodeError inside getaddrinfo.
    client = MQTTClient(f"mqtt://{'a' * 64}.invalid:1883", "idna", wait_for_broker=False)
    with pytest.raises(ConnectError):
        await asyncio.wait_for(client.connect(), timeout=5)
    assert client.state is ClientState.CLOSED


async def test_a_block_queue_that_fills_during_restore_does_not_stall_the_link(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    publisher = await mqtt_client_factory("retainer")
    for n in range(5):
        await publisher.publish(f"state/{n}", b"%d" % n, qos=1, retain=True)
    client = MQTTClient(in_memory_broker.url, "blocky", connector=in_memory_broker.connector)
    seen: Inbox[bytes] = Inbox()

    async def slow(payload: bytes) -> None:
        await asyncio.sleep(0.01)
        seen.add(payload)

    # The five retained messages arrive while the subscription is being restored on the new
    # link and overflow the one-slot queue: reading pauses, then resumes as it drains.
    await client.subscribe("state/#", slow, qos=1, queue_size=1, overflow="block")
    async with client:
        assert sorted(await seen.wait_for(5)) == [b"0", b"1", b"2", b"3", b"4"]

        async def other(msg: Message) -> None:
            seen.add(msg.payload)

        await asyncio.wait_for(client.subscribe("later", other), timeout=5)
        await publisher.publish("later", b"after", qos=1)
        assert (await seen.wait_for(6))[5] == b"after"


async def test_no_reconnect_once_shutdown_has_begun(
    in_memory_broker: InMemoryBroker,
) -> None:
    client = MQTTClient(
        in_memory_broker.url, "closing", connector=in_memory_broker.connector, enable_health=True
    )
    connects: Inbox[None] = Inbox()

    async def on_connect() -> None:
        connects.add(None)

    client.on_connect(on_connect)
    await client.connect()
    await connects.wait_for(1)
    in_memory_broker.stall("closing")  # acks stop: the goodbye waits for them
    await client.publish("t", b"pending", qos=1, wait=False)
    closing = asyncio.create_task(client.shutdown(timeout=2))
    await asyncio.sleep(0)  # one step: shutdown() marks the client closing before it awaits
    assert client.state is ClientState.CLOSING
    await in_memory_broker.drop_link("closing")  # the link dies during the goodbye
    in_memory_broker.unstall("closing")
    await asyncio.wait_for(closing, timeout=5)
    assert client.state is ClientState.CLOSED
    assert len(connects.items) == 1  # never reconnected behind shutdown's back
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("tars-")] == []
