"""The RabbitMQ cluster runner (tests/support/rabbitmq.py): three real nodes, one cluster,
MQTT 3.1.1 over TCP and WebSockets.

What the failover tests on RabbitMQ build on, and issue 22's "Done when" for RabbitMQ: a
tars-core client with the default ``protocol="auto"`` gets in on every node over TCP and over
WebSockets (RabbitMQ closes the link on an MQTT 5 CONNECT: the client falls back to 3.1.1), a
QoS 1 message crosses nodes and transports, two 3.1.1 services exchange envelopes,
request/reply and health through the cluster, a node killed with ``kill -9`` comes back and
rejoins, and the RabbitMQ facts that docs/scale-out.md relies on hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from support.exchange import exchange, service
from support.mosquitto_cli import Inbox, unique
from support.rabbitmq import RabbitMQCluster
from tars.mqtt import ConnectError, Message, MQTTClient

# RabbitMQ boots slowly (about 50 s for the cluster on a loaded machine): the first test of a
# session pays for it within its own timeout.
pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]


def url_of(cluster: RabbitMQCluster, index: int, transport: str) -> str:
    node = cluster.nodes[index]
    return node.ws_url if transport == "ws" else node.url


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_an_auto_client_connects_to_every_node_in_311(
    rabbitmq_cluster: RabbitMQCluster, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tars.mqtt")
    for node in rabbitmq_cluster.nodes:
        url = node.ws_url if transport == "ws" else node.url
        async with service(url, "each") as client:  # protocol="auto", the default
            assert client.connected
            shown = node.redacted_ws_url if transport == "ws" else node.redacted_url
            assert client.broker == shown
            assert f"speaks MQTT 3.1.1 with {shown}" in caplog.text
    assert rabbitmq_cluster.password not in caplog.text


@pytest.mark.parametrize(("source", "target"), [("tcp", "tcp"), ("ws", "ws"), ("tcp", "ws")])
async def test_a_qos1_message_crosses_nodes_and_transports(
    rabbitmq_cluster: RabbitMQCluster, source: str, target: str
) -> None:
    topic = unique("rmq/cross")
    inbox: Inbox[tuple[bytes, int]] = Inbox()

    async def on_message(message: Message) -> None:
        inbox.add((message.payload, message.qos))

    async with (
        service(url_of(rabbitmq_cluster, 2, target), "sub", protocol="3.1.1") as subscriber,
        service(url_of(rabbitmq_cluster, 0, source), "pub", protocol="3.1.1") as publisher,
    ):
        await subscriber.subscribe(topic, on_message, qos=1)
        payload = f"{source} on node 1 -> {target} on node 3".encode()
        await publisher.publish(topic, payload, qos=1)
        assert await inbox.wait_for(1, timeout=10) == [(payload, 1)]


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_two_311_services_exchange_envelopes_requests_and_health(
    rabbitmq_cluster: RabbitMQCluster, transport: str
) -> None:
    """Issue 22's "Done when" on RabbitMQ: both services on 3.1.1 (RabbitMQ has nothing else),
    on two different nodes; the health status is read on the node it was published on
    (RabbitMQ keeps retained messages per node: see the next test)."""
    url_a = url_of(rabbitmq_cluster, 0, transport)
    url_b = url_of(rabbitmq_cluster, 1, transport)
    done = await exchange(url_a, url_b, health_url=url_a)
    done.check()


async def test_an_auto_service_and_a_311_one_exchange_through_the_cluster(
    rabbitmq_cluster: RabbitMQCluster,
) -> None:
    """``protocol="auto"`` falls back on RabbitMQ and then behaves as a 3.1.1 service."""
    done = await exchange(
        rabbitmq_cluster.nodes[2].ws_url,
        rabbitmq_cluster.nodes[1].url,
        protocol_a="auto",
        protocol_b="3.1.1",
        health_url=rabbitmq_cluster.nodes[2].url,
    )
    done.check()


async def test_a_5_only_client_is_refused(rabbitmq_cluster: RabbitMQCluster) -> None:
    """RabbitMQ 3.10 closes the link on an MQTT 5 CONNECT without a CONNACK."""
    client = MQTTClient(
        rabbitmq_cluster.nodes[0].url,
        unique("v5"),
        protocol="5",
        wait_for_broker=False,
        connect_timeout=5,
    )
    with pytest.raises(ConnectError, match="closed"):
        await client.connect()
    await client.shutdown()


async def test_a_5_only_client_refused_by_a_311_broker_is_told_what_to_try(
    rabbitmq_cluster: RabbitMQCluster,
) -> None:
    client = MQTTClient(
        rabbitmq_cluster.nodes[0].url,
        unique("v5"),
        protocol="5",
        wait_for_broker=False,
        connect_timeout=5,
    )
    with pytest.raises(ConnectError) as info:
        await client.connect()
    await client.shutdown()
    assert "3.1.1" in str(info.value)


async def test_a_node_killed_with_sigkill_comes_back_and_rejoins(
    rabbitmq_cluster: RabbitMQCluster,
) -> None:
    cluster = rabbitmq_cluster
    node = cluster.nodes[1]
    pid = node.pid
    assert pid is not None
    await cluster.akill(1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # really gone (reaped), not just asked to stop

    topic = unique("rmq/rejoin")
    inbox: Inbox[bytes] = Inbox()

    async def on_message(payload: bytes) -> None:
        inbox.add(payload)

    # The others keep serving meanwhile.
    async with (
        service(cluster.nodes[2].url, "sub", protocol="3.1.1") as subscriber,
        service(cluster.nodes[0].url, "pub", protocol="3.1.1") as publisher,
    ):
        await subscriber.subscribe(topic, on_message, qos=1)
        await publisher.publish(topic, b"while node 2 is dead", qos=1)
        assert await inbox.wait_for(1, timeout=10) == [b"while node 2 is dead"]

    started = time.monotonic()
    await cluster.astart_node(1)
    listening = time.monotonic() - started
    assert node.pid not in (None, pid)
    assert await cluster.arunning_nodes(1) == {n.name for n in cluster.nodes}
    async with (
        service(cluster.nodes[1].ws_url, "sub2", protocol="3.1.1") as subscriber,
        service(cluster.nodes[0].url, "pub2", protocol="3.1.1") as publisher,
    ):
        await subscriber.subscribe(topic, on_message, qos=1)
        await publisher.publish(topic, b"to the restarted node", qos=1)
        assert (await inbox.wait_for(2, timeout=10))[1] == b"to the restarted node"
    print(f"\nRabbitMQ node 2 listening again {listening:.1f} s after start, rejoined, routing")
    assert listening < 90


async def test_rabbitmq_keeps_a_retained_message_on_the_node_it_was_published_on(
    rabbitmq_cluster: RabbitMQCluster,
) -> None:
    """docs/scale-out.md: RabbitMQ 3.10 stores retained messages per node (its retained
    message store is local), as ejabberd does: a retained health status is seen by
    subscribers on the node the service published it on only."""
    cluster = rabbitmq_cluster
    topic = unique("rmq/health")
    async with service(cluster.nodes[0].url, "retainer", protocol="3.1.1") as publisher:
        await publisher.publish(topic, b"online", qos=1, retain=True)

    async def first_message(index: int) -> bytes:
        inbox: Inbox[bytes] = Inbox()

        async def on_message(payload: bytes) -> None:
            inbox.add(payload)

        async with service(cluster.nodes[index].url, "reader", protocol="3.1.1") as reader:
            await reader.subscribe(topic, on_message, qos=1)
            await reader.publish(topic, b"live", qos=1)
            return (await inbox.wait_for(1, timeout=10))[0]

    assert await first_message(0) == b"online"
    assert await first_message(2) == b"live"


async def test_a_qos2_publish_is_taken_at_qos1_counted_and_said(
    rabbitmq_cluster: RabbitMQCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """RabbitMQ 3.10 has no QoS 2: it answers a QoS 2 PUBLISH with PUBACK. The publisher is not
    held for a PUBREC that never comes: each publish returns, is delivered (at QoS 1), and the
    downgrade is counted and said once."""
    topic = unique("rmq/qos2")
    inbox: Inbox[tuple[bytes, int]] = Inbox()

    async def on_message(message: Message) -> None:
        inbox.add((message.payload, message.qos))

    async with (
        service(rabbitmq_cluster.nodes[0].url, "sub2", protocol="3.1.1") as subscriber,
        service(rabbitmq_cluster.nodes[0].url, "pub2", protocol="3.1.1") as publisher,
    ):
        await subscriber.subscribe(topic, on_message, qos=2)
        async with asyncio.timeout(10):
            for n in range(3):
                await publisher.publish(topic, f"{n}".encode(), qos=2)
        assert await inbox.wait_for(3, timeout=10) == [(b"0", 1), (b"1", 1), (b"2", 1)]
        assert publisher.stats.qos2_downgraded == 3
        assert publisher.stats.inflight == 0
        said = [r.getMessage() for r in caplog.records if "qos2_downgraded" in r.getMessage()]
        assert len(said) == 1
