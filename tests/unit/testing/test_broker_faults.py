"""InMemoryBroker: every fault it injects, as the client under test would see it.

Transport-agnostic: ``open_peer`` connects over memory here and over TCP in the integration run.
"""

from __future__ import annotations

import asyncio
import time

import mqtt5
import pytest

from tars.mqtt import InvalidTopicError
from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer, assert_nothing_more, connected

QoS = mqtt5.QoS


async def pair(
    open_peer: PeerOpener, broker: InMemoryBroker, qos: int = 1
) -> tuple[RawPeer, RawPeer]:
    """A subscriber to ``t/#`` and a publisher."""
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("t/#", qos=qos)
    return sub, await connected(open_peer, broker, "pub")


# -- links -------------------------------------------------------------------------------------


async def test_drop_link_cuts_one_client(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    victim = await connected(open_peer, broker, "victim")
    bystander = await connected(open_peer, broker, "bystander")
    await broker.drop_link("victim")
    await victim.expect_closed()
    assert not any(isinstance(p, mqtt5.DisconnectPacket) for p in victim.pending())
    assert broker.connected_clients == ["bystander"]
    await bystander.ping()


async def test_drop_link_without_id_cuts_everyone(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    peers = [await connected(open_peer, broker, name) for name in ("a", "b")]
    await broker.drop_link()
    for peer in peers:
        await peer.expect_closed()
    assert broker.connected_clients == []
    await broker.drop_link("nobody")  # nothing to drop: no error


async def test_stalled_link_answers_nothing_but_stays_open(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub, pub = await pair(open_peer, broker)
    broker.stall("sub")
    sub.send(mqtt5.PingReqPacket())
    await pub.publish("t/1", b"held", qos=1)  # the publisher is not stalled
    with pytest.raises(TimeoutError):
        await sub.next(timeout=0.3)
    assert not sub.closed.is_set()
    assert broker.connected_clients == ["sub", "pub"]
    broker.unstall("sub")
    # What was held goes out in order: the delivery was written before the PINGREQ was read.
    assert (await sub.receive_publish()).payload == b"held"
    await sub.expect(mqtt5.PingRespPacket)
    await sub.ping()


async def test_stalled_client_can_take_its_session_back(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    old = await connected(open_peer, broker, "phone", session_expiry_interval=60)
    await old.subscribe("t", qos=1)
    broker.stall()
    new = await open_peer(broker)
    assert (await new.connect("phone", clean_start=False)).session_present
    await old.expect_closed()
    await new.ping()
    assert broker.connected_clients == ["phone"]


# -- messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_duplicate_next_delivers_one_message_twice(
    broker: InMemoryBroker, open_peer: PeerOpener, qos: int
) -> None:
    """Two deliveries of one message: QoS 1/2 each with its own packet id and no DUP (what a
    publisher's resend after a lost PUBACK produces), so only a receiver's dedup sees it."""
    sub, pub = await pair(open_peer, broker, qos=2)
    broker.duplicate_next("t/dup")
    await pub.publish("t/other", b"not this one", qos=qos)
    await pub.publish("t/dup", b"twice", qos=qos)
    await pub.publish("t/dup", b"once", qos=qos)
    assert (await sub.receive_publish()).payload == b"not this one"
    first = await sub.receive_publish()
    second = await sub.receive_publish()
    assert first.payload == second.payload == b"twice"
    assert (first.duplicate, second.duplicate) == (False, False)
    if qos:
        assert first.packet_id != second.packet_id
    assert (await sub.receive_publish()).payload == b"once"
    await assert_nothing_more(sub)


async def test_duplicate_next_counts(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    sub, pub = await pair(open_peer, broker)
    broker.duplicate_next(count=2)
    for n in range(3):
        await pub.publish("t/x", str(n).encode(), qos=1)
    got = [(await sub.receive_publish()).payload for _ in range(5)]
    assert got == [b"0", b"0", b"1", b"1", b"2"]
    await assert_nothing_more(sub)


async def test_delay_delivery_holds_messages_in_order(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub, pub = await pair(open_peer, broker)
    broker.delay_delivery(0.3)
    started = time.monotonic()
    for n in range(3):
        ack = await pub.publish("t/x", str(n).encode(), qos=1)
        assert isinstance(ack, mqtt5.PubAckPacket)
    assert time.monotonic() - started < 0.25  # the publisher is acked at once
    broker.delay_delivery(0)
    await pub.publish("t/x", b"3", qos=1)  # not delayed, but never ahead of delayed ones
    got = [(await sub.receive_publish()).payload for _ in range(4)]
    assert time.monotonic() - started >= 0.29
    assert got == [b"0", b"1", b"2", b"3"]
    await pub.publish("t/x", b"4", qos=1)
    assert (await sub.receive_publish(timeout=0.2)).payload == b"4"


async def test_reorder_next_reverses_a_run_of_deliveries(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub, pub = await pair(open_peer, broker)
    broker.reorder_next(3)
    for n in range(5):
        await pub.publish("t/x", str(n).encode(), qos=1)
    got = [(await sub.receive_publish()).payload for _ in range(5)]
    assert got == [b"2", b"1", b"0", b"3", b"4"]


async def test_reorder_next_for_a_named_client(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub, pub = await pair(open_peer, broker)
    other = await connected(open_peer, broker, "other")
    await other.subscribe("t/#", qos=1)
    broker.reorder_next(2, client_id="other")
    for n in range(2):
        await pub.publish("t/x", str(n).encode(), qos=1)
    assert [(await sub.receive_publish()).payload for _ in range(2)] == [b"0", b"1"]
    assert [(await other.receive_publish()).payload for _ in range(2)] == [b"1", b"0"]


async def test_reorder_releases_when_the_receive_window_is_full(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub", receive_max=2)
    await sub.subscribe("t/#", qos=1)
    pub = await connected(open_peer, broker, "pub")
    broker.reorder_next(3)
    for n in range(3):
        await pub.publish("t/x", str(n).encode(), qos=1)
    assert [(await sub.receive_publish()).payload for _ in range(3)] == [b"1", b"0", b"2"]


async def test_refuse_subscriptions(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    broker.refuse_subscriptions("secret/#")
    broker.refuse_subscriptions("quota", reason_code=0x97)
    sub = await connected(open_peer, broker, "sub")
    suback = await sub.subscribe("secret/a", "$share/g/secret/+", "quota", "public", qos=1)
    assert suback.reason_codes == [
        mqtt5.SubAckReasonCode.NOT_AUTHORIZED,
        mqtt5.SubAckReasonCode.NOT_AUTHORIZED,
        mqtt5.SubAckReasonCode.QUOTA_EXCEEDED,
        mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
    ]
    assert broker.subscriptions("sub") == ["public"]
    broker.clear_faults()
    suback = await sub.subscribe("secret/a", qos=1)
    assert suback.reason_codes == [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]


async def test_fault_arguments_are_checked(broker: InMemoryBroker) -> None:
    with pytest.raises(InvalidTopicError):
        broker.duplicate_next("a/#/b")
    with pytest.raises(ValueError, match="count"):
        broker.duplicate_next("a", count=0)
    with pytest.raises(ValueError, match="seconds"):
        broker.delay_delivery(-1)
    with pytest.raises(ValueError, match="n must be"):
        broker.reorder_next(1)
    with pytest.raises(ValueError, match="failure reason code"):
        broker.refuse_subscriptions("a", reason_code=0x00)
    with pytest.raises(ValueError, match="failure reason code"):
        broker.refuse_subscriptions("a", reason_code=0x99)  # PUBACK-only code


# -- restart -----------------------------------------------------------------------------------


async def test_restart_keeping_sessions(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
    await sub.subscribe("t/#", qos=1)
    brief = await connected(open_peer, broker, "brief", will=mqtt5.Will("t/will", payload=b"w"))
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t/retained", b"r", qos=1, retain=True)
    assert (await sub.receive_publish()).payload == b"r"
    await assert_nothing_more(sub)  # the PUBACK was processed before the crash
    await broker.restart()
    for peer in (sub, brief, pub):
        await peer.expect_closed()
    assert broker.connected_clients == []
    assert set(broker.sessions()) == {"sub"}  # "brief" and "pub" had no session expiry
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t/while-away", b"q", qos=1)
    back = await open_peer(broker)
    assert (await back.connect("sub", clean_start=False)).session_present
    assert (await back.receive_publish()).payload == b"q"  # no will: a crash sends none
    await assert_nothing_more(back)
    assert broker.retained("t/retained") == b"r"


async def test_restart_forgetting_sessions(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    sub = await connected(open_peer, broker, "sub", session_expiry_interval=60)
    await sub.subscribe("t/#", qos=1)
    await sub.publish("t/retained", b"r", qos=1, retain=True)
    await sub.receive_publish()
    await broker.restart(keep_sessions=False)
    await sub.expect_closed()
    assert broker.sessions() == {}
    assert broker.retained("t/retained") is None
    back = await open_peer(broker)
    assert not (await back.connect("sub", clean_start=False)).session_present
    assert broker.subscriptions("sub") == []


async def test_restart_with_downtime_refuses_connections_meanwhile(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    before = await connected(open_peer, broker, "before")
    restarting = asyncio.create_task(broker.restart(downtime=0.3), name="test-restart")
    await before.expect_closed()  # the restart has begun
    with pytest.raises(ConnectionRefusedError):
        await open_peer(broker)
    await restarting
    peer = await connected(open_peer, broker, "after")
    await peer.ping()
