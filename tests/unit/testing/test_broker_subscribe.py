"""InMemoryBroker: SUBSCRIBE/UNSUBSCRIBE, wildcards, overlaps, no-local, shared subscriptions.

Transport-agnostic: ``open_peer`` connects over memory here and over TCP in the integration run.
"""

from __future__ import annotations

import mqtt5
import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, assert_nothing_more, connected

SubAck = mqtt5.SubAckReasonCode


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/uptime", False),
        ("+/uptime", "$SYS/uptime", False),
        ("$SYS/#", "$SYS/uptime", True),
    ],
)
async def test_wildcards(
    broker: InMemoryBroker, open_peer: PeerOpener, topic_filter: str, topic: str, matches: bool
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe(topic_filter, qos=1)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish(topic, b"x", qos=1)
    if matches:
        assert (await sub.receive_publish()).topic == topic
    await assert_nothing_more(sub)


async def test_subscribe_answers_one_reason_code_per_filter(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    suback = await sub.subscribe("ok/+", qos=1)
    assert suback.reason_codes == [SubAck.GRANTED_QOS_AT_LEAST_ONCE]
    filters = [
        mqtt5.TopicFilter("q0", max_qos=mqtt5.QoS.AT_MOST_ONCE),
        mqtt5.TopicFilter("$share/only-group-no-filter", max_qos=mqtt5.QoS.EXACTLY_ONCE),
        mqtt5.TopicFilter("q2", max_qos=mqtt5.QoS.EXACTLY_ONCE),
    ]
    sub.send(mqtt5.SubscribePacket(9, filters))
    suback = await sub.expect(mqtt5.SubAckPacket)
    assert suback.packet_id == 9
    assert suback.reason_codes == [
        SubAck.GRANTED_QOS_AT_MOST_ONCE,
        SubAck.TOPIC_FILTER_INVALID,
        SubAck.GRANTED_QOS_EXACTLY_ONCE,
    ]
    assert broker.subscriptions("sub") == ["ok/+", "q0", "q2"]


async def test_unsubscribe_reason_codes_and_effect(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("a", "b", qos=1)
    unsuback = await sub.unsubscribe("a", "never")
    assert unsuback.reason_codes == [
        mqtt5.UnsubAckReasonCode.SUCCESS,
        mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED,
    ]
    assert broker.subscriptions("sub") == ["b"]
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("a", b"gone", qos=1)
    await pub.publish("b", b"kept", qos=1)
    assert (await sub.receive_publish()).payload == b"kept"
    await assert_nothing_more(sub)


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
async def test_a_malformed_user_property_ends_the_link_without_a_word_as_in_mosquitto(
    broker: InMemoryBroker, open_peer: PeerOpener, kind: str
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("kept", qos=1)
    bad = [("trace", "id\x01")]
    sub.send(
        mqtt5.SubscribePacket(2, [mqtt5.TopicFilter("new")], user_properties=bad)
        if kind == "subscribe"
        else mqtt5.UnsubscribePacket(2, ["kept"], user_properties=bad)
    )
    await sub.expect_closed()
    assert sub.pending() == []  # neither a SUBACK/UNSUBACK nor a DISCONNECT
    assert broker.connected_clients == []
    assert broker.subscriptions("sub") == []  # clean start, expiry 0: the session is gone


async def test_overlapping_subscriptions_deliver_one_copy_per_subscription(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    # As Mosquitto does (the contract suite checks both): one copy per matching subscription,
    # each at that subscription's QoS and carrying its own identifier.
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("home/+/temp", qos=1, subscription_id=1)
    await sub.subscribe("home/#", qos=2, subscription_id=2)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("home/kitchen/temp", b"20", qos=2)
    copies = [await sub.receive_publish() for _ in range(2)]
    assert sorted((c.subscription_ids, int(c.qos)) for c in copies) == [([1], 1), ([2], 2)]
    await assert_nothing_more(sub)


async def test_resubscribing_replaces_the_options(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("t", qos=2)
    await sub.subscribe("t", qos=0)
    assert broker.subscriptions("sub") == ["t"]
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"x", qos=2)
    assert int((await sub.receive_publish()).qos) == 0
    await assert_nothing_more(sub)


async def test_no_local_skips_own_messages_only(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    chatty = await connected(open_peer, broker, "chatty")
    await chatty.subscribe("chat", qos=1, no_local=True)
    other = await connected(open_peer, broker, "other")
    await other.subscribe("chat", qos=1)
    await chatty.publish("chat", b"mine", qos=1)
    await other.publish("chat", b"theirs", qos=1)
    assert (await chatty.receive_publish()).payload == b"theirs"
    await assert_nothing_more(chatty)
    assert [(await other.receive_publish()).payload for _ in range(2)] == [b"mine", b"theirs"]


async def test_shared_subscription_round_robin(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    workers = [await connected(open_peer, broker, f"w{n}") for n in range(3)]
    for worker in workers:
        await worker.subscribe("$share/pool/jobs/+", qos=1)
    watcher = await connected(open_peer, broker, "watcher")
    await watcher.subscribe("jobs/#", qos=1)
    pub = await connected(open_peer, broker, "pub")
    for n in range(6):
        await pub.publish(f"jobs/{n}", str(n).encode(), qos=1)
    for index, worker in enumerate(workers):
        got = [(await worker.receive_publish()).payload for _ in range(2)]
        assert got == [str(index).encode(), str(index + 3).encode()]
        await assert_nothing_more(worker)
    assert len([await watcher.receive_publish() for _ in range(6)]) == 6  # plain: every one
    assert broker.subscriptions("w0") == ["$share/pool/jobs/+"]


async def test_shared_subscription_skips_absent_members(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    away = await connected(open_peer, broker, "away", session_expiry_interval=60)
    await away.subscribe("$share/g/t", qos=1)
    await away.disconnect()
    here = await connected(open_peer, broker, "here")
    await here.subscribe("$share/g/t", qos=1)
    pub = await connected(open_peer, broker, "pub")
    for n in range(3):
        await pub.publish("t", str(n).encode(), qos=1)
    assert [(await here.receive_publish()).payload for _ in range(3)] == [b"0", b"1", b"2"]
    assert broker.sessions()["away"].queued == 0


async def test_shared_subscription_gets_no_retained_messages(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"retained", qos=1, retain=True)
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("$share/g/t", qos=1)
    await assert_nothing_more(sub)


async def test_no_local_on_shared_subscription_is_a_protocol_error(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    sub.send(mqtt5.SubscribePacket(1, [mqtt5.TopicFilter("$share/g/t", no_local=True)]))
    disconnect = await sub.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == mqtt5.DisconnectReasonCode.PROTOCOL_ERROR


async def test_unsubscribing_a_shared_subscription(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    a = await connected(open_peer, broker, "a")
    b = await connected(open_peer, broker, "b")
    await a.subscribe("$share/g/t", qos=1)
    await b.subscribe("$share/g/t", qos=1)
    await a.unsubscribe("$share/g/t")
    pub = await connected(open_peer, broker, "pub")
    for n in range(2):
        await pub.publish("t", str(n).encode(), qos=1)
    assert [(await b.receive_publish()).payload for _ in range(2)] == [b"0", b"1"]
    await assert_nothing_more(a)
