"""InMemoryBroker speaking MQTT 3.1.1: each link speaks what its CONNECT asks for, so a 3.1.1
service is tested in memory, and a 3.1.1 peer and an MQTT 5 one talk through one broker.

The 3.1.1 peer is the raw one of the other broker tests with the 3.1.1 codec (RawPeer311).
"""

from __future__ import annotations

import logging

import mqtt5
import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer, RawPeer311, connected, wait_until

QoS = mqtt5.QoS


async def peer311(broker: InMemoryBroker) -> RawPeer:
    return await RawPeer311.over_memory(broker)


async def test_a_311_client_is_accepted_with_a_311_connack(broker: InMemoryBroker) -> None:
    peer = await peer311(broker)
    connack = await peer.connect("old")
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    assert bytes(peer.raw) == b"\x20\x02\x00\x00"  # 3.2: two bytes, no properties
    assert broker.connected_clients == ["old"]
    await peer.ping()
    await peer.disconnect()


async def test_311_and_5_peers_exchange_messages_at_every_qos(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    old = await peer311(broker)
    await old.connect("old")
    new = await connected(open_peer, broker, "new")
    suback = await old.subscribe("to/old/#", qos=2)
    assert [int(c) for c in suback.reason_codes] == [2]
    await new.subscribe("to/new/#", qos=2)
    for qos in (0, 1, 2):
        await new.publish("to/old/x", f"n{qos}".encode(), qos=qos, content_type="text/plain")
        got = await old.receive_publish()
        assert (got.payload, int(got.qos)) == (f"n{qos}".encode(), qos)
        assert got.content_type is None  # 3.1.1 has no properties: the broker drops them
        await old.publish("to/new/y", f"o{qos}".encode(), qos=qos)
        back = await new.receive_publish()
        assert (back.payload, int(back.qos)) == (f"o{qos}".encode(), qos)
    unsuback = await old.unsubscribe("to/old/#")
    assert unsuback.packet_id
    await old.disconnect()
    await new.disconnect()


async def test_an_empty_client_id_needs_a_clean_session_on_311(broker: InMemoryBroker) -> None:
    peer = await peer311(broker)
    peer.send(mqtt5.ConnectPacket("", clean_start=False, session_expiry_interval=60))
    await peer.expect_closed()
    assert bytes(peer.raw) == b"\x20\x02\x00\x02"  # return code 2: identifier rejected
    clean = await peer311(broker)
    assert (await clean.connect("")).reason_code == mqtt5.ConnAckReasonCode.SUCCESS


async def test_a_refused_subscription_is_0x80_on_311(broker: InMemoryBroker) -> None:
    broker.refuse_subscriptions("private/#")
    peer = await peer311(broker)
    await peer.connect("old")
    suback = await peer.subscribe("private/x", "public/x", qos=1)
    assert [int(c) for c in suback.reason_codes] == [0x80, 1]


async def test_a_311_will_and_a_persistent_311_session(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await connected(open_peer, broker, "watcher")
    await watcher.subscribe("status/#", qos=1)
    old = await peer311(broker)
    will = mqtt5.Will("status/old", payload=b"gone", qos=QoS.AT_LEAST_ONCE)
    # Not clean (clean_start False and an expiry: what the 3.1.1 codec writes as clean 0).
    await old.connect("old", will=will, clean_start=False, session_expiry_interval=60)
    await old.subscribe("jobs/#", qos=1)
    old.abort()
    got = await watcher.receive_publish()
    assert (got.topic, got.payload) == ("status/old", b"gone")
    await wait_until(lambda: broker.connected_clients == ["watcher"])
    await watcher.publish("jobs/1", b"queued", qos=1)
    again = await peer311(broker)
    connack = await again.connect("old", clean_start=False, session_expiry_interval=60)
    assert connack.session_present is True
    assert (await again.receive_publish()).payload == b"queued"


async def test_a_protocol_error_closes_a_311_link_without_disconnect(
    broker: InMemoryBroker,
) -> None:
    peer = await peer311(broker)
    await peer.connect("old")
    raw_before = len(peer.raw)
    peer.send_raw(b"\x30\x03\x00\x01#")  # PUBLISH to "#": a wildcard in a topic name
    await peer.expect_closed()
    assert bytes(peer.raw[raw_before:]) == b""  # 3.1.1 servers never send DISCONNECT


async def test_a_311_only_broker_refuses_mqtt5_like_a_311_broker(
    open_peer: PeerOpener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tars.mqtt.testing")
    async with InMemoryBroker(protocols=("3.1.1",)) as broker:
        peer = await open_peer(broker)
        peer.send(mqtt5.ConnectPacket("new", clean_start=True))
        await peer.expect_closed()
        assert bytes(peer.raw) == b"\x20\x02\x00\x01"  # return code 1, unacceptable version
        assert broker.connected_clients == []
        assert "MQTT 5 client refused" in caplog.text
        old = await peer311(broker)
        assert (await old.connect("old")).reason_code == mqtt5.ConnAckReasonCode.SUCCESS


async def test_an_mqtt5_only_broker_refuses_311(caplog: pytest.LogCaptureFixture) -> None:
    async with InMemoryBroker(protocols=("5",)) as broker:
        peer = await peer311(broker)
        peer.send(mqtt5.ConnectPacket("old", clean_start=True))
        await peer.expect_closed()
        assert bytes(peer.raw) == b"\x20\x02\x00\x01"
        [refusal] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "this broker speaks MQTT 5;" in refusal.getMessage()


def test_protocols_are_checked() -> None:
    with pytest.raises(ValueError, match="protocols"):
        InMemoryBroker(protocols=("3.1",))
    with pytest.raises(ValueError, match="protocols"):
        InMemoryBroker(protocols=())
