"""The session against a broker that breaks its own word or MQTT 5 (issue 12, C and D2), and
the capabilities its CONNACK announces: pure, no socket."""

from __future__ import annotations

import mqtt5
import pytest
from mqtt5 import ConnAckPacket, PublishPacket, QoS

from support.session_wire import connect, connected, feed, sent
from tars.mqtt import PublishError
from tars.mqtt._core.events import Disconnected, PublishDone
from tars.mqtt._core.session import Session, SessionState


def raw_publish(topic: bytes, properties: bytes = b"\x00", payload: bytes = b"x") -> bytes:
    """A QoS 0 PUBLISH as bytes (the codec refuses to write the bad ones these tests need)."""
    body = len(topic).to_bytes(2, "big") + topic + properties + payload
    return bytes([0x30, len(body)]) + body


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (raw_publish(b"a/+"), 0x82),  # a wildcard in a topic name
        (raw_publish(b"a/#"), 0x82),
        (raw_publish(b"", b"\x03\x23\x00\x05"), 0x94),  # a topic alias we never allowed
        (raw_publish(b"a", b"\x03\x23\x00\x05"), 0x94),
    ],
    ids=["plus", "hash", "empty-with-alias", "alias"],
)
def test_a_publish_with_a_bad_topic_ends_the_link_and_is_not_delivered(
    wire: bytes, reason: int
) -> None:
    session = connected()
    events = session.receive_data(wire, 1.0)
    assert [type(e) for e in events] == [Disconnected]
    assert events[0].reason_code == reason  # type: ignore[union-attr]
    assert session.state is SessionState.CLOSING
    [disconnect] = sent(session)
    assert isinstance(disconnect, mqtt5.DisconnectPacket)
    assert int(disconnect.reason_code) == reason


def test_a_good_topic_is_still_delivered() -> None:
    session = connected()
    [packet] = session.receive_data(raw_publish(b"a/b"), 1.0)
    assert isinstance(packet, PublishPacket)
    assert packet.topic == "a/b"


def test_a_qos_above_the_brokers_maximum_fails_at_once_and_sends_nothing() -> None:
    session = connected(connack=ConnAckPacket(max_qos=QoS.AT_LEAST_ONCE))
    with pytest.raises(PublishError, match="QoS 1 at most") as caught:
        session.publish("t", b"x", 2)
    assert caught.value.reason_code == 0x9B
    assert sent(session) == []
    session.publish("t", b"x", 1)  # what it serves still goes
    assert len(sent(session)) == 1


def test_retain_on_a_broker_without_retain_fails_at_once() -> None:
    session = connected(connack=ConnAckPacket(retain_available=False))
    for qos in (0, 1):
        with pytest.raises(PublishError, match="retain=False") as caught:
            session.publish("t", b"x", qos, retain=True)
        assert caught.value.reason_code == 0x9A
    assert sent(session) == []


def test_a_queued_publish_the_new_broker_cannot_serve_fails_alone() -> None:
    session = Session("client-1")
    handle_2, handle_1 = object(), object()
    assert session.publish("t", b"two", 2, handle=handle_2) == ()
    assert session.publish("t", b"one", 1, handle=handle_1) == ()
    events = connect(session, ConnAckPacket(max_qos=QoS.AT_LEAST_ONCE))
    [done] = [e for e in events if isinstance(e, PublishDone)]
    assert done.handle is handle_2
    assert done.reason_code == 0x9B
    assert isinstance(done.error, PublishError)
    [publish] = [p for p in sent(session) if isinstance(p, PublishPacket)]
    assert publish.payload == b"one"  # the other one went, unharmed
    assert session.stats.publish_failed == 1


def test_qos_0_publish_after_a_refused_one_keeps_the_link() -> None:
    session = connected(connack=ConnAckPacket(retain_available=False))
    with pytest.raises(PublishError):
        session.publish("t", b"x", 0, retain=True)
    session.publish("t", b"y", 0)
    [publish] = sent(session)
    assert isinstance(publish, PublishPacket)
    assert session.state is SessionState.CONNECTED
    assert feed(session) == []


def test_a_topic_that_is_not_utf8_ends_the_link_without_a_codec_panic(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """D3: the codec panics on such a topic and the panic is printed whatever catches it; the
    session looks at the topic first (a malformed packet, 0x81)."""
    session = connected()
    events = session.receive_data(raw_publish(b"\xff\xfe"), 1.0)
    assert [type(e) for e in events] == [Disconnected]
    assert events[0].reason_code == 0x81  # type: ignore[union-attr]
    _out, err = capfd.readouterr()
    assert "panicked" not in err
    assert "UnicodeDecodeError" not in err


def test_a_utf8_topic_that_is_not_ascii_is_delivered() -> None:
    session = connected()
    [packet] = session.receive_data(raw_publish("salle/été".encode()), 1.0)
    assert isinstance(packet, PublishPacket)
    assert packet.topic == "salle/été"


def test_a_publish_split_inside_its_topic_is_read_once_complete() -> None:
    session = connected()
    wire = raw_publish("salle/été".encode())
    assert session.receive_data(wire[:5], 1.0) == []
    [packet] = session.receive_data(wire[5:], 1.0)
    assert isinstance(packet, PublishPacket)
