"""What the sans-I/O session reports: immutable events, in the order things happened.

The session (:mod:`.session`) returns lists of these from every input (bytes, a call, the
time); the asyncio layer turns them into future results, link closes and dispatch. Received
messages are reported as the codec's own ``mqtt5.PublishPacket`` objects, so the receive hot
path allocates nothing extra per message.

They behave as frozen dataclasses (compared by their fields, immutable) but are written by
hand on :class:`~tars.mqtt._record.Frozen`: a dataclass costs about 1 ms at import (issue 21).

Handles are opaque to the session: the asyncio layer passes futures (or None when nobody
waits) and gets them back here, whatever packet id the operation had on whichever link.
"""

from __future__ import annotations

from mqtt5 import ConnAckPacket, PublishPacket

from .._errors import MQTTError
from .._record import Frozen, _set

__all__ = [
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "Event",
    "FilterGivenUp",
    "PublishDone",
    "Ready",
    "RequestAborted",
    "Settled",
    "Subscribed",
    "Unsubscribed",
]


class Connected(Frozen):
    """The broker accepted the connection (CONNACK success); the restore is under way."""

    __slots__ = ("connack", "session_present")
    session_present: bool
    connack: ConnAckPacket

    def __init__(self, session_present: bool, connack: ConnAckPacket) -> None:
        _set(self, "session_present", session_present)
        _set(self, "connack", connack)


class Ready(Frozen):
    """Every subscription the restore plan sent has its answer: the link is open for business.

    ``first`` is true on the first link of this session object; ``refused`` lists the filters
    the broker refused while restoring (with their reason codes).
    """

    __slots__ = ("first", "refused", "session_present")
    session_present: bool
    first: bool
    refused: tuple[tuple[str, int], ...]

    def __init__(
        self, session_present: bool, first: bool, refused: tuple[tuple[str, int], ...] = ()
    ) -> None:
        _set(self, "session_present", session_present)
        _set(self, "first", first)
        _set(self, "refused", refused)


class ConnectFailed(Frozen):
    """The broker refused the connection (CONNACK with a failure reason code)."""

    __slots__ = ("reason_code", "reason_string", "server_reference")
    reason_code: int
    reason_string: str | None
    server_reference: str | None

    def __init__(
        self, reason_code: int, reason_string: str | None, server_reference: str | None = None
    ) -> None:
        _set(self, "reason_code", reason_code)
        _set(self, "reason_string", reason_string)
        _set(self, "server_reference", server_reference)


class PublishDone(Frozen):
    """A QoS 1/2 publish (or a queued QoS 0 one) is finished.

    Acknowledged when ``reason_code < 0x80``; refused by the broker otherwise. ``error`` is set
    when it ended without the broker: dropped by the outbox policy, expired, or abandoned at
    shutdown; the caller waiting on ``handle`` gets that error.
    """

    __slots__ = ("error", "handle", "reason_code", "reason_string")
    handle: object
    reason_code: int
    reason_string: str | None
    error: MQTTError | None

    def __init__(
        self,
        handle: object,
        reason_code: int,
        reason_string: str | None = None,
        error: MQTTError | None = None,
    ) -> None:
        _set(self, "handle", handle)
        _set(self, "reason_code", reason_code)
        _set(self, "reason_string", reason_string)
        _set(self, "error", error)


class Settled(Frozen):
    """A waiter registered with :meth:`Session.wait <tars.mqtt._core.session.Session.wait>` may go
    on: what it waited for happened (or can no longer happen on this link)."""

    __slots__ = ("handle",)
    handle: object

    def __init__(self, handle: object) -> None:
        _set(self, "handle", handle)


class Subscribed(Frozen):
    """SUBACK for a subscribe call, one reason code per filter."""

    __slots__ = ("handle", "reason_codes")
    handle: object
    reason_codes: tuple[int, ...]

    def __init__(self, handle: object, reason_codes: tuple[int, ...]) -> None:
        _set(self, "handle", handle)
        _set(self, "reason_codes", reason_codes)


class Unsubscribed(Frozen):
    """UNSUBACK for an unsubscribe call, one reason code per filter."""

    __slots__ = ("handle", "reason_codes")
    handle: object
    reason_codes: tuple[int, ...]

    def __init__(self, handle: object, reason_codes: tuple[int, ...]) -> None:
        _set(self, "handle", handle)
        _set(self, "reason_codes", reason_codes)


class RequestAborted(Frozen):
    """A SUBSCRIBE/UNSUBSCRIBE lost its link before the ack (MQTT does not resend these)."""

    __slots__ = ("handle",)
    handle: object

    def __init__(self, handle: object) -> None:
        _set(self, "handle", handle)


class FilterGivenUp(Frozen):
    """The poison-message breaker gave up a filter of the subscription table: the broker ended
    link after link on its SUBSCRIBE. It left the table (no restore sends it again); its
    subscriptions end with ``error``, and ``handles`` are the subscribe calls still awaiting its
    SUBACK, which fail with it."""

    __slots__ = ("error", "handles", "topic_filter")
    topic_filter: str
    error: MQTTError
    handles: tuple[object, ...]

    def __init__(self, topic_filter: str, error: MQTTError, handles: tuple[object, ...]) -> None:
        _set(self, "topic_filter", topic_filter)
        _set(self, "error", error)
        _set(self, "handles", handles)


class Disconnected(Frozen):
    """The link must end: the broker sent DISCONNECT, or we found a protocol error or a dead link.

    ``by_peer`` tells whether the broker said so. ``error`` is set when we end the link because
    the peer misbehaved or went silent; a DISCONNECT with ``reason_code`` is then already queued
    for the wire, except when ``abort`` is true (a dead or stale link: nothing more is written,
    so the broker sends our will). ``server_reference`` is the broker's MQTT 5 Server Reference
    (another broker to use), when it sent one.
    """

    __slots__ = (
        "abort",
        "by_peer",
        "error",
        "reason_code",
        "reason_string",
        "server_reference",
        "stale",
    )
    reason_code: int
    reason_string: str | None
    by_peer: bool
    error: MQTTError | None
    abort: bool
    stale: bool
    server_reference: str | None

    def __init__(
        self,
        reason_code: int,
        reason_string: str | None = None,
        by_peer: bool = False,
        error: MQTTError | None = None,
        abort: bool = False,
        stale: bool = False,
        server_reference: str | None = None,
    ) -> None:
        _set(self, "reason_code", reason_code)
        _set(self, "reason_string", reason_string)
        _set(self, "by_peer", by_peer)
        _set(self, "error", error)
        _set(self, "abort", abort)
        _set(self, "stale", stale)
        _set(self, "server_reference", server_reference)


Event = (
    Connected
    | Ready
    | ConnectFailed
    | PublishDone
    | Settled
    | Subscribed
    | Unsubscribed
    | RequestAborted
    | FilterGivenUp
    | Disconnected
    | PublishPacket
)
