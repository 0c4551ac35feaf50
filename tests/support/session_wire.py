"""A fake broker made of ``mqtt5`` packets, for the sans-I/O session's unit tests.

No socket and no clock: a test feeds the broker's packets as bytes, reads what the session wants
to send by parsing :meth:`Session.data_to_send`, and passes the time in by hand (h11's
``tests/helpers.py`` in spirit: the state machine is driven through its own inputs and outputs).
"""

from __future__ import annotations

from typing import Any

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    ConnectPacket,
    PublishPacket,
    SubAckPacket,
    SubAckReasonCode,
    SubscribePacket,
    UnsubAckPacket,
    UnsubAckReasonCode,
    UnsubscribePacket,
)

from tars.mqtt._core.events import Event, Ready
from tars.mqtt._core.session import Session, SessionState

__all__ = [
    "answer_restore",
    "connect",
    "connected",
    "feed",
    "publishes",
    "sent",
    "suback_for",
    "unsuback_for",
]


def sent(session: Session) -> list[mqtt5.Packet]:
    """Every packet the session queued for the wire since the last look."""
    data = session.data_to_send()
    packets: list[mqtt5.Packet] = []
    pos = 0
    while pos < len(data):
        packet, size = mqtt5.read(memoryview(data)[pos:])
        packets.append(packet)
        pos += size
    return packets


def feed(session: Session, *packets: Any, now: float = 0.0) -> list[Event]:
    """The broker sends ``packets`` in one TCP segment."""
    return session.receive_data(b"".join(p.write() for p in packets), now)


def connect(
    session: Session, connack: ConnAckPacket | None = None, now: float = 0.0
) -> list[Event]:
    """Open a link and answer its CONNECT; returns the CONNACK's events."""
    session.connection_made(now)
    first = sent(session)
    assert [type(p) for p in first] == [ConnectPacket]
    return feed(session, connack or ConnAckPacket(), now=now)


def connected(**options: Any) -> Session:
    """A session past its CONNACK (the broker's defaults), with nothing left to send."""
    connack = options.pop("connack", None)
    session = Session("client-1", **options)
    connect(session, connack)
    assert session.state is SessionState.CONNECTED
    sent(session)
    return session


def publishes(packets: list[mqtt5.Packet]) -> list[PublishPacket]:
    """``packets``, which must all be PUBLISH packets."""
    assert all(isinstance(p, PublishPacket) for p in packets), packets
    return [p for p in packets if isinstance(p, PublishPacket)]


def suback_for(packet: SubscribePacket, code: int | None = None) -> SubAckPacket:
    """The broker's SUBACK granting every filter of ``packet`` its QoS (or ``code`` for all)."""
    codes = [
        SubAckReasonCode(int(f.max_qos) if code is None else code) for f in packet.topic_filters
    ]
    return SubAckPacket(packet.packet_id, codes)


def unsuback_for(packet: UnsubscribePacket) -> UnsubAckPacket:
    """The broker's UNSUBACK, success for every filter of ``packet``."""
    return UnsubAckPacket(packet.packet_id, [UnsubAckReasonCode.SUCCESS] * len(packet.patterns))


def answer_restore(session: Session, packets: list[mqtt5.Packet], now: float = 0.0) -> Ready:
    """Answer every SUBSCRIBE/UNSUBSCRIBE among ``packets`` at once; return the Ready event."""
    answers: list[Any] = []
    for packet in packets:
        if isinstance(packet, SubscribePacket):
            answers.append(suback_for(packet))
        elif isinstance(packet, UnsubscribePacket):
            answers.append(unsuback_for(packet))
    events = feed(session, *answers, now=now)
    ready = [e for e in events if isinstance(e, Ready)]
    assert len(ready) == 1, events
    return ready[0]
