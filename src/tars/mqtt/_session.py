"""A sans-I/O MQTT 5 client session.

This module owns everything MQTT 5 says about a client connection and its session, and nothing
else: no sockets, no sleeping, no asyncio. It takes bytes received, method calls and the current
time; it returns bytes to send (:meth:`Session.data_to_send`), events, and the next deadline.
The asyncio layer (:mod:`tars.mqtt._connection`) only moves bytes and wakes up on time.

Design rules:

- One :class:`Session` lives as long as the client's MQTT session, across many network links.
  :meth:`Session.connection_made` starts a link (queues CONNECT), :meth:`Session.connection_lost`
  ends it. Unacknowledged QoS 1/2 state survives in between, so a resumed session resends it
  with the DUP flag, and a session the broker forgot gets the same messages again as new
  publishes (at-least-once: receivers deduplicate by envelope id).
- Each outgoing QoS 1/2 publish and each SUBSCRIBE/UNSUBSCRIBE carries an opaque ``handle``
  chosen by the caller (the asyncio layer passes a future). The session hands it back in the
  event that finishes the operation, whatever packet id it had on whichever link.
- Incoming messages are reported as the codec's own :class:`mqtt5.PublishPacket` objects, so the
  receive hot path allocates no extra object per message. Acks for them are queued at once:
  QoS 1 on receipt, QoS 2 with "deliver on PUBLISH, remember the id until PUBREL" (the
  MQTT 5 spec's method B), which gives exactly-once delivery to the application.
- Flow control: never more QoS 1/2 publishes in flight than the broker's Receive Maximum; the
  rest wait in order in a pending queue and go out as acks free slots.
- Anything the broker sends that MQTT 5 does not allow is a protocol error: the session queues a
  DISCONNECT with the right reason code and reports :class:`Disconnected` with the error.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    ConnectPacket,
    DisconnectPacket,
    PingReqPacket,
    PingRespPacket,
    PubAckPacket,
    PubCompPacket,
    PublishPacket,
    PubRecPacket,
    PubRelPacket,
    QoS,
    SubAckPacket,
    SubscribePacket,
    TopicFilter,
    UnsubAckPacket,
    UnsubscribePacket,
    Will,
)

from ._errors import ClientStateError, InvalidArgumentError, PayloadTooLarge, ProtocolError

__all__ = [
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "Event",
    "PublishDone",
    "RequestAborted",
    "Session",
    "SessionState",
    "Subscribed",
    "Unsubscribed",
]

_QOS: Final = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
_MAX_PACKET_ID: Final = 65535
# Reason codes used here (MQTT 5, section 2.4).
_MALFORMED: Final = 0x81
_PROTOCOL_ERROR: Final = 0x82
_RECEIVE_MAX_EXCEEDED: Final = 0x93
_PACKET_TOO_LARGE: Final = 0x95
_KEEP_ALIVE_TIMEOUT: Final = 0x8D
_PACKET_ID_NOT_FOUND: Final = 0x92
_UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84
_MQTT3_ONLY: Final = "the broker speaks only MQTT 3.1.1 (or older); tars-core needs MQTT 5"
# Fixed header (5 bytes at most) + topic length prefix + packet id + property length (4 max).
_PUBLISH_OVERHEAD: Final = 5 + 2 + 2 + 4


class SessionState(enum.Enum):
    """Where the current link is in its life."""

    DISCONNECTED = "disconnected"  # no link
    CONNECTING = "connecting"  # CONNECT sent, waiting for CONNACK
    CONNECTED = "connected"  # CONNACK success received
    CLOSING = "closing"  # DISCONNECT queued (by us); the link should be closed


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted the connection (CONNACK success)."""

    session_present: bool
    connack: ConnAckPacket


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The broker refused the connection (CONNACK with a failure reason code)."""

    reason_code: int
    reason_string: str | None
    server_reference: str | None = None  # MQTT 5 redirection (0x9C/0x9D): where to go instead


@dataclass(frozen=True, slots=True)
class PublishDone:
    """A QoS 1/2 publish is finished: acknowledged (``reason_code < 0x80``) or refused."""

    handle: object
    reason_code: int
    reason_string: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBACK for a :meth:`Session.subscribe` call, one reason code per filter."""

    handle: object
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """UNSUBACK for a :meth:`Session.unsubscribe` call, one reason code per filter."""

    handle: object
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RequestAborted:
    """A SUBSCRIBE/UNSUBSCRIBE lost its link before the ack (MQTT does not resend these)."""

    handle: object


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link must end: the broker sent DISCONNECT, or we found a protocol error or a dead link.

    ``by_peer`` tells whether the broker said so. ``error`` is set when we are the ones ending the
    link because the peer misbehaved or went silent; a DISCONNECT with ``reason_code`` is then
    already queued in :meth:`Session.data_to_send` (except for a keep-alive timeout, where the
    link is presumed dead).
    """

    reason_code: int
    reason_string: str | None = None
    by_peer: bool = False
    error: ProtocolError | None = None
    server_reference: str | None = None  # the broker's MQTT 5 Server Reference, if it sent one


Event = (
    Connected
    | ConnectFailed
    | PublishDone
    | Subscribed
    | Unsubscribed
    | RequestAborted
    | Disconnected
    | PublishPacket
)


# --- internal state -------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Outgoing:
    """One QoS 1/2 publish of ours, from the call until its final ack."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] | None
    handle: object
    packet_id: int = 0
    wire: bytes | None = None  # the bytes as first sent, reused (with DUP) on resume
    released: bool = False  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP


@dataclass(slots=True, eq=False)
class _Request:
    kind: type[SubAckPacket] | type[UnsubAckPacket]
    handle: object
    count: int


@dataclass(slots=True)
class _LinkState:
    """What lives and dies with one network link."""

    send_quota: int = _MAX_PACKET_ID  # the broker's Receive Maximum, then what is left of it
    max_packet_size: int | None = None
    keep_alive: int = 0
    next_ping: float | None = None
    ping_deadline: float | None = None
    rest: list[bytes] = field(default_factory=list)  # a partial packet waiting for more bytes
    rest_size: int = 0
    need: int = 0  # total bytes of the partial packet, when its header told us


class Session:
    """The MQTT 5 state of one client, fed bytes and calls, giving back bytes and events.

    Raises :class:`~tars.mqtt.ClientStateError` for calls that make no sense in the current link
    state, and :class:`~tars.mqtt.PayloadTooLarge` for a publish over the broker's maximum
    packet size. Everything the broker gets wrong becomes a :class:`Disconnected` event.
    """

    def __init__(
        self,
        client_id: str,
        *,
        keep_alive: int = 60,
        clean_start: bool = True,
        session_expiry_interval: int = 0,
        receive_maximum: int = 65535,
        max_packet_size: int | None = None,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        ping_timeout: float | None = None,
    ) -> None:
        if not 1 <= receive_maximum <= _MAX_PACKET_ID:
            raise InvalidArgumentError("receive_maximum must be in 1..65535")
        self.client_id = client_id
        self.keep_alive = keep_alive
        self.clean_start = clean_start
        self.session_expiry_interval = session_expiry_interval
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size
        self.username = username
        self._password = password
        self.will = will
        # How long a PINGREQ may wait for its PINGRESP before the link counts as dead.
        self.ping_timeout = ping_timeout
        self.state = SessionState.DISCONNECTED
        self.connack: ConnAckPacket | None = None
        self._out: list[bytes] = []
        self._link = _LinkState()
        self._next_id = 0
        # Our QoS 1/2 publishes on the wire, by packet id, in send order (dicts keep order).
        self._inflight: dict[int, _Outgoing] = {}
        # Accepted but not yet sent (no send quota left, or no link).
        self._pending: deque[_Outgoing] = deque()
        # In flight from an earlier link, still to resend on this one (the broker's Receive
        # Maximum is smaller than what we had in flight): they go out before any pending one.
        self._resend: deque[_Outgoing] = deque()
        self._requests: dict[int, _Request] = {}
        # Incoming QoS 2 packet ids delivered and PUBREC-ed, waiting for PUBREL.
        self._incoming_qos2: set[int] = set()
        self._connected_once = False

    def __repr__(self) -> str:  # never shows the password
        return (
            f"<Session client_id={self.client_id!r} state={self.state.value} "
            f"inflight={len(self._inflight)} pending={len(self._pending)}>"
        )

    def use_credentials(self, username: str | None, password: str | None) -> None:
        """The credentials of the next CONNECT (each broker of a list may have its own)."""
        self.username = username
        self._password = password

    # --- introspection ----------------------------------------------------------------------

    @property
    def inflight_count(self) -> int:
        """QoS 1/2 publishes sent and not yet finished."""
        return len(self._inflight)

    @property
    def pending_count(self) -> int:
        """QoS 1/2 publishes accepted but not yet sent (flow control or no link)."""
        return len(self._pending)

    @property
    def unfinished_count(self) -> int:
        """Every QoS 1/2 publish the session still owes an outcome for."""
        return len(self._inflight) + len(self._pending)

    # --- link lifecycle ---------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """A new link is up: queue CONNECT. ``clean_start`` applies only to the first link."""
        if self.state is not SessionState.DISCONNECTED:
            raise ClientStateError(f"connection_made() in state {self.state.value}")
        self._out.clear()
        self._link = _LinkState()
        clean = self.clean_start and not self._connected_once
        connect = ConnectPacket(
            self.client_id,
            username=self.username,
            password=None if self._password is None else self._password.encode(),
            clean_start=clean,
            will=self.will,
            keep_alive=self.keep_alive,
            session_expiry_interval=self.session_expiry_interval,
            receive_max=self.receive_maximum,
            max_packet_size=self.max_packet_size,
        )
        self._out.append(connect.write())
        self.state = SessionState.CONNECTING

    def connection_lost(self) -> list[Event]:
        """The link is gone. Publishes stay for the next link; SUBSCRIBE/UNSUBSCRIBE are aborted."""
        self.state = SessionState.DISCONNECTED
        self._out.clear()
        self._link = _LinkState()
        self._resend.clear()
        events: list[Event] = [RequestAborted(r.handle) for r in self._requests.values()]
        self._requests.clear()
        return events

    def disconnect(
        self, reason_code: int = 0, *, session_expiry_interval: int | None = None
    ) -> None:
        """Queue a DISCONNECT; the caller closes the link once it is written."""
        if self.state in (SessionState.CONNECTED, SessionState.CONNECTING):
            packet = DisconnectPacket(
                reason_code=mqtt5.DisconnectReasonCode(reason_code),
                session_expiry_interval=session_expiry_interval,
            )
            self._out.append(packet.write())
        if self.state is not SessionState.DISCONNECTED:
            # Without a link there is nothing to close, and the next link must still be allowed.
            self.state = SessionState.CLOSING

    def abandon(self) -> list[object]:
        """Forget every unfinished publish and request; return their handles (to fail them)."""
        handles: list[object] = [o.handle for o in self._inflight.values()]
        handles.extend(o.handle for o in self._pending)
        handles.extend(r.handle for r in self._requests.values())
        self._inflight.clear()
        self._pending.clear()
        self._resend.clear()
        self._requests.clear()
        self._incoming_qos2.clear()
        return handles

    # --- output -----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call, as one buffer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    @property
    def output_backlog(self) -> int:
        """Packets queued for the wire since the last :meth:`data_to_send`."""
        return len(self._out)

    # --- calls ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        handle: object = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Publish a message. QoS 0 goes out now (only while connected); QoS 1/2 go out now
        when the broker's Receive Maximum allows, else wait in order. ``handle`` comes back in
        the :class:`PublishDone` event of a QoS 1/2 publish.
        """
        limit = self._link.max_packet_size
        if limit is not None:
            size = len(payload) + len(topic.encode()) + _PUBLISH_OVERHEAD
            if size > limit:
                raise PayloadTooLarge(len(payload), limit - (size - len(payload)))
        if qos == 0:
            if self.state is not SessionState.CONNECTED:
                raise ClientStateError("QoS 0 publish needs a connected session")
            if properties:
                packet = PublishPacket(topic, payload, retain=retain, **properties)
            else:
                packet = PublishPacket(topic, payload, retain=retain)
            self._out.append(packet.write())
            return
        if qos not in (1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        item = _Outgoing(topic, payload, qos, retain, properties, handle)
        if self.state is SessionState.CONNECTED and self._link.send_quota > 0 and not self._pending:
            self._send_publish(item)
        else:
            self._pending.append(item)

    def subscribe(
        self,
        filters: list[TopicFilter],
        *,
        handle: object = None,
        subscription_id: int | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """Queue a SUBSCRIBE; the :class:`Subscribed` event carries ``handle`` back."""
        self._require_connected("subscribe")
        packet_id = self._allocate_id()
        packet = SubscribePacket(
            packet_id, filters, subscription_id=subscription_id, user_properties=user_properties
        )
        self._requests[packet_id] = _Request(SubAckPacket, handle, len(filters))
        self._out.append(packet.write())
        return packet_id

    def unsubscribe(
        self,
        patterns: list[str],
        *,
        handle: object = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """Queue an UNSUBSCRIBE; the :class:`Unsubscribed` event carries ``handle`` back."""
        self._require_connected("unsubscribe")
        packet_id = self._allocate_id()
        packet = UnsubscribePacket(packet_id, patterns, user_properties=user_properties)
        self._requests[packet_id] = _Request(UnsubAckPacket, handle, len(patterns))
        self._out.append(packet.write())
        return packet_id

    # --- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` should run next (None: no timer needed)."""
        link = self._link
        if link.ping_deadline is not None:
            return link.ping_deadline
        return link.next_ping

    def handle_timeout(self, now: float) -> list[Event]:
        """Send PINGREQ when due; report a dead link when a PINGRESP is overdue."""
        link = self._link
        if self.state is not SessionState.CONNECTED:
            return []
        if link.ping_deadline is not None and now >= link.ping_deadline:
            link.ping_deadline = link.next_ping = None
            self.state = SessionState.CLOSING
            return [
                Disconnected(
                    _KEEP_ALIVE_TIMEOUT,
                    "no PINGRESP from the broker",
                    error=ProtocolError("keep-alive timeout", _KEEP_ALIVE_TIMEOUT),
                )
            ]
        if link.next_ping is not None and now >= link.next_ping and link.ping_deadline is None:
            self._out.append(_PINGREQ)
            link.next_ping = now + link.keep_alive
            timeout = self.ping_timeout if self.ping_timeout is not None else link.keep_alive
            link.ping_deadline = now + timeout
        return []

    # --- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the link; returns the events they complete, in order."""
        if self.state in _ENDED:
            return []
        link = self._link
        if link.rest:
            link.rest.append(data)
            link.rest_size += len(data)
            if link.rest_size < link.need:
                return []
            data = b"".join(link.rest)
            link.rest.clear()
            link.rest_size = link.need = 0
        events: list[Event] = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        read = mqtt5.read
        handle = self._handle_packet
        limit = self.max_packet_size
        try:
            while pos < end:
                try:
                    packet, size = read(view[pos:])
                except IndexError:
                    need = _packet_size(data[pos : pos + 5])
                    if need and end - pos >= need:  # all there: its fields overrun its length
                        self._protocol_error(events, _MALFORMED, "malformed packet: truncated")
                        return events
                    break
                except ValueError as exc:
                    if self.state is SessionState.CONNECTING and data[pos : pos + 2] == b"\x20\x02":
                        # A CONNACK with a 2-byte body is MQTT 3.1.1's (MQTT 5's has at least
                        # a property length): the broker refused our version. No retry fixes it.
                        self.state = SessionState.CLOSING
                        events.append(ConnectFailed(_UNSUPPORTED_PROTOCOL_VERSION, _MQTT3_ONLY))
                        return events
                    self._protocol_error(events, _MALFORMED, f"malformed packet: {exc}")
                    return events
                except BaseException as exc:
                    # mqtt5 0.8 panics on invalid UTF-8 in a string field: pyo3's
                    # PanicException derives from BaseException. A broker's bad bytes must
                    # end the link, not the process.
                    if type(exc).__name__ != "PanicException":
                        raise
                    self._protocol_error(events, _MALFORMED, "malformed packet: invalid UTF-8")
                    return events
                pos += size
                if limit is not None and size > limit:
                    self._protocol_error(events, _PACKET_TOO_LARGE, "packet over our maximum")
                    return events
                if type(packet) is PublishPacket and self.state is SessionState.CONNECTED:
                    self._handle_publish(packet, events)
                else:
                    handle(packet, events, now)
                if self.state in _ENDED:
                    return events
        finally:
            view.release()
        if pos < end:
            rest = data[pos:]
            need = _packet_size(rest)
            if limit is not None and need > limit:
                # Refuse it before buffering it: the broker ignored our Maximum Packet Size.
                self._protocol_error(events, _PACKET_TOO_LARGE, "packet over our maximum")
                return events
            link.rest.append(rest)
            link.rest_size = len(rest)
            link.need = need
        return events

    # --- internals --------------------------------------------------------------------------

    def _require_connected(self, what: str) -> None:
        if self.state is not SessionState.CONNECTED:
            raise ClientStateError(
                f"{what}() needs a connected session (state: {self.state.value})"
            )

    def _allocate_id(self) -> int:
        inflight, requests = self._inflight, self._requests
        if len(inflight) + len(requests) >= _MAX_PACKET_ID:
            raise ClientStateError("all 65535 packet ids are in use")
        next_id = self._next_id
        while True:
            next_id = next_id % _MAX_PACKET_ID + 1
            if next_id not in inflight and next_id not in requests:
                self._next_id = next_id
                return next_id

    def _send_publish(self, item: _Outgoing) -> None:
        item.packet_id = packet_id = self._allocate_id()
        props = item.properties or {}
        packet = PublishPacket(
            item.topic,
            item.payload,
            qos=_QOS[item.qos],
            retain=item.retain,
            packet_id=packet_id,
            **props,
        )
        wire = packet.write()
        item.wire = wire
        item.released = False
        self._inflight[packet_id] = item
        self._link.send_quota -= 1
        self._out.append(wire)

    def _send_pending(self) -> None:
        link = self._link
        resend, inflight = self._resend, self._inflight
        while resend and link.send_quota > 0:
            item = resend.popleft()
            if inflight.get(item.packet_id) is item:  # not finished by an early ack
                self._resend_one(item)
        pending = self._pending
        while pending and link.send_quota > 0:
            self._send_publish(pending.popleft())

    def _resend_one(self, item: _Outgoing) -> None:
        """Send an earlier link's unfinished publish again, as MQTT 5 requires on resumption."""
        self._link.send_quota -= 1
        if item.released:
            self._out.append(PubRelPacket(item.packet_id).write())
        else:
            assert item.wire is not None
            wire = bytearray(item.wire)
            wire[0] |= 0x08  # DUP flag: this PUBLISH may have been seen before
            self._out.append(bytes(wire))

    def _finish(self, packet_id: int, events: list[Event], reason: int, text: str | None) -> None:
        item = self._inflight.pop(packet_id)
        self._link.send_quota += 1
        events.append(PublishDone(item.handle, reason, text))
        if self._pending or self._resend:
            self._send_pending()

    def _protocol_error(self, events: list[Event], reason: int, message: str) -> None:
        self._out.append(DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode(reason)).write())
        self.state = SessionState.CLOSING
        events.append(Disconnected(reason, message, error=ProtocolError(message, reason)))

    def _handle_publish(self, packet: PublishPacket, events: list[Event]) -> None:
        qos = packet.qos
        if qos == 0:
            events.append(packet)
            return
        packet_id = packet.packet_id
        if not packet_id:
            self._protocol_error(events, _PROTOCOL_ERROR, "QoS > 0 PUBLISH without a packet id")
            return
        if qos == 1:
            self._out.append(PubAckPacket(packet_id).write())
            events.append(packet)
            return
        incoming = self._incoming_qos2
        if packet_id in incoming:
            # A resend of a message we already delivered: acknowledge again, deliver once.
            self._out.append(PubRecPacket(packet_id).write())
            return
        if len(incoming) >= self.receive_maximum:
            self._protocol_error(events, _RECEIVE_MAX_EXCEEDED, "broker exceeded Receive Maximum")
            return
        incoming.add(packet_id)
        self._out.append(PubRecPacket(packet_id).write())
        events.append(packet)

    def _handle_packet(self, packet: mqtt5.Packet, events: list[Event], now: float) -> None:
        state = self.state
        kind = type(packet)
        if state is SessionState.CONNECTING:
            if kind is ConnAckPacket:
                assert isinstance(packet, ConnAckPacket)
                self._handle_connack(packet, events, now)
            elif kind is DisconnectPacket:
                assert isinstance(packet, DisconnectPacket)
                self._handle_disconnect(packet, events)
            else:
                self._protocol_error(events, _PROTOCOL_ERROR, f"{kind.__name__} before CONNACK")
            return
        if kind is PubAckPacket:
            assert isinstance(packet, PubAckPacket)
            item = self._inflight.get(packet.packet_id)
            if item is not None and item.qos == 1:
                self._finish(packet.packet_id, events, int(packet.reason_code), packet.reason_str)
        elif kind is PubRecPacket:
            assert isinstance(packet, PubRecPacket)
            self._handle_pubrec(packet, events)
        elif kind is PubCompPacket:
            assert isinstance(packet, PubCompPacket)
            item = self._inflight.get(packet.packet_id)
            if item is not None and item.qos == 2 and item.released:
                self._finish(packet.packet_id, events, int(packet.reason_code), packet.reason_str)
        elif kind is PubRelPacket:
            assert isinstance(packet, PubRelPacket)
            known = packet.packet_id in self._incoming_qos2
            self._incoming_qos2.discard(packet.packet_id)
            reason = mqtt5.PubCompReasonCode(0 if known else _PACKET_ID_NOT_FOUND)
            self._out.append(PubCompPacket(packet.packet_id, reason_code=reason).write())
        elif kind is SubAckPacket or kind is UnsubAckPacket:
            assert isinstance(packet, SubAckPacket | UnsubAckPacket)
            self._handle_request_ack(packet, events)
        elif kind is PingRespPacket:
            self._link.ping_deadline = None
        elif kind is DisconnectPacket:
            assert isinstance(packet, DisconnectPacket)
            self._handle_disconnect(packet, events)
        else:
            self._protocol_error(events, _PROTOCOL_ERROR, f"unexpected {kind.__name__} from broker")

    def _handle_connack(self, packet: ConnAckPacket, events: list[Event], now: float) -> None:
        reason = int(packet.reason_code)
        if reason >= 0x80:
            self.state = SessionState.CLOSING
            events.append(ConnectFailed(reason, packet.reason_str, packet.server_reference))
            return
        self.state = SessionState.CONNECTED
        self.connack = packet
        self._connected_once = True
        if packet.assigned_client_id:
            self.client_id = packet.assigned_client_id
        link = self._link
        link.send_quota = packet.receive_max
        link.max_packet_size = packet.max_packet_size
        keep_alive = packet.server_keep_alive
        link.keep_alive = self.keep_alive if keep_alive is None else keep_alive
        link.next_ping = now + link.keep_alive if link.keep_alive > 0 else None
        if packet.session_present:
            self._resume()
        else:
            self._restart_session(events)
        events.append(Connected(packet.session_present, packet))
        self._send_pending()

    def _resume(self) -> None:
        """The broker kept our session: resend what it has not acknowledged, in order.

        The broker's Receive Maximum counts these too: what does not fit now goes out, still
        before any new publish, as acks free slots.
        """
        self._resend.extend(self._inflight.values())

    def _restart_session(self, events: list[Event]) -> None:
        """The broker has no session for us: what it never acknowledged is sent again as new.

        A QoS 2 publish whose PUBREC came is owned by the broker already: it is finished.
        """
        again: list[_Outgoing] = []
        for item in self._inflight.values():
            if item.released:
                events.append(PublishDone(item.handle, 0, "session not present; PUBREC received"))
            else:
                again.append(item)
        self._inflight.clear()
        self._pending.extendleft(reversed(again))
        self._incoming_qos2.clear()

    def _handle_pubrec(self, packet: PubRecPacket, events: list[Event]) -> None:
        packet_id = packet.packet_id
        item = self._inflight.get(packet_id)
        if item is None or item.qos != 2:
            reason = mqtt5.PubRelReasonCode(_PACKET_ID_NOT_FOUND)
            self._out.append(PubRelPacket(packet_id, reason_code=reason).write())
            return
        reason_code = int(packet.reason_code)
        if reason_code >= 0x80:
            self._finish(packet_id, events, reason_code, packet.reason_str)
            return
        item.released = True
        self._out.append(PubRelPacket(packet_id).write())

    def _handle_request_ack(
        self, packet: SubAckPacket | UnsubAckPacket, events: list[Event]
    ) -> None:
        request = self._requests.get(packet.packet_id)
        if request is None or request.kind is not type(packet):
            self._protocol_error(
                events, _PROTOCOL_ERROR, f"{type(packet).__name__} for unknown packet id"
            )
            return
        codes = tuple(int(c) for c in packet.reason_codes)
        if len(codes) != request.count:
            self._protocol_error(
                events, _PROTOCOL_ERROR, f"{type(packet).__name__} with {len(codes)} reason codes"
            )
            return
        del self._requests[packet.packet_id]
        if type(packet) is SubAckPacket:
            events.append(Subscribed(request.handle, codes))
        else:
            events.append(Unsubscribed(request.handle, codes))

    def _handle_disconnect(self, packet: DisconnectPacket, events: list[Event]) -> None:
        self.state = SessionState.CLOSING
        events.append(
            Disconnected(
                int(packet.reason_code),
                packet.reason_str,
                by_peer=True,
                server_reference=packet.server_reference,
            )
        )


_PINGREQ: Final = PingReqPacket().write()
_ENDED: Final = frozenset((SessionState.CLOSING, SessionState.DISCONNECTED))


def _packet_size(data: bytes) -> int:
    """Total size of the packet starting ``data``, or 0 when its header is still incomplete."""
    multiplier = 1
    length = 0
    for i in range(1, min(len(data), 5)):
        byte = data[i]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return 1 + i + length
        multiplier *= 128
    return 0
