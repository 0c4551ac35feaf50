"""The shared ground of the session's parts: link state, counters, and the few helpers every
part uses (packet ids, protocol errors, PUBLISH encoding). See :mod:`._session`."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Final

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    DisconnectPacket,
    PingReqPacket,
    PublishPacket,
    QoS,
    SubAckPacket,
    UnsubAckPacket,
)

from .._errors import (
    ClientStateError,
    ProtocolError,
)
from .events import (
    Disconnected,
    Event,
)
from .incoming import IncomingAcks
from .liveness import Liveness
from .outgoing import Outgoing, OutgoingStore
from .subtable import SubscriptionTable

__all__ = ["SessionBase", "SessionState", "SessionStats", "WaitFor"]

log = logging.getLogger("tars.mqtt")

_QOS: Final = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
_MAX_PACKET_ID: Final = 65535
_DEFAULT_UNACKED_LIMIT: Final = 1000
# Reason codes used here (MQTT 5, section 2.4).
_MALFORMED: Final = 0x81
_PROTOCOL_ERROR: Final = 0x82
_RECEIVE_MAX_EXCEEDED: Final = 0x93
_PACKET_TOO_LARGE: Final = 0x95
_KEEP_ALIVE_TIMEOUT: Final = 0x8D
_PACKET_ID_NOT_FOUND: Final = 0x92
_NO_SUBSCRIBERS: Final = 0x10
_RETAIN_NOT_SUPPORTED: Final = 0x9A
_QOS_NOT_SUPPORTED: Final = 0x9B
_TOPIC_ALIAS_INVALID: Final = 0x94
_SHARED_NOT_SUPPORTED: Final = 0x9E
_WILDCARDS_NOT_SUPPORTED: Final = 0xA2
_UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84
_MQTT3_ONLY: Final = "the broker speaks only MQTT 3.1.1 (or older); tars-core needs MQTT 5"
_EMPTY: Final[tuple[Event, ...]] = ()


class SessionState(enum.Enum):
    """Where the current link is in its life."""

    DISCONNECTED = "disconnected"  # no link
    CONNECTING = "connecting"  # CONNECT sent, waiting for CONNACK
    CONNECTED = "connected"  # CONNACK success received
    CLOSING = "closing"  # DISCONNECT queued (by us) or the link found dead: it should close


class WaitFor(enum.Enum):
    """What a waiter registered with :meth:`Session.wait` waits for."""

    FLUSHED = "flushed"  # no publish owed an outcome
    CAPACITY = "capacity"  # fewer unfinished publishes than the limit (or no link)
    ROOM = "room"  # a link, or room in the outbox for ``size`` bytes


class _Purpose(enum.Enum):
    RAW = "raw"  # a protocol-level request (the .client view): the caller reads the codes
    USER = "user"  # a subscription of the table, for a caller awaiting it
    RESTORE = "restore"  # the restore plan of a new link
    INTERNAL = "internal"  # an internal topic: failures are logged


@dataclass(slots=True, eq=False)
class _Request:
    kind: type[SubAckPacket] | type[UnsubAckPacket]
    handle: object
    filters: tuple[str, ...]
    purpose: _Purpose


@dataclass(slots=True, eq=False)
class _Waiter:
    handle: object
    what: WaitFor
    size: int


@dataclass(slots=True)
class _Link:
    """What lives and dies with one network link."""

    send_quota: int = _MAX_PACKET_ID  # the broker's Receive Maximum, then what is left of it
    max_packet_size: int | None = None
    keep_alive: int = 0
    next_ping: float | None = None
    ping_deadline: float | None = None
    restoring: int = 0  # restore requests not answered yet
    ready: bool = False
    session_present: bool = False
    first: bool = False
    refused: tuple[tuple[str, int], ...] = ()
    connacked: bool = False  # CONNACK accepted: resends and the restore went out on this link
    broker_reason: int | None = None  # the reason code of the broker's DISCONNECT, if one came
    rest: list[bytes] = field(default_factory=list)  # a partial packet waiting for more bytes
    rest_size: int = 0
    need: int = 0  # total bytes of the partial packet, when its header told us


@dataclass(slots=True)
class SessionStats:
    """The session's counters (only grow)."""

    published: int = 0  # handed to a link (QoS 0 written, QoS 1/2 first sent)
    publish_failed: int = 0  # refused by the broker, or unsendable on this link
    no_subscribers: int = 0  # acknowledged with 0x10: the broker had no subscriber for it
    dropped_offline: int = 0  # QoS 0 while disconnected (not queued)
    stale_links: int = 0  # links the watchdog or the ack timeout declared dead
    receive_maximum_exceeded: int = 0  # times the broker went over our Receive Maximum
    poisoned: int = 0  # publishes and filters the poison-message breaker gave up on


class SessionBase:
    """The state every part of the session shares (declared here, set by ``Session.__init__``)
    and the few helpers they all use. Not used alone."""

    client_id: str
    state: SessionState
    connack: ConnAckPacket | None
    stats: SessionStats
    outgoing: OutgoingStore
    subscriptions: SubscriptionTable
    liveness: Liveness | None
    queue_qos0_offline: bool
    unacked_limit: int
    receive_maximum: int
    max_packet_size: int | None
    keep_alive: int
    _heartbeat_topic: str | None
    _connected_once: bool
    _out: list[bytes]
    _link: _Link
    _next_id: int
    _requests: dict[int, _Request]
    _incoming_qos2: set[int]
    _held: IncomingAcks
    ack_after_handling: bool
    _waiters: list[_Waiter]
    _now: float

    def _require_connected(self, what: str) -> None:
        if self.state is not SessionState.CONNECTED:
            raise ClientStateError(
                f"{what}() needs a connected session (state: {self.state.value})"
            )

    def _allocate_id(self) -> int:
        inflight, requests = self.outgoing.inflight, self._requests
        if len(inflight) + len(requests) >= _MAX_PACKET_ID:
            raise ClientStateError("all 65535 packet ids are in use")
        next_id = self._next_id
        while True:
            next_id = next_id % _MAX_PACKET_ID + 1
            if next_id not in inflight and next_id not in requests:
                self._next_id = next_id
                return next_id

    def _protocol_error(self, events: list[Event], reason: int, message: str) -> None:
        self._out.append(DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode(reason)).write())
        self.state = SessionState.CLOSING
        events.append(Disconnected(reason, message, error=ProtocolError(message, reason)))

    def _become_ready(self, events: list[Event]) -> None:
        raise NotImplementedError  # the Session's: every restore request is answered


_PINGREQ: Final = PingReqPacket().write()
_ENDED: Final = frozenset((SessionState.CLOSING, SessionState.DISCONNECTED))


def _encode(item: Outgoing, packet_id: int | None) -> bytes:
    """The PUBLISH bytes of ``item`` (``packet_id`` for QoS 1/2)."""
    props = item.properties or {}
    return PublishPacket(
        item.topic,
        item.payload,
        qos=_QOS[item.qos],
        retain=item.retain,
        packet_id=packet_id if item.qos else None,
        **props,
    ).write()
