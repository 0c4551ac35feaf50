"""Acknowledgement after handling in the pure session (issue 12 A), without a socket.

With ``ack_after_handling`` a received QoS 1/2 message is delivered at once but its PUBACK (or
PUBREC) waits for :meth:`Session.ack`, and the acknowledgements go out in arrival order (MQTT 5,
4.6). The broker is :mod:`support.session_wire`; the clock a float passed in by hand.
"""

from __future__ import annotations

from typing import Any

from mqtt5 import (
    ConnAckPacket,
    PubAckPacket,
    PubCompPacket,
    PublishPacket,
    PubRecPacket,
    PubRelPacket,
    QoS,
)

from support.session_wire import connect, connected, feed, sent
from tars.mqtt._core.session import Session

RESUMABLE: dict[str, Any] = {"clean_start": False, "session_expiry_interval": 600}


def message(packet_id: int, qos: QoS = QoS.AT_LEAST_ONCE, **options: Any) -> PublishPacket:
    return PublishPacket("jobs", b"x%d" % packet_id, qos=qos, packet_id=packet_id, **options)


def after_handling(**options: Any) -> Session:
    return connected(ack_after_handling=True, **options)


def test_a_qos1_message_is_delivered_at_once_and_acknowledged_only_when_handled() -> None:
    session = after_handling()
    one = message(12)
    assert feed(session, one) == [one]
    assert sent(session) == []  # the broker still owns it
    assert session.ack(12, session.generation) is True
    assert sent(session) == [PubAckPacket(12)]


def test_acknowledgements_go_out_in_arrival_order() -> None:
    session = after_handling()
    feed(session, message(1), message(2), message(3))
    generation = session.generation
    assert session.ack(3, generation) is False  # 1 and 2 are still being handled
    assert session.ack(2, generation) is False
    assert sent(session) == []
    assert session.ack(1, generation) is True
    assert sent(session) == [PubAckPacket(1), PubAckPacket(2), PubAckPacket(3)]


def test_a_qos2_message_is_pubrec_ed_only_when_handled_then_released_as_usual() -> None:
    session = after_handling()
    two = message(5, QoS.EXACTLY_ONCE)
    assert feed(session, two) == [two]
    assert sent(session) == []
    assert session.ack(5, session.generation) is True
    assert sent(session) == [PubRecPacket(5)]
    # After the PUBREC the usual QoS 2 exchange: a resend is acknowledged, not delivered again.
    resend = message(5, QoS.EXACTLY_ONCE, duplicate=True)
    assert feed(session, resend) == []
    assert sent(session) == [PubRecPacket(5)]
    assert feed(session, PubRelPacket(5)) == []
    assert sent(session) == [PubCompPacket(5)]


def test_qos1_and_qos2_acknowledgements_keep_their_kinds_in_arrival_order() -> None:
    session = after_handling()
    feed(session, message(1, QoS.EXACTLY_ONCE), message(2))
    session.ack(2, session.generation)
    session.ack(1, session.generation)
    assert sent(session) == [PubRecPacket(1), PubAckPacket(2)]


def test_a_resend_of_a_message_still_being_handled_is_not_delivered_twice() -> None:
    session = after_handling()
    for qos in (QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE):
        first = message(int(qos), qos)
        assert feed(session, first) == [first]
        assert feed(session, message(int(qos), qos, duplicate=True)) == []
        assert sent(session) == []  # still withheld: the handler has not finished
    session.ack(1, session.generation)
    session.ack(2, session.generation)
    assert sent(session) == [PubAckPacket(1), PubRecPacket(2)]  # once each


def test_an_ack_for_a_message_of_an_earlier_link_is_ignored() -> None:
    session = after_handling(**RESUMABLE)
    feed(session, message(1))
    old = session.generation
    session.connection_lost()
    assert session.ack(1, old) is False  # no link: nothing to acknowledge on
    connect(session, ConnAckPacket(session_present=True), now=1.0)
    sent(session)
    assert session.generation != old
    resend = message(1, duplicate=True)
    assert feed(session, resend, now=1.0) == [resend]  # the broker sends it again: delivered
    assert session.ack(1, old) is False  # the first link's handler finishing late
    assert sent(session) == []
    assert session.ack(1, session.generation) is True
    assert sent(session) == [PubAckPacket(1)]


def test_a_broker_over_our_receive_maximum_is_counted_and_tolerated() -> None:
    # Mosquitto with max_inflight_messages 0 sends more than the Receive Maximum we asked for;
    # closing the link would lose more than it protects.
    session = after_handling(receive_maximum=2)
    three = [message(n) for n in (1, 2, 3)]
    assert feed(session, *three) == three
    assert session.stats.receive_maximum_exceeded == 1
    assert session.state.name == "CONNECTED"
    for n in (1, 2, 3):
        session.ack(n, session.generation)
    assert sent(session) == [PubAckPacket(1), PubAckPacket(2), PubAckPacket(3)]


def test_on_arrival_acknowledges_at_once_and_ack_changes_nothing() -> None:
    session = connected()  # ack_after_handling=False: the session's own default
    one, two = message(1), message(2, QoS.EXACTLY_ONCE)
    assert feed(session, one, two) == [one, two]
    assert sent(session) == [PubAckPacket(1), PubRecPacket(2)]
    assert session.ack(1, session.generation) is False
    assert session.ack(2, session.generation) is False
    assert sent(session) == []
