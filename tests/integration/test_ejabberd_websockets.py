"""MQTT over WebSockets on a real broker cluster: ejabberd's ``ejabberd_http`` listener hands
``/mqtt`` to ``mod_mqtt`` (MQTT 5), on every node of the 3-node cluster of the failover tests.

A client gets in over ``ws://`` on every node, a QoS 1 message crosses nodes between a
WebSocket client and a TCP one (the same broker either way), a wrong path is a fatal
``ConnectError`` naming the path (ejabberd answers 404), and a client given the cluster's
WebSocket URLs fails over to another node when its node is killed with ``kill -9``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from support.ejabberd import EjabberdCluster
from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ConnectError, Message, MQTTClient

pytestmark = pytest.mark.ejabberd


@contextlib.asynccontextmanager
async def client_on(url: str, name: str) -> AsyncIterator[MQTTClient]:
    client = MQTTClient(url, unique(name), wait_for_broker=False, connect_timeout=5)
    await client.connect()
    try:
        yield client
    finally:
        await client.shutdown()


async def test_a_websocket_client_connects_to_every_node(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    for node in ejabberd_cluster.nodes:
        async with client_on(node.ws_url, "ws-each") as client:
            assert client.connected
            assert client.broker == f"ws://tars:***@127.0.0.1:{node.ws_port}/mqtt"


@pytest.mark.parametrize(("source", "target"), [("ws", "ws"), ("tcp", "ws"), ("ws", "tcp")])
async def test_a_qos1_message_crosses_nodes_and_transports(
    ejabberd_cluster: EjabberdCluster, source: str, target: str
) -> None:
    nodes = ejabberd_cluster.nodes
    topic = unique("ws/cross")
    inbox: Inbox[tuple[bytes, int]] = Inbox()

    async def on_message(message: Message) -> None:
        inbox.add((message.payload, message.qos))

    sub_url = nodes[1].ws_url if target == "ws" else nodes[1].url
    pub_url = nodes[0].ws_url if source == "ws" else nodes[0].url
    async with client_on(sub_url, "ws-sub") as subscriber, client_on(pub_url, "ws-pub") as pub:
        await subscriber.subscribe(topic, on_message, qos=1)
        payload = f"{source} on node 1 -> {target} on node 2".encode()
        await pub.publish(topic, payload, qos=1)
        [(received, qos)] = await inbox.wait_for(1, timeout=10)
    assert received == payload
    assert qos == 1


async def test_a_wrong_path_is_fatal_and_named(ejabberd_cluster: EjabberdCluster) -> None:
    node = ejabberd_cluster.nodes[0]
    url = node.ws_url.replace("/mqtt", "/nowhere")
    client = MQTTClient(url, unique("ws-404"), connect_timeout=5)  # wait_for_broker: True
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        await client.connect()
    assert time.monotonic() - started < 5  # not retried: a 404 stays a 404
    assert info.value.http_status == 404
    assert info.value.fatal
    assert "'/nowhere'" in str(info.value)
    assert ejabberd_cluster.password not in str(info.value)
    await client.shutdown()


@pytest.mark.slow
async def test_failover_across_websocket_urls_after_kill_9(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    """The client is on node 2 (first of its list) over WebSockets; node 2 is killed with
    ``kill -9``; the client is back on another node's WebSocket URL and a QoS 1 round trip
    through the cluster works again."""
    cluster = ejabberd_cluster
    order = (1, 2, 0)
    url_list = ",".join(cluster.nodes[i].ws_url for i in order)
    topic = unique("ws/failover")
    received: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        received.add(payload)

    client = MQTTClient(url_list, unique("ws-failover"), connect_timeout=5)
    ups: Inbox[str] = Inbox()

    @client.on_connect
    async def up() -> None:
        ups.add(client.broker)

    await client.subscribe(topic, handler, qos=1)
    async with client:
        [first] = await ups.wait_for(1, timeout=10)
        assert first == f"ws://tars:***@127.0.0.1:{cluster.nodes[1].ws_port}/mqtt"
        await client.publish(topic, b"before", qos=1)
        assert await received.wait_for(1, timeout=10) == [b"before"]

        killed_at = time.monotonic()
        await cluster.akill(1)
        [_, second] = await ups.wait_for(2, timeout=15)
        failover = time.monotonic() - killed_at
        assert second == f"ws://tars:***@127.0.0.1:{cluster.nodes[2].ws_port}/mqtt"
        await client.publish(topic, b"after", qos=1)
        assert (await received.wait_for(2, timeout=10))[1] == b"after"
    print(f"\nWebSocket failover: on node 3 {failover:.3f} s after kill -9 of node 2")
