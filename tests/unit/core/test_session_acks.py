"""Acknowledgement after handling in the pure session (issue 12 A), without a socket.

With ``ack_after_handling`` a received QoS 1/2 message is delivered at once but its PUBACK (or
PUBREC) waits until the session's incoming part says it is due (every holder called ``done``),
and the acknowledgements go out in arrival order (MQTT 5, 4.6). Here each message is routed to
one holder, as the dispatcher does, and finished by hand. The broker is
:mod:`support.session_wire`; the clock a float passed in by hand.
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


def routed(session: Session, packet_id: int) -> int:
    """The dispatcher's part: the message just received reached one subscription."""
    token = session.incoming.hold(packet_id, 1)
    assert token is not None
    return token


def finish(session: Session, token: int) -> bool:
    """That subscription is done with it; True when acknowledgements were queued."""
    due = session.incoming.done(token)
    return bool(due) and session.acknowledge(due)


def test_a_qos1_message_is_delivered_at_once_and_acknowledged_only_when_handled() -> None:
    session = after_handling()
    one = message(12)
    assert feed(session, one) == [one]
    token = routed(session, 12)
    assert sent(session) == []  # the broker still owns it
    assert finish(session, token) is True
    assert sent(session) == [PubAckPacket(12)]


def test_acknowledgements_go_out_in_arrival_order() -> None:
    session = after_handling()
    feed(session, message(1), message(2), message(3))
    one, two, three = (routed(session, n) for n in (1, 2, 3))
    assert finish(session, three) is False  # 1 and 2 are still being handled
    assert finish(session, two) is False
    assert sent(session) == []
    assert finish(session, one) is True
    assert sent(session) == [PubAckPacket(1), PubAckPacket(2), PubAckPacket(3)]


def test_a_qos2_message_is_pubrec_ed_only_when_handled_then_released_as_usual() -> None:
    session = after_handling()
    two = message(5, QoS.EXACTLY_ONCE)
    assert feed(session, two) == [two]
    assert sent(session) == []
    assert finish(session, routed(session, 5)) is True
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
    one, two = routed(session, 1), routed(session, 2)
    finish(session, two)
    finish(session, one)
    assert sent(session) == [PubRecPacket(1), PubAckPacket(2)]


def test_a_resend_of_a_message_still_being_handled_is_not_delivered_twice() -> None:
    session = after_handling()
    tokens = []
    for qos in (QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE):
        first = message(int(qos), qos)
        assert feed(session, first) == [first]
        tokens.append(routed(session, int(qos)))
        assert feed(session, message(int(qos), qos, duplicate=True)) == []
        assert sent(session) == []  # still withheld: the handler has not finished
    for token in tokens:
        finish(session, token)
    assert sent(session) == [PubAckPacket(1), PubRecPacket(2)]  # once each


def test_an_ack_for_a_message_of_an_earlier_link_is_ignored() -> None:
    session = after_handling(**RESUMABLE)
    feed(session, message(1))
    old = routed(session, 1)
    session.connection_lost(now=0.0)
    assert finish(session, old) is False  # no link: nothing to acknowledge on
    connect(session, ConnAckPacket(session_present=True), now=1.0)
    sent(session)
    resend = message(1, duplicate=True)
    assert feed(session, resend, now=1.0) == [resend]  # the broker sends it again: delivered
    new = routed(session, 1)
    assert new != old  # tokens are never reused
    assert finish(session, old) is False  # the first link's handler finishing late
    assert sent(session) == []
    assert finish(session, new) is True
    assert sent(session) == [PubAckPacket(1)]


def test_a_broker_over_our_receive_maximum_is_counted_and_tolerated() -> None:
    # Mosquitto with max_inflight_messages 0 sends more than the Receive Maximum we asked for;
    # closing the link would lose more than it protects.
    session = after_handling(receive_maximum=2)
    three = [message(n) for n in (1, 2, 3)]
    assert feed(session, *three) == three
    assert session.stats.receive_maximum_exceeded == 1
    assert session.state.name == "CONNECTED"
    for token in [routed(session, n) for n in (1, 2, 3)]:
        finish(session, token)
    assert sent(session) == [PubAckPacket(1), PubAckPacket(2), PubAckPacket(3)]


def test_on_arrival_acknowledges_at_once_and_withholds_nothing() -> None:
    session = connected()  # ack_after_handling=False: the session's own default
    one, two = message(1), message(2, QoS.EXACTLY_ONCE)
    assert feed(session, one, two) == [one, two]
    assert sent(session) == [PubAckPacket(1), PubRecPacket(2)]
    assert (len(session.incoming), session.incoming.hold(1, 1)) == (0, None)
    assert sent(session) == []
