"""InMemoryBroker: wills, persistent sessions, queued messages and resend with DUP.

Transport-agnostic: ``open_peer`` connects over memory here and over TCP in the integration run.
"""

from __future__ import annotations

import time

import mqtt5
import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer, assert_nothing_more, connected

QoS = mqtt5.QoS


async def will_watcher(open_peer: PeerOpener, broker: InMemoryBroker) -> RawPeer:
    watcher = await connected(open_peer, broker, "watcher")
    await watcher.subscribe("will/#", qos=1)
    return watcher


def will(topic: str = "will/dying", **options: object) -> mqtt5.Will:
    return mqtt5.Will(topic, payload=b"bye", qos=QoS.AT_LEAST_ONCE, **options)  # type: ignore[arg-type]


# -- wills -----------------------------------------------------------------------------------


async def test_will_is_sent_when_the_link_is_dropped(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    await connected(open_peer, broker, "dying", will=will())
    await broker.drop_link("dying")
    got = await watcher.receive_publish()
    assert (got.topic, got.payload) == ("will/dying", b"bye")
    assert broker.connected_clients == ["watcher"]


async def test_will_is_sent_when_the_client_vanishes(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    dying = await connected(open_peer, broker, "dying", will=will())
    dying.abort()
    assert (await watcher.receive_publish()).payload == b"bye"


async def test_will_is_not_sent_on_normal_disconnect(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    leaving = await connected(open_peer, broker, "leaving", will=will())
    await leaving.disconnect()
    await assert_nothing_more(watcher)


async def test_will_is_sent_on_disconnect_with_will_message(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    leaving = await connected(open_peer, broker, "leaving", will=will())
    await leaving.disconnect(reason_code=0x04)
    assert (await watcher.receive_publish()).payload == b"bye"


async def test_will_is_sent_on_protocol_error(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    rude = await connected(open_peer, broker, "rude", will=will())
    rude.send(mqtt5.ConnAckPacket())  # a server packet from a client
    assert (await rude.expect(mqtt5.DisconnectPacket)).reason_code == 0x82
    assert (await watcher.receive_publish()).payload == b"bye"


async def test_retained_will_is_stored_as_retained(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    await connected(open_peer, broker, "dying", will=will("will/status", retain=True))
    await broker.drop_link("dying")
    assert broker.retained("will/status") == b"bye"
    late = await connected(open_peer, broker, "late")
    await late.subscribe("will/status", qos=1)
    got = await late.receive_publish()
    assert (got.payload, got.retain) == (b"bye", True)


async def test_will_delay_is_cancelled_by_a_reconnect(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    delayed = {"will_delay_interval": 1}
    await connected(
        open_peer, broker, "back", session_expiry_interval=60, will=will("will/back", **delayed)
    )
    await connected(
        open_peer, broker, "gone", session_expiry_interval=60, will=will("will/gone", **delayed)
    )
    started = time.monotonic()
    await broker.drop_link("back")
    await broker.drop_link("gone")
    await connected(open_peer, broker, "back", clean_start=False)
    # "back" dropped first, so its will would have come first: "gone"'s will arriving first
    # (and alone) proves the reconnect cancelled it.
    got = await watcher.receive_publish()
    assert got.topic == "will/gone"
    assert time.monotonic() - started >= 0.9
    await assert_nothing_more(watcher)


async def test_will_is_sent_when_the_session_ends_before_the_will_delay(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await will_watcher(open_peer, broker)
    await connected(
        open_peer,
        broker,
        "short",
        session_expiry_interval=1,
        will=will(will_delay_interval=3600),
    )
    await broker.drop_link("short")
    assert "short" in broker.sessions()
    assert (await watcher.receive_publish(timeout=3)).payload == b"bye"
    assert "short" not in broker.sessions()


# -- sessions ----------------------------------------------------------------------------------


async def test_session_expiry_zero_ends_the_session_with_the_connection(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    peer = await connected(open_peer, broker, "brief")
    await peer.subscribe("t", qos=1)
    await peer.disconnect()
    assert broker.sessions() == {}
    again = await open_peer(broker)
    assert not (await again.connect("brief", clean_start=False)).session_present
    assert broker.subscriptions("brief") == []


async def test_absent_persistent_session_queues_qos1_and_qos2_in_order(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
    await sub.subscribe("t", qos=2)
    await sub.disconnect()
    pub = await connected(open_peer, broker, "pub")
    for n, qos in enumerate([1, 0, 2, 1]):
        await pub.publish("t", str(n).encode(), qos=qos)
    info = broker.sessions()["sub"]
    assert (info.connected, info.queued, info.subscriptions) == (False, 3, ("t",))
    back = await open_peer(broker)
    assert (await back.connect("sub", clean_start=False)).session_present
    got = [await back.receive_publish() for _ in range(3)]
    assert [(p.payload, int(p.qos)) for p in got] == [(b"0", 1), (b"2", 2), (b"3", 1)]
    assert not any(p.duplicate for p in got)  # queued, never sent: not a resend
    await assert_nothing_more(back)  # QoS 0 was not queued


async def test_clean_start_discards_the_old_session(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
    await sub.subscribe("t", qos=1)
    await sub.disconnect()
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"old", qos=1)
    fresh = await open_peer(broker)
    assert not (await fresh.connect("sub", clean_start=True)).session_present
    assert broker.subscriptions("sub") == []
    await assert_nothing_more(fresh)


@pytest.mark.parametrize("qos", [1, 2])
async def test_unacked_delivery_is_resent_with_dup_on_resume(
    broker: InMemoryBroker, open_peer: PeerOpener, qos: int
) -> None:
    sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
    await sub.subscribe("t", qos=qos)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"important", qos=qos)
    first = await sub.receive_publish(ack=False)
    assert not first.duplicate
    await broker.drop_link("sub")
    back = await open_peer(broker)
    assert (await back.connect("sub", clean_start=False)).session_present
    again = await back.receive_publish()
    assert (again.packet_id, again.payload, again.duplicate) == (
        first.packet_id,
        b"important",
        True,
    )
    await assert_nothing_more(back)  # also: the ack was processed
    assert broker.sessions()["sub"].inflight == 0


async def test_pubrel_is_resent_on_resume(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
    await sub.subscribe("t", qos=2)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"x", qos=2)
    publish = await sub.receive_publish(ack=False)
    assert publish.packet_id is not None
    sub.send(mqtt5.PubRecPacket(publish.packet_id))
    await sub.expect(mqtt5.PubRelPacket)
    await broker.drop_link("sub")
    back = await open_peer(broker)
    await back.connect("sub", clean_start=False)
    pubrel = await back.expect(mqtt5.PubRelPacket)
    assert pubrel.packet_id == publish.packet_id
    back.send(mqtt5.PubCompPacket(publish.packet_id))
    await assert_nothing_more(back)
    assert broker.sessions()["sub"].inflight == 0


async def test_inbound_qos2_awaiting_pubrel_survives_reconnect(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("t", qos=2)
    pub = await connected(open_peer, broker, "pub", session_expiry_interval=60)
    pub.send(mqtt5.PublishPacket("t", b"once", qos=QoS.EXACTLY_ONCE, packet_id=5))
    await pub.expect(mqtt5.PubRecPacket)
    await broker.drop_link("pub")
    back = await open_peer(broker)
    await back.connect("pub", clean_start=False)
    # The client did not see the PUBREC: it resends the PUBLISH with DUP, then releases it.
    back.send(mqtt5.PublishPacket("t", b"once", qos=QoS.EXACTLY_ONCE, packet_id=5, duplicate=True))
    await back.expect(mqtt5.PubRecPacket)
    back.send(mqtt5.PubRelPacket(5))
    pubcomp = await back.expect(mqtt5.PubCompPacket)
    assert pubcomp.reason_code == mqtt5.PubCompReasonCode.SUCCESS
    assert (await sub.receive_publish()).payload == b"once"
    await assert_nothing_more(sub)


async def test_queue_is_bounded(open_peer: PeerOpener) -> None:
    async with InMemoryBroker(max_queued_messages=2) as broker:
        sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
        await sub.subscribe("t", qos=1)
        await sub.disconnect()
        pub = await connected(open_peer, broker, "pub")
        for n in range(3):
            await pub.publish("t", str(n).encode(), qos=1)
        info = broker.sessions()["sub"]
        assert (info.queued, info.dropped) == (2, 1)
        back = await open_peer(broker)
        await back.connect("sub", clean_start=False)
        assert [(await back.receive_publish()).payload for _ in range(2)] == [b"0", b"1"]


async def test_disconnect_may_shorten_but_not_start_a_session_expiry(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    keeper = await connected(open_peer, broker, "keeper", session_expiry_interval=60)
    await keeper.disconnect(session_expiry_interval=0)
    assert "keeper" not in broker.sessions()
    brief = await connected(open_peer, broker, "brief")
    brief.send(mqtt5.DisconnectPacket(session_expiry_interval=60))
    disconnect = await brief.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == mqtt5.DisconnectReasonCode.PROTOCOL_ERROR
