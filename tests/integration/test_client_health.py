"""Heartbeat, health status and the last will (issue 3 §6), seen by an independent subscriber.

What the client puts on ``system/keepalive/{id}`` and ``system/health/{id}`` is read by another
subscriber (``broker.watch``: a client of the in-memory broker's own, or ``mosquitto_sub``), so
these tests check the wire, not the client's idea of it. They run on the in-memory broker; the
health lifecycle also on Mosquitto, and the will after a link cut by a TCP proxy on Mosquitto
only. The payload schemas themselves are checked in ``tests/contract``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from support.brokers import BOTH, Broker
from support.mosquitto_cli import Captured, MosquittoSub, mosquitto_pub, unique
from tars.mqtt import MQTTClient, health_topic, keepalive_topic
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory


def health_of(captured: Captured) -> dict[str, Any]:
    """The envelope of a captured health status, after checking its fixed parts."""
    envelope: dict[str, Any] = json.loads(captured.payload)
    assert envelope["type"] == "health.status"
    data = envelope["data"]
    # Absent fields are left out: ``err`` only with an error (``event`` is always given here).
    assert set(data) == {"ok", "event", "timestamp"} | ({"err"} if "err" in data else set())
    assert data.get("err", "set") is not None
    assert isinstance(envelope["data"]["timestamp"], float)
    return envelope


async def retained_health(broker: Broker | MosquittoBroker, client_id: str) -> Captured:
    """What a newcomer reads on the health topic: the retained status."""
    if isinstance(broker, MosquittoBroker):
        async with MosquittoSub(broker, health_topic(client_id), qos=1, count=1) as sub:
            [captured] = await sub.wait_for(1)
    else:
        async with broker.watch(health_topic(client_id), qos=1) as watcher:
            [captured] = await watcher.wait_for(1)
    assert captured.retain
    return captured


# --- heartbeat --------------------------------------------------------------------------------


async def test_heartbeat_payload_topic_qos_and_interval(broker: Broker) -> None:
    client_id = unique("beat")
    async with broker.watch(keepalive_topic(client_id), qos=1) as sub:
        client = broker.client(client_id, enable_heartbeat=True, heartbeat_interval=1)
        async with client:
            first, second = await sub.wait_for(2, timeout=4)
    for beat in (first, second):
        assert beat.topic == f"system/keepalive/{client_id}"
        assert (beat.qos, beat.retain) == (0, False)  # QoS 0 even to a QoS 1 subscriber
        payload = json.loads(beat.payload)
        assert set(payload) == {"ok", "event", "timestamp"}
        assert (payload["ok"], payload["event"]) == (True, "heartbeat")
        assert isinstance(payload["timestamp"], float)
    gap = json.loads(second.payload)["timestamp"] - json.loads(first.payload)["timestamp"]
    assert 0.9 <= gap <= 1.9  # 1 s, with room for a busy machine (the default is 5 s)


async def test_no_heartbeat_when_disabled(broker: Broker) -> None:
    client_id = unique("nobeat")
    async with (
        broker.watch(keepalive_topic(client_id)) as sub,
        broker.connected_client(heartbeat_interval=1) as client,
    ):
        # Enabled, a heartbeat goes out at connect and then every second: 1.5 s with none
        # proves it is off.
        assert not client.config.enable_heartbeat
        await asyncio.sleep(1.5)
    assert sub.messages.items == []


# --- health ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("broker", BOTH, indirect=True)
async def test_health_ready_on_connect_and_shutdown_on_shutdown(
    broker: Broker,
) -> None:
    client_id = unique("health")
    async with broker.watch(health_topic(client_id), qos=1) as live:
        client = broker.client(client_id, enable_health=True, source_name="svc")
        await client.connect()
        [ready] = await live.wait_for(1)
        retained_ready = await retained_health(broker, client_id)
        await client.shutdown()
        bye = (await live.wait_for(2))[1]
    retained_bye = await retained_health(broker, client_id)

    assert ready.qos == 1
    envelope = health_of(ready)
    assert envelope["source"] == "svc"
    assert envelope["data"]["ok"] is True
    assert envelope["data"]["event"] == "ready"
    assert "err" not in envelope["data"]
    assert health_of(retained_ready)["id"] == envelope["id"]

    assert bye.qos == 1
    assert health_of(bye)["data"]["ok"] is False
    assert health_of(bye)["data"]["event"] == "shutdown"
    assert health_of(retained_bye)["id"] == health_of(bye)["id"]


async def test_no_health_when_disabled(broker: Broker) -> None:
    client_id = unique("nohealth")
    async with broker.watch(health_topic(client_id), qos=1) as live:
        async with broker.client(client_id) as client:
            await client.publish(health_topic(client_id), b"sentinel", qos=1)
        [only] = await live.wait_for(1)
    assert only.payload == b"sentinel"  # no "ready" before it, and no "shutdown" after it
    assert len(live.messages.items) == 1


async def test_publish_health_with_a_custom_error(broker: Broker) -> None:
    client_id = unique("custom")
    async with broker.watch(health_topic(client_id), qos=1) as live:
        async with broker.client(client_id) as client:
            msg_id = await client.publish_health(False, "degraded", "disk full")
            [captured] = await live.wait_for(1)
        retained = await retained_health(broker, client_id)
    envelope = health_of(captured)
    assert envelope["id"] == msg_id
    assert envelope["data"]["ok"] is False
    assert (envelope["data"]["event"], envelope["data"]["err"]) == ("degraded", "disk full")
    assert captured.qos == 1
    assert health_of(retained)["id"] == msg_id


@pytest.mark.mosquitto
async def test_the_will_marks_a_dead_link_unhealthy(
    shared_mosquitto: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await make_tcp_proxy(shared_mosquitto.host, shared_mosquitto.port)
    client_id = unique("will")
    lost = asyncio.Event()
    client = MQTTClient(proxy.url, client_id, enable_health=True, reconnect_min_delay=0.05)

    @client.on_disconnect
    async def on_lost() -> None:
        lost.set()

    async with MosquittoSub(shared_mosquitto, health_topic(client_id), qos=1) as live:
        await client.connect()
        try:
            await live.wait_for(1)  # "ready"
            proxy.refuse()  # so it cannot come back and overwrite the will with "reconnected"
            await proxy.drop_connections()  # no DISCONNECT reaches the broker: it sends the will
            will = (await live.wait_for(2))[1]
            await asyncio.wait_for(lost.wait(), 5)
            assert not client.connected
            assert client.client is None
        finally:
            await client.shutdown()
    retained = await retained_health(shared_mosquitto, client_id)

    envelope = health_of(will)
    assert envelope["data"]["ok"] is False
    assert envelope["data"]["event"] == "offline"
    assert envelope["data"]["err"]
    assert envelope["source"] == client_id
    assert health_of(retained)["id"] == envelope["id"]


@pytest.mark.mosquitto
async def test_no_will_without_health(
    shared_mosquitto: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await make_tcp_proxy(shared_mosquitto.host, shared_mosquitto.port)
    client_id = unique("nowill")
    client = MQTTClient(proxy.url, client_id)
    async with MosquittoSub(shared_mosquitto, health_topic(client_id), qos=1) as live:
        await client.connect()
        try:
            proxy.refuse()
            await proxy.drop_connections()  # the broker has seen the link die when this returns
            await mosquitto_pub(shared_mosquitto, health_topic(client_id), b"sentinel", qos=1)
            [only] = await live.wait_for(1)
        finally:
            await client.shutdown()
    assert only.payload == b"sentinel"
