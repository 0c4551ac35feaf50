"""What the sans-I/O session reports: immutable events, in the order things happened.

The session (:mod:`.session`) returns lists of these from every input (bytes, a call, the
time); the asyncio layer turns them into future results, link closes and dispatch. Received
messages are reported as the codec's own ``mqtt5.PublishPacket`` objects, so the receive hot
path allocates nothing extra per message.

Handles are opaque to the session: the asyncio layer passes futures (or None when nobody
waits) and gets them back here, whatever packet id the operation had on whichever link.
"""

from __future__ import annotations

from dataclasses import dataclass

from mqtt5 import ConnAckPacket, PublishPacket

from .._errors import MQTTError

__all__ = [
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "Event",
    "PublishDone",
    "Ready",
    "RequestAborted",
    "Settled",
    "Subscribed",
    "Unsubscribed",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted the connection (CONNACK success); the restore is under way."""

    session_present: bool
    connack: ConnAckPacket


@dataclass(frozen=True, slots=True)
class Ready:
    """Every subscription the restore plan sent has its answer: the link is open for business.

    ``first`` is true on the first link of this session object; ``refused`` lists the filters
    the broker refused while restoring (with their reason codes).
    """

    session_present: bool
    first: bool
    refused: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The broker refused the connection (CONNACK with a failure reason code)."""

    reason_code: int
    reason_string: str | None
    server_reference: str | None = None


@dataclass(frozen=True, slots=True)
class PublishDone:
    """A QoS 1/2 publish (or a queued QoS 0 one) is finished.

    Acknowledged when ``reason_code < 0x80``; refused by the broker otherwise. ``error`` is set
    when it ended without the broker: dropped by the outbox policy, expired, or abandoned at
    shutdown; the caller waiting on ``handle`` gets that error.
    """

    handle: object
    reason_code: int
    reason_string: str | None = None
    error: MQTTError | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """A waiter registered with :meth:`Session.wait <tars.mqtt._core.session.Session.wait>` may go
    on: what it waited for happened (or can no longer happen on this link)."""

    handle: object


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBACK for a subscribe call, one reason code per filter."""

    handle: object
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """UNSUBACK for an unsubscribe call, one reason code per filter."""

    handle: object
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RequestAborted:
    """A SUBSCRIBE/UNSUBSCRIBE lost its link before the ack (MQTT does not resend these)."""

    handle: object


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link must end: the broker sent DISCONNECT, or we found a protocol error or a dead link.

    ``by_peer`` tells whether the broker said so. ``error`` is set when we end the link because
    the peer misbehaved or went silent; a DISCONNECT with ``reason_code`` is then already queued
    for the wire, except when ``abort`` is true (a dead or stale link: nothing more is written,
    so the broker sends our will). ``server_reference`` is the broker's MQTT 5 Server Reference
    (another broker to use), when it sent one.
    """

    reason_code: int
    reason_string: str | None = None
    by_peer: bool = False
    error: MQTTError | None = None
    abort: bool = False
    stale: bool = False
    server_reference: str | None = None


Event = (
    Connected
    | Ready
    | ConnectFailed
    | PublishDone
    | Settled
    | Subscribed
    | Unsubscribed
    | RequestAborted
    | Disconnected
    | PublishPacket
)
