"""The ejabberd cluster runner (tests/support/ejabberd.py): three real nodes, one cluster.

What the failover tests build on: a tars-core client gets in on every node, a message crosses
nodes, a node killed with ``kill -9`` comes back and rejoins, and the ejabberd facts that
docs/scale-out.md relies on (no ``$share``) hold.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator

import mqtt5
import pytest

from support import RawMQTT
from support.ejabberd import EjabberdCluster
from support.mosquitto_cli import Inbox, unique
from tars.mqtt import MQTTClient

pytestmark = pytest.mark.ejabberd


@contextlib.asynccontextmanager
async def client_on(url: str, name: str) -> AsyncIterator[MQTTClient]:
    client = MQTTClient(url, unique(name), wait_for_broker=False, connect_timeout=5)
    await client.connect()
    try:
        yield client
    finally:
        await client.shutdown()


async def crosses(cluster: EjabberdCluster, source: int, target: int) -> bytes:
    """Publish one QoS 1 message on node ``source``; return what a subscriber on ``target`` got."""
    topic = unique("cluster/cross")
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    async with (
        client_on(cluster.nodes[target].url, "sub") as subscriber,
        client_on(cluster.nodes[source].url, "pub") as publisher,
    ):
        await subscriber.subscribe(topic, handler, qos=1)
        payload = f"from node {source + 1} to node {target + 1}".encode()
        await publisher.publish(topic, payload, qos=1)
        [received] = await inbox.wait_for(1, timeout=10)
        return received


async def test_a_client_connects_to_every_node(ejabberd_cluster: EjabberdCluster) -> None:
    ports = set()
    for node in ejabberd_cluster.nodes:
        async with client_on(node.url, "each") as client:
            assert client.connected
            ports.add(client.config.connection.port)
    assert len(ports) == 3


async def test_a_qos1_message_published_on_node_1_reaches_a_subscriber_on_node_3(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    assert await crosses(ejabberd_cluster, 0, 2) == b"from node 1 to node 3"


async def test_a_node_killed_with_sigkill_comes_back_and_rejoins(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    node = ejabberd_cluster.nodes[1]
    pid = node.pid
    assert pid is not None
    await ejabberd_cluster.akill(1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # really gone (reaped), not just asked to stop
    # The others keep serving meanwhile.
    assert await crosses(ejabberd_cluster, 0, 2) == b"from node 1 to node 3"

    started = time.monotonic()
    await ejabberd_cluster.astart_node(1)
    listening = time.monotonic() - started
    assert node.pid not in (None, pid)
    # Rejoined: routes both ways between the restarted node and the others.
    assert await crosses(ejabberd_cluster, 1, 0) == b"from node 2 to node 1"
    assert await crosses(ejabberd_cluster, 2, 1) == b"from node 3 to node 2"
    print(f"node 2 listening again {listening:.2f} s after start, routing both ways")
    assert listening < 20


async def test_ejabberd_refuses_shared_subscriptions(ejabberd_cluster: EjabberdCluster) -> None:
    """docs/scale-out.md: worker groups need ``$share``, which ejabberd 23.01 does not offer.

    Its CONNACK says so, and a SUBSCRIBE to a ``$share`` filter gets no SUBACK: the broker
    closes the link with DISCONNECT 0x9E. A client must check the CONNACK before it subscribes.
    """
    c = ejabberd_cluster
    peer = await RawMQTT.open(c.host, c.nodes[0].mqtt_port)
    try:
        await peer.send(
            mqtt5.ConnectPacket(unique("share"), username=c.username, password=c.password.encode())
        )
        connack = await peer.receive()
        assert isinstance(connack, mqtt5.ConnAckPacket)
        assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        assert connack.shared_subscription_available is False
        await peer.send(
            mqtt5.SubscribePacket(
                1, [mqtt5.TopicFilter("$share/g/jobs", max_qos=mqtt5.QoS.AT_LEAST_ONCE)]
            )
        )
        answer = await peer.receive()
        assert isinstance(answer, mqtt5.DisconnectPacket)
        assert answer.reason_code == mqtt5.DisconnectReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
    finally:
        await peer.close()


async def raw_client(cluster: EjabberdCluster, index: int, name: str) -> RawMQTT:
    peer = await RawMQTT.open(cluster.host, cluster.nodes[index].mqtt_port)
    connect = mqtt5.ConnectPacket(
        unique(name), username=cluster.username, password=cluster.password.encode(), keep_alive=30
    )
    await peer.send(connect)
    connack = await peer.receive()
    assert isinstance(connack, mqtt5.ConnAckPacket)
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    return peer


async def first_message(cluster: EjabberdCluster, index: int, topic: str) -> bytes:
    """Subscribe on node ``index``, then publish a live message there: the first message the
    subscriber gets is a retained one if the node has it (sent right after the SUBACK), else
    the live one."""
    subscriber = await raw_client(cluster, index, "retained-sub")
    publisher = await raw_client(cluster, index, "live-pub")
    try:
        qos1 = mqtt5.QoS.AT_LEAST_ONCE
        await subscriber.send(mqtt5.SubscribePacket(1, [mqtt5.TopicFilter(topic, max_qos=qos1)]))
        assert isinstance(await subscriber.receive(), mqtt5.SubAckPacket)
        await publisher.send(mqtt5.PublishPacket(topic, b"live", qos=qos1, packet_id=1))
        assert isinstance(await publisher.receive(), mqtt5.PubAckPacket)
        message = await subscriber.receive()
        assert isinstance(message, mqtt5.PublishPacket)
        return message.payload
    finally:
        await subscriber.close()
        await publisher.close()


async def test_ejabberd_keeps_a_retained_message_on_the_node_it_was_published_on(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    """docs/scale-out.md: on ejabberd 23.01 a retained health status is only seen by
    subscribers on the node the service published it on."""
    topic = unique("cluster/health")
    publisher = await raw_client(ejabberd_cluster, 0, "retainer")
    try:
        retained = mqtt5.PublishPacket(
            topic, b"online", qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True, packet_id=1
        )
        await publisher.send(retained)
        assert isinstance(await publisher.receive(), mqtt5.PubAckPacket)
    finally:
        await publisher.close()
    assert await first_message(ejabberd_cluster, 0, topic) == b"online"
    assert await first_message(ejabberd_cluster, 2, topic) == b"live"


async def resume(cluster: EjabberdCluster, index: int, client_id: str) -> mqtt5.ConnAckPacket:
    """Connect with clean_start=False, return the CONNACK, leave (the session stays 10 min)."""
    peer = await RawMQTT.open(cluster.host, cluster.nodes[index].mqtt_port)
    try:
        await peer.send(
            mqtt5.ConnectPacket(
                client_id,
                username=cluster.username,
                password=cluster.password.encode(),
                clean_start=False,
                session_expiry_interval=600,
            )
        )
        connack = await peer.receive()
        assert isinstance(connack, mqtt5.ConnAckPacket)
        # A round trip after the CONNACK, as any client makes (it subscribes): the session is
        # registered in the cluster by then.
        qos1 = mqtt5.QoS.AT_LEAST_ONCE
        await peer.send(mqtt5.SubscribePacket(1, [mqtt5.TopicFilter(client_id, max_qos=qos1)]))
        assert isinstance(await peer.receive(), mqtt5.SubAckPacket)
        return connack
    finally:
        await peer.close()


async def test_ejabberd_loses_a_session_with_the_node_that_held_it(
    ejabberd_cluster: EjabberdCluster,
) -> None:
    """docs/scale-out.md, the sessions table: after its node's death a client resuming its
    persistent session on another node gets a new one (what failover keeps on ejabberd)."""
    client_id = unique("session")
    assert (await resume(ejabberd_cluster, 0, client_id)).session_present is False  # made
    assert (await resume(ejabberd_cluster, 0, client_id)).session_present is True  # kept
    await ejabberd_cluster.akill(0)
    assert (await resume(ejabberd_cluster, 2, client_id)).session_present is False
