"""The broker's side of an MQTT 5 session: what it keeps for one client id, and nothing else.

Pure and synchronous: the session takes deliveries and acknowledgements and answers with the
PUBLISH/PUBREL packets to write now; the link (``_broker_link.py``) writes them. Keeping the
bookkeeping here, away from sockets, is what lets a session outlive its network connection:
while the client is away, QoS 1/2 deliveries wait in ``pending`` and unacknowledged ones stay in
``inflight``; on resume the in-flight ones are sent again with DUP and the queue drains within
the client's receive maximum.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import mqtt5

__all__ = [
    "BrokerSession",
    "BrokerSubscription",
    "Delivery",
    "SessionInfo",
    "StoredMessage",
]

_log = logging.getLogger("tars.mqtt.testing.broker")

_MAX_PACKET_ID = 65535


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """An application message as the broker received it (from a PUBLISH or a will)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    publisher: str | None
    received_at: float
    payload_format_indicator: int = 0
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_publish(cls, packet: mqtt5.PublishPacket, publisher: str, now: float) -> StoredMessage:
        return cls(
            topic=packet.topic,
            payload=packet.payload,
            qos=int(packet.qos),
            retain=packet.retain,
            publisher=publisher,
            received_at=now,
            payload_format_indicator=packet.payload_format_indicator,
            message_expiry_interval=packet.message_expiry_interval,
            content_type=packet.content_type,
            response_topic=packet.response_topic,
            correlation_data=packet.correlation_data,
            user_properties=tuple(packet.user_properties),
        )

    @classmethod
    def from_will(cls, will: mqtt5.Will, publisher: str, now: float) -> StoredMessage:
        return cls(
            topic=will.topic,
            payload=will.payload or b"",
            qos=int(will.qos),
            retain=will.retain,
            publisher=publisher,
            received_at=now,
            payload_format_indicator=will.payload_format_indicator,
            message_expiry_interval=will.message_expiry_interval,
            content_type=will.content_type,
            response_topic=will.response_topic,
            correlation_data=will.correlation_data,
            user_properties=tuple(will.user_properties),
        )

    def remaining_expiry(self, now: float) -> int | None:
        """Seconds of life left (MQTT sends the remainder onward), None when it never expires."""
        if self.message_expiry_interval is None:
            return None
        return self.message_expiry_interval - int(now - self.received_at)

    def expired(self, now: float) -> bool:
        remaining = self.remaining_expiry(now)
        return remaining is not None and remaining <= 0


@dataclass(frozen=True, slots=True)
class BrokerSubscription:
    """One topic filter of one client with its MQTT 5 options (``topic_filter`` as sent)."""

    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on its way to one client: the QoS, retain flag and ids it goes out with."""

    message: StoredMessage
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()

    def to_packet(
        self, packet_id: int | None, *, duplicate: bool, now: float
    ) -> mqtt5.PublishPacket:
        message = self.message
        expiry = message.remaining_expiry(now)
        return mqtt5.PublishPacket(
            message.topic,
            message.payload,
            qos=mqtt5.QoS(self.qos),
            retain=self.retain,
            packet_id=packet_id,
            duplicate=duplicate,
            payload_format_indicator=message.payload_format_indicator,
            message_expiry_interval=None if expiry is None else max(expiry, 1),
            content_type=message.content_type,
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
            subscription_ids=list(self.subscription_ids),
            user_properties=list(message.user_properties),
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of one session, for tests (see :meth:`InMemoryBroker.sessions`)."""

    client_id: str
    connected: bool
    session_expiry_interval: int
    subscriptions: tuple[str, ...]
    queued: int
    inflight: int
    inbound_qos2: int
    dropped: int


@dataclass(slots=True)
class _Inflight:
    delivery: Delivery
    released: bool = False  # QoS 2: PUBREC received and PUBREL sent, waiting for PUBCOMP


OutPacket = mqtt5.PublishPacket | mqtt5.PubRelPacket


class BrokerSession:
    """Server-side state of one client id: in-flight messages both ways and the offline queue.

    ``online`` is True while a link is bound. ``receive_maximum`` and ``max_packet_size`` are
    the client's own limits from its current CONNECT: the broker never has more than
    ``receive_maximum`` QoS 1/2 deliveries unacknowledged, and silently discards (as MQTT 5
    says) a message that would not fit in ``max_packet_size``.
    """

    def __init__(self, client_id: str, *, max_queued: int) -> None:
        self.client_id = client_id
        self.expiry_interval = 0
        self.online = False
        self.receive_maximum = 65535
        self.max_packet_size: int | None = None
        self.max_queued = max_queued
        self.pending: deque[Delivery] = deque()
        self.inflight: dict[int, _Inflight] = {}
        self.inbound_qos2: set[int] = set()
        self.dropped = 0
        self._next_id = 1

    def window_full(self) -> bool:
        return len(self.inflight) >= self.receive_maximum

    def attach(self, *, receive_maximum: int, max_packet_size: int | None) -> None:
        self.online = True
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size

    def detach(self) -> None:
        self.online = False

    def offer(self, delivery: Delivery, now: float) -> list[OutPacket]:
        """Take one delivery: the packets to write now (none when queued or dropped)."""
        if delivery.qos == 0:
            if not self.online or delivery.message.expired(now):
                return []
            packet = delivery.to_packet(None, duplicate=False, now=now)
            return [packet] if self._fits(packet) else []
        if self.online and not self.pending and not self.window_full():
            return self._start(delivery, now)
        if len(self.pending) >= self.max_queued:
            self.dropped += 1
            _log.debug(
                "queue of %r full: message on %r dropped", self.client_id, delivery.message.topic
            )
            return []
        self.pending.append(delivery)
        return []

    def resume(self, now: float) -> list[OutPacket]:
        """On a new link: resend what is in flight (PUBLISH with DUP, or PUBREL), then drain."""
        out: list[OutPacket] = []
        for packet_id, entry in self.inflight.items():
            if entry.released:
                out.append(mqtt5.PubRelPacket(packet_id))
            else:
                out.append(entry.delivery.to_packet(packet_id, duplicate=True, now=now))
        out.extend(self.pump(now))
        return out

    def pump(self, now: float) -> list[OutPacket]:
        """Start queued deliveries while the client's receive window has room."""
        out: list[OutPacket] = []
        while self.online and self.pending and not self.window_full():
            delivery = self.pending.popleft()
            if delivery.message.expired(now):
                continue
            out.extend(self._start(delivery, now))
        return out

    def on_puback(self, packet_id: int, now: float) -> list[OutPacket]:
        entry = self.inflight.get(packet_id)
        if entry is None or entry.delivery.qos != 1:
            return []
        del self.inflight[packet_id]
        return self.pump(now)

    def on_pubrec(self, packet_id: int, reason_code: int, now: float) -> list[OutPacket]:
        entry = self.inflight.get(packet_id)
        if entry is None or entry.delivery.qos != 2:
            return [mqtt5.PubRelPacket(packet_id, reason_code=mqtt5.PubRelReasonCode(0x92))]
        if reason_code >= 0x80:
            del self.inflight[packet_id]
            return self.pump(now)
        entry.released = True
        return [mqtt5.PubRelPacket(packet_id)]

    def on_pubcomp(self, packet_id: int, now: float) -> list[OutPacket]:
        entry = self.inflight.get(packet_id)
        if entry is None or not entry.released:
            return []
        del self.inflight[packet_id]
        return self.pump(now)

    def info(self, subscriptions: tuple[str, ...]) -> SessionInfo:
        return SessionInfo(
            client_id=self.client_id,
            connected=self.online,
            session_expiry_interval=self.expiry_interval,
            subscriptions=subscriptions,
            queued=len(self.pending),
            inflight=len(self.inflight),
            inbound_qos2=len(self.inbound_qos2),
            dropped=self.dropped,
        )

    def _start(self, delivery: Delivery, now: float) -> list[OutPacket]:
        packet_id = self._allocate_id()
        packet = delivery.to_packet(packet_id, duplicate=False, now=now)
        if not self._fits(packet):
            return []
        self.inflight[packet_id] = _Inflight(delivery)
        return [packet]

    def _fits(self, packet: mqtt5.PublishPacket) -> bool:
        limit = self.max_packet_size
        if limit is None or len(packet.write()) <= limit:
            return True
        # MQTT 5 (3.1.2.24): a message too large for the client is discarded as if delivered.
        _log.debug("message on %r too large for %r: discarded", packet.topic, self.client_id)
        return False

    def _allocate_id(self) -> int:
        # The window (at most 65535 in flight) guarantees a free id exists.
        while True:
            packet_id = self._next_id
            self._next_id = 1 if packet_id >= _MAX_PACKET_ID else packet_id + 1
            if packet_id not in self.inflight:
                return packet_id
