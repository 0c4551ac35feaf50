"""InMemoryBroker: PUBLISH at every QoS both ways, retained messages, flow control.

Transport-agnostic: ``open_peer`` connects over memory here and over TCP in the integration run.
An absence ("nothing else was delivered") is proven with a PINGREQ: the broker answers it after
anything it had to write to that client, so a PINGRESP next means nothing came in between.
"""

from __future__ import annotations

import mqtt5
import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, assert_nothing_more, connected

QoS = mqtt5.QoS


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_publish_reaches_subscriber_at_each_qos(
    broker: InMemoryBroker, open_peer: PeerOpener, qos: int
) -> None:
    sub = await connected(open_peer, broker, "sub")
    suback = await sub.subscribe("room/+/temp", qos=2)
    assert suback.reason_codes == [mqtt5.SubAckReasonCode.GRANTED_QOS_EXACTLY_ONCE]
    pub = await connected(open_peer, broker, "pub")
    ack = await pub.publish("room/1/temp", b"21.5", qos=qos)
    if qos == 1:
        assert isinstance(ack, mqtt5.PubAckPacket)
        assert ack.reason_code == mqtt5.PubAckReasonCode.SUCCESS
    if qos == 2:
        assert isinstance(ack, mqtt5.PubCompPacket)
        assert ack.reason_code == mqtt5.PubCompReasonCode.SUCCESS
    got = await sub.receive_publish()
    assert (got.topic, got.payload, int(got.qos), got.retain) == (
        "room/1/temp",
        b"21.5",
        qos,
        False,
    )
    assert (got.packet_id is None) == (qos == 0)
    await assert_nothing_more(sub)
    assert broker.sessions()["sub"].inflight == 0


@pytest.mark.parametrize(("published", "granted", "delivered"), [(2, 1, 1), (0, 2, 0), (1, 0, 0)])
async def test_delivered_qos_is_the_lower_of_publish_and_subscription(
    broker: InMemoryBroker, open_peer: PeerOpener, published: int, granted: int, delivered: int
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("t", qos=granted)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"x", qos=published)
    assert int((await sub.receive_publish()).qos) == delivered


async def test_publish_without_subscribers_is_acked_with_0x10(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    ack = await pub.publish("nobody/listens", b"x", qos=1)
    assert isinstance(ack, mqtt5.PubAckPacket)
    assert ack.reason_code == mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS


async def test_qos2_publish_without_subscribers_is_pubrec_success_as_mosquitto(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    pub.send(mqtt5.PublishPacket("nobody/listens", b"x", qos=QoS.EXACTLY_ONCE, packet_id=3))
    rec = await pub.expect(mqtt5.PubRecPacket)
    assert (rec.packet_id, rec.reason_code) == (3, mqtt5.PubRecReasonCode.SUCCESS)


async def test_qos2_repeat_before_pubrel_is_forwarded_once(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("t", qos=2)
    pub = await connected(open_peer, broker, "pub")
    first = mqtt5.PublishPacket("t", b"once", qos=QoS.EXACTLY_ONCE, packet_id=7)
    repeat = mqtt5.PublishPacket("t", b"once", qos=QoS.EXACTLY_ONCE, packet_id=7, duplicate=True)
    pub.send(first, repeat)
    assert (await pub.expect(mqtt5.PubRecPacket)).packet_id == 7
    assert (await pub.expect(mqtt5.PubRecPacket)).packet_id == 7
    assert broker.sessions()["pub"].inbound_qos2 == 1
    pub.send(mqtt5.PubRelPacket(7))
    assert (await pub.expect(mqtt5.PubCompPacket)).reason_code == mqtt5.PubCompReasonCode.SUCCESS
    assert (await sub.receive_publish()).payload == b"once"
    await assert_nothing_more(sub)
    # The id is free again: the same id now carries a new message.
    pub.send(mqtt5.PublishPacket("t", b"again", qos=QoS.EXACTLY_ONCE, packet_id=7))
    await pub.expect(mqtt5.PubRecPacket)
    assert (await sub.receive_publish()).payload == b"again"


async def test_pubrel_for_unknown_id_gets_0x92(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    pub.send(mqtt5.PubRelPacket(99))
    pubcomp = await pub.expect(mqtt5.PubCompPacket)
    assert pubcomp.reason_code == mqtt5.PubCompReasonCode.PACKET_ID_NOT_FOUND


async def test_message_properties_are_forwarded(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("rpc/req", qos=1)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish(
        "rpc/req",
        b"{}",
        qos=1,
        content_type="application/json",
        response_topic="rpc/resp/1",
        correlation_data=b"c-1",
        payload_format_indicator=1,
        message_expiry_interval=60,
        user_properties=[("k", "v")],
    )
    got = await sub.receive_publish()
    assert got.content_type == "application/json"
    assert got.response_topic == "rpc/resp/1"
    assert got.correlation_data == b"c-1"
    assert got.payload_format_indicator == 1
    assert got.message_expiry_interval is not None
    assert 0 < got.message_expiry_interval <= 60
    assert got.user_properties == [("k", "v")]


async def test_client_receive_maximum_limits_unacked_deliveries(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub", receive_max=2)
    await sub.subscribe("t", qos=1)
    pub = await connected(open_peer, broker, "pub")
    for n in range(5):
        await pub.publish("t", str(n).encode(), qos=1)
    first = await sub.receive_publish(ack=False)
    second = await sub.receive_publish(ack=False)
    await assert_nothing_more(sub)
    assert broker.sessions()["sub"].queued == 3
    await sub.ack(first)
    third = await sub.receive_publish(ack=False)
    await assert_nothing_more(sub)
    for publish in (second, third):
        await sub.ack(publish)
    rest = [await sub.receive_publish() for _ in range(2)]
    assert [p.payload for p in (first, second, third, *rest)] == [b"0", b"1", b"2", b"3", b"4"]


async def test_broker_receive_maximum_is_enforced(open_peer: PeerOpener) -> None:
    async with InMemoryBroker(receive_maximum=2) as broker:
        pub = await connected(open_peer, broker, "pub")
        for packet_id in (1, 2, 3):  # QoS 2 never released: all three stay unacknowledged
            pub.send(mqtt5.PublishPacket("t", b"x", qos=QoS.EXACTLY_ONCE, packet_id=packet_id))
        await pub.expect(mqtt5.PubRecPacket)
        await pub.expect(mqtt5.PubRecPacket)
        disconnect = await pub.expect(mqtt5.DisconnectPacket)
        assert disconnect.reason_code == mqtt5.DisconnectReasonCode.RECEIVE_MAX_EXCEEDED


async def test_message_too_big_for_the_client_is_skipped(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    sub = await connected(open_peer, broker, "sub", max_packet_size=100)
    await sub.subscribe("t", qos=1)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("t", b"x" * 200, qos=1)
    await pub.publish("t", b"small", qos=1)
    assert (await sub.receive_publish()).payload == b"small"
    await assert_nothing_more(sub)
    assert broker.sessions()["sub"].inflight == 0


@pytest.mark.parametrize("topic", ["a\x00b", "a/\x01", "a/\x9f", "a/\ufdd0", "a/\U0001ffff"])
async def test_a_control_or_non_character_is_a_malformed_packet_as_in_mosquitto(
    broker: InMemoryBroker, open_peer: PeerOpener, topic: str
) -> None:
    pub = await connected(open_peer, broker, "pub")
    pub.send(mqtt5.PublishPacket(topic, b"x", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1))
    disconnect = await pub.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == mqtt5.DisconnectReasonCode.MALFORMED_PACKET


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param({"content_type": "text/\x01"}, id="content_type"),
        pytest.param({"response_topic": "r/\x7f"}, id="response_topic"),
        pytest.param({"user_properties": [("k\ufffe", "v")]}, id="user-property-name"),
        pytest.param({"user_properties": [("k", "v\x85")]}, id="user-property-value"),
    ],
)
async def test_a_malformed_string_property_ends_the_link_without_a_word_as_in_mosquitto(
    broker: InMemoryBroker, open_peer: PeerOpener, properties: dict[str, object]
) -> None:
    watcher = await connected(open_peer, broker, "watcher")
    await watcher.subscribe("will/#", qos=1)
    pub = await connected(open_peer, broker, "pub", will=mqtt5.Will("will/pub", payload=b"gone"))
    pub.send(
        mqtt5.PublishPacket(
            "t",
            b"x",
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            packet_id=1,
            **properties,  # type: ignore[arg-type]
        )
    )
    await pub.expect_closed()
    assert pub.pending() == []  # neither a PUBACK nor a DISCONNECT: Mosquitto just closes
    will = await watcher.receive_publish()
    assert (will.topic, will.payload) == ("will/pub", b"gone")  # an abnormal end: the will
    assert broker.connected_clients == ["watcher"]


# -- retained messages ---------------------------------------------------------------------


async def test_retained_message_is_stored_and_sent_to_new_subscribers(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("status/lamp", b"on", qos=1, retain=True)
    assert broker.retained("status/lamp") == b"on"
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("status/#", qos=1)
    got = await sub.receive_publish()
    assert (got.topic, got.payload, got.retain, int(got.qos)) == ("status/lamp", b"on", True, 1)


async def test_empty_retained_payload_clears_the_topic(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("status/lamp", b"on", qos=1, retain=True)
    await pub.publish("status/lamp", b"", qos=1, retain=True)
    assert broker.retained("status/lamp") is None
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("status/#")
    await assert_nothing_more(sub)


@pytest.mark.parametrize(
    ("handling", "sent_on_first", "sent_on_repeat"),
    [
        (mqtt5.RetainHandling.SEND_ALWAYS, True, True),
        (mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS, True, False),
        (mqtt5.RetainHandling.SEND_NEVER, False, False),
    ],
)
async def test_retain_handling(
    broker: InMemoryBroker,
    open_peer: PeerOpener,
    handling: mqtt5.RetainHandling,
    sent_on_first: bool,
    sent_on_repeat: bool,
) -> None:
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("cfg", b"v1", qos=1, retain=True)
    sub = await connected(open_peer, broker, "sub")
    for expected in (sent_on_first, sent_on_repeat):
        await sub.subscribe("cfg", qos=1, retain_handling=handling)
        if expected:
            assert (await sub.receive_publish()).payload == b"v1"
        await assert_nothing_more(sub)


@pytest.mark.parametrize("as_published", [True, False])
async def test_retain_as_published_on_live_messages(
    broker: InMemoryBroker, open_peer: PeerOpener, as_published: bool
) -> None:
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("cfg", qos=1, retain_as_published=as_published)
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("cfg", b"v2", qos=1, retain=True)
    assert (await sub.receive_publish()).retain is as_published


async def test_retained_message_keeps_its_qos_ceiling(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    pub = await connected(open_peer, broker, "pub")
    await pub.publish("a", b"q1", qos=1, retain=True)
    sub = await connected(open_peer, broker, "sub")
    await sub.subscribe("a", qos=0)
    assert int((await sub.receive_publish()).qos) == 0
