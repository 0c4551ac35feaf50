"""The sans-I/O MQTT 5 session: everything that survives a link lives here.

Rule 1 of this module (after h11's): **whatever outlives one network link is owned here, and
nowhere else.** Each outgoing publish from the call to its outcome (packet ids, the broker's
Receive Maximum window, DUP resends, the offline queue with the outbox limits), the subscription
table and the restore plan for a fresh or a resumed broker session, incoming QoS 2 state, and
the liveness deadlines (keep-alive, heartbeat, watchdog, ack timeout). The asyncio layer above
only moves bytes, keeps one timer, and turns handles into futures; it asks here for every
decision, so every race between a link coming up and a call arriving is a unit test without a
socket.

No sockets, no sleeping, no asyncio: it takes bytes received, method calls and the current time
(``now``, from a monotonic clock); it returns bytes to send (:meth:`Session.data_to_send`),
events (:mod:`._events`), and the next deadline.

- One :class:`Session` lives as long as the client, across many links.
  :meth:`Session.connection_made` starts a link (queues CONNECT), :meth:`Session.connection_lost`
  ends it. On CONNACK the session itself queues the resends, the subscription restore and the
  pending publishes, in that order, and reports :class:`~._events.Ready` once every restore
  request is answered.
- Each outgoing QoS 1/2 publish and each request carries an opaque ``handle`` chosen by the
  caller, given back in the event that finishes it.
- Incoming QoS 1 is acknowledged on receipt; QoS 2 is delivered on PUBLISH and its id kept until
  PUBREL (the spec's method B): exactly once to the application.
- Anything the broker sends that MQTT 5 does not allow is a protocol error: the session queues a
  DISCONNECT with the right reason code and reports :class:`~._events.Disconnected`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
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
    RetainHandling,
    SubAckPacket,
    SubscribePacket,
    TopicFilter,
    UnsubAckPacket,
    UnsubscribePacket,
    Will,
)

from ._errors import (
    ClientStateError,
    ConnectionLostError,
    OutboxFullError,
    PayloadTooLarge,
    ProtocolError,
    SubscribeError,
)
from ._events import (
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    PublishDone,
    Ready,
    RequestAborted,
    Settled,
    Subscribed,
    Unsubscribed,
)
from ._framing import FramingError, check_fixed_header, frame_length
from ._liveness import Liveness
from ._outgoing import OutboxPolicy, Outgoing, OutgoingStore
from ._subtable import SubscriptionTable

__all__ = ["Session", "SessionState", "WaitFor"]

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


class Session:
    """The MQTT 5 state of one client, fed bytes, calls and the time; giving back bytes and
    events (see the module docstring).

    Raises :class:`~tars.mqtt.ClientStateError` for calls that make no sense in the current link
    state and :class:`~tars.mqtt.PayloadTooLarge` for a publish over the broker's maximum packet
    size. Everything the broker gets wrong becomes a :class:`~._events.Disconnected` event.
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
        outbox_max_messages: int = 10_000,
        outbox_max_bytes: int = 16 * 1024 * 1024,
        outbox_ttl: float | None = None,
        outbox_policy: OutboxPolicy = "drop_oldest",
        queue_qos0_offline: bool = False,
        unacked_limit: int = _DEFAULT_UNACKED_LIMIT,
        liveness: Liveness | None = None,
        heartbeat: tuple[str, Callable[[], bytes]] | None = None,
        announce: Callable[[bool], tuple[str, bytes]] | None = None,
    ) -> None:
        """``heartbeat`` is (topic, payload factory) of the heartbeat the liveness schedule asks
        for; ``announce(first)`` gives the (topic, payload) of a retained QoS 1 status published
        as each link becomes ready."""
        if not 1 <= receive_maximum <= _MAX_PACKET_ID:
            raise ValueError("receive_maximum must be in 1..65535")
        self.client_id = client_id
        self.keep_alive = keep_alive
        self.clean_start = clean_start
        self.session_expiry_interval = session_expiry_interval
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size
        self.username = username
        self._password = password
        self.will = will
        self.ping_timeout = ping_timeout  # how long a PINGREQ may wait for its PINGRESP
        self.queue_qos0_offline = queue_qos0_offline
        self.unacked_limit = unacked_limit
        self.state = SessionState.DISCONNECTED
        self.connack: ConnAckPacket | None = None
        self.stats = SessionStats()
        self.outgoing = OutgoingStore(
            max_messages=outbox_max_messages,
            max_bytes=outbox_max_bytes,
            ttl=outbox_ttl,
            policy=outbox_policy,
        )
        self.subscriptions = SubscriptionTable()
        self.liveness = liveness
        self._heartbeat = heartbeat
        self._heartbeat_topic = heartbeat[0] if heartbeat is not None else None
        self._announce = announce
        self._out: list[bytes] = []
        self._link = _Link()
        self._next_id = 0
        self._requests: dict[int, _Request] = {}
        self._incoming_qos2: set[int] = set()  # delivered and PUBREC-ed, waiting for PUBREL
        self._waiters: list[_Waiter] = []
        self._connected_once = False
        self._now = 0.0
        if heartbeat is not None:
            self.subscriptions.add_internal(heartbeat[0])

    def __repr__(self) -> str:  # never shows the password
        return (
            f"<Session client_id={self.client_id!r} state={self.state.value} "
            f"inflight={len(self.outgoing.inflight)} pending={len(self.outgoing.pending)}>"
        )

    def use_credentials(self, username: str | None, password: str | None) -> None:
        """The credentials of the next CONNECT (each broker of a list may have its own)."""
        self.username = username
        self._password = password

    # --- introspection ----------------------------------------------------------------------

    @property
    def linked(self) -> bool:
        """True while a CONNACK-ed link is up (publishes go out now)."""
        return self.state is SessionState.CONNECTED

    @property
    def ready(self) -> bool:
        """True once the current link's restore is answered (see :class:`~._events.Ready`)."""
        return self.state is SessionState.CONNECTED and self._link.ready

    @property
    def session_present(self) -> bool:
        """Whether the broker resumed our session on the current (or last) link."""
        return self._link.session_present

    @property
    def inflight_count(self) -> int:
        """QoS 1/2 publishes sent and not yet finished."""
        return len(self.outgoing.inflight)

    @property
    def unfinished_count(self) -> int:
        """Every publish the session still owes an outcome for (sent or not)."""
        return self.outgoing.unfinished

    @property
    def at_capacity(self) -> bool:
        """True while a link is up and ``unacked_limit`` or more publishes are unfinished."""
        return self.state is SessionState.CONNECTED and self.outgoing.unfinished >= (
            self.unacked_limit
        )

    @property
    def output_backlog(self) -> int:
        """Packets queued for the wire since the last :meth:`data_to_send`."""
        return len(self._out)

    # --- link lifecycle ---------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """A new link is up: queue CONNECT. ``clean_start`` applies only to the first link."""
        if self.state is not SessionState.DISCONNECTED:
            raise ClientStateError(f"connection_made() in state {self.state.value}")
        self._now = now
        self._out.clear()
        self._link = _Link()
        connect = ConnectPacket(
            self.client_id,
            username=self.username,
            password=None if self._password is None else self._password.encode(),
            clean_start=self.clean_start and not self._connected_once,
            will=self.will,
            keep_alive=self.keep_alive,
            session_expiry_interval=self.session_expiry_interval,
            receive_max=self.receive_maximum,
            max_packet_size=self.max_packet_size,
        )
        self._out.append(connect.write())
        self.state = SessionState.CONNECTING

    def connection_lost(self) -> list[Event]:
        """The link is gone. Publishes stay for the next link; requests are aborted."""
        self.state = SessionState.DISCONNECTED
        self._out.clear()
        self._link = _Link()
        self.outgoing.resend.clear()
        if self.liveness is not None:
            self.liveness.link_ended()
        events: list[Event] = []
        for request in self._requests.values():
            if request.handle is not None:
                events.append(RequestAborted(request.handle))
        self._requests.clear()
        self._check_waiters(events)
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
        """Forget every unfinished publish, request and waiter; return their handles (the
        caller fails them). Offline records abandoned so are counted as outbox drops."""
        handles: list[object] = []
        lost = 0
        for item in self.outgoing.take_all():
            handles.append(item.handle)
            lost += 1
            if item.offline:
                self.outgoing.dropped += 1
        if lost:
            log.warning(
                "%s: %d publishes never acknowledged by the broker were discarded at shutdown",
                self.client_id,
                lost,
            )
        handles.extend(r.handle for r in self._requests.values())
        handles.extend(w.handle for w in self._waiters)
        self._requests.clear()
        self._waiters.clear()
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

    # --- publishing ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        handle: object = None,
        properties: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> Sequence[Event]:
        """Publish a message; returns the events of records this call ended (outbox drops).

        While linked, QoS 0 goes out now and QoS 1/2 go out now when the broker's Receive
        Maximum allows, else wait in order. Without a link, QoS 1/2 (and QoS 0 with
        ``queue_qos0_offline``) are queued under the outbox limits; other QoS 0 is dropped and
        counted. ``handle`` comes back in the :class:`~._events.PublishDone` of the record;
        ``now`` (monotonic) dates an offline record for the outbox TTL and starts the ack
        timeout of a publish sent now: pass it (without it, the time of the last input is
        used, and a link idle for longer than ``publish_timeout`` is found stale at once).

        Raises :class:`~tars.mqtt.PayloadTooLarge` when the encoded packet is over the broker's
        Maximum Packet Size, :class:`~tars.mqtt.OutboxFullError` (outbox policy ``raise``).
        """
        if now is not None:
            self._now = now
        linked = self.state is SessionState.CONNECTED
        if qos == 0 and linked:
            if properties:
                packet = PublishPacket(topic, payload, retain=retain, **properties)
            else:
                packet = PublishPacket(topic, payload, retain=retain)
            wire = packet.write()
            limit = self._link.max_packet_size
            if limit is not None and len(wire) > limit:
                raise PayloadTooLarge(len(payload), limit - (len(wire) - len(payload)))
            self._out.append(wire)
            self.stats.published += 1
            return _EMPTY
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        item = Outgoing(topic, payload, qos, retain, properties, handle)
        store = self.outgoing
        if linked:
            limit = self._link.max_packet_size
            if limit is not None:
                size = len(_encode(item, 1))
                if size > limit:
                    raise PayloadTooLarge(len(payload), limit - (size - len(payload)))
            if self._link.send_quota > 0 and not store.pending:
                self._send_publish(item)
            else:
                store.pending.append(item)
            return _EMPTY
        if qos == 0 and not self.queue_qos0_offline:
            self.stats.dropped_offline += 1
            log.debug("not connected: QoS 0 message for %r dropped", topic)
            return _EMPTY
        dropped = store.queue_offline(item, self._now)
        if not dropped:
            return _EMPTY
        events: list[Event] = []
        for old in dropped:
            log.warning("outbox full: dropped a message for %r", old.topic)
            error = OutboxFullError(f"outbox full: message for {old.topic!r} dropped")
            events.append(PublishDone(old.handle, 0x80, "dropped", error))
        return events

    def has_room(self, size: int) -> bool:
        """Whether a publish of ``size`` bytes can be taken now without an outbox drop."""
        return self.state is SessionState.CONNECTED or self.outgoing.has_room(size)

    def wait(self, handle: object, what: WaitFor, size: int = 0) -> bool:
        """Register ``handle`` to get a :class:`~._events.Settled` when ``what`` holds.

        Returns False (nothing registered) when it holds already.
        """
        waiter = _Waiter(handle, what, size)
        if self._satisfied(waiter):
            return False
        self._waiters.append(waiter)
        return True

    def forget_waiter(self, handle: object) -> None:
        """A waiter that gave up (its timeout): it must not be settled later."""
        self._waiters = [w for w in self._waiters if w.handle is not handle]

    # --- subscriptions ------------------------------------------------------------------------

    def add_subscription(self, topic_filter: str, qos: int, *, handle: object = None) -> bool:
        """One more subscription on ``topic_filter``: True when a SUBSCRIBE was sent now (its
        :class:`~._events.Subscribed` carries ``handle``), False when the broker holds it
        already or no link is up (the restore plan sends it).

        Raises :class:`~tars.mqtt.SubscribeError` when the broker's CONNACK said it cannot serve
        this filter (shared subscriptions, wildcards).
        """
        if self.state is SessionState.CONNECTED:
            self._check_capabilities(topic_filter)
        sid, send = self.subscriptions.add(topic_filter, qos)
        if not send or self.state is not SessionState.CONNECTED:
            return False
        self._send_subscribe(topic_filter, qos, sid, handle, _Purpose.USER)
        return True

    def remove_subscription(self, topic_filter: str, qos: int, *, handle: object = None) -> bool:
        """One subscription fewer: True when an UNSUBSCRIBE was sent now (its
        :class:`~._events.Unsubscribed` carries ``handle``)."""
        if not self.subscriptions.remove(topic_filter, qos):
            return False
        if self.state is not SessionState.CONNECTED:
            return False  # a resumed session unsubscribes it on the next link
        self._send_request(
            UnsubAckPacket,
            UnsubscribePacket(self._allocate_id(), [topic_filter]),
            handle,
            (topic_filter,),
            _Purpose.USER,
        )
        return True

    def subscription_id(self, topic_filter: str) -> int | None:
        """The identifier the broker tags ``topic_filter``'s messages with (None: none)."""
        return self.subscriptions.sid(topic_filter)

    def add_internal(self, topic: str, *, handle: object = None) -> tuple[int, bool]:
        """An internal consumer's exact topic (QoS 0, no retained copies); subscribed now when
        linked, and on every new link. Returns its subscription identifier, and whether a
        SUBSCRIBE was sent now (its :class:`~._events.Subscribed` carries ``handle``)."""
        sid, new = self.subscriptions.add_internal(topic)
        if new and self.state is SessionState.CONNECTED:
            self._send_internal(topic, sid, handle=handle)
            return sid, True
        return sid, False

    def restart(self) -> None:
        """A new life after :meth:`abandon` (``connect()`` after ``shutdown()``): the next link
        starts as the first one did (``clean_start``, a full restore, "ready")."""
        self._connected_once = False
        self.subscriptions.forget_broker()

    def subscribe(
        self,
        filters: list[TopicFilter],
        *,
        handle: object = None,
        subscription_id: int | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """A protocol-level SUBSCRIBE, outside the table (not restored on a new link)."""
        self._require_connected("subscribe")
        packet_id = self._allocate_id()
        packet = SubscribePacket(
            packet_id, filters, subscription_id=subscription_id, user_properties=user_properties
        )
        names = tuple(f.pattern for f in filters)
        return self._send_request(SubAckPacket, packet, handle, names, _Purpose.RAW)

    def unsubscribe(
        self,
        patterns: list[str],
        *,
        handle: object = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """A protocol-level UNSUBSCRIBE, outside the table."""
        self._require_connected("unsubscribe")
        packet = UnsubscribePacket(self._allocate_id(), patterns, user_properties=user_properties)
        return self._send_request(UnsubAckPacket, packet, handle, tuple(patterns), _Purpose.RAW)

    # --- time -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` should run next (None: no timer needed)."""
        if self.state is not SessionState.CONNECTED:
            return None
        link = self._link
        deadline = link.ping_deadline if link.ping_deadline is not None else link.next_ping
        liveness = self.liveness
        if liveness is not None:
            other = liveness.next_deadline()
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def handle_timeout(self, now: float) -> list[Event]:
        """Keep-alive pings, heartbeats, and the verdict on a dead or stale link."""
        self._now = now
        if self.state is not SessionState.CONNECTED:
            return []
        link = self._link
        if link.ping_deadline is not None and now >= link.ping_deadline:
            link.ping_deadline = link.next_ping = None
            self.state = SessionState.CLOSING
            return [
                Disconnected(
                    _KEEP_ALIVE_TIMEOUT,
                    "no PINGRESP from the broker",
                    error=ProtocolError("keep-alive timeout", _KEEP_ALIVE_TIMEOUT),
                    abort=True,
                )
            ]
        if link.next_ping is not None and now >= link.next_ping and link.ping_deadline is None:
            self._out.append(_PINGREQ)
            link.next_ping = now + link.keep_alive
            timeout = self.ping_timeout if self.ping_timeout is not None else link.keep_alive
            link.ping_deadline = now + timeout
        liveness = self.liveness
        if liveness is None:
            return []
        why = liveness.check(now)
        if why is not None:
            self.state = SessionState.CLOSING
            self.stats.stale_links += 1
            log.warning("%s: link to the broker is stale (%s); reconnecting", self.client_id, why)
            return [
                Disconnected(
                    _KEEP_ALIVE_TIMEOUT,
                    why,
                    error=ConnectionLostError(f"stale link: {why}"),
                    abort=True,
                    stale=True,
                )
            ]
        if self._heartbeat is not None and liveness.heartbeat_due(now):
            topic, payload = self._heartbeat
            self._out.append(PublishPacket(topic, payload()).write())
            liveness.heartbeat_sent(now)
        return []

    def reading_paused(self) -> None:
        """The link stopped reading on purpose (backpressure): liveness has no verdict."""
        if self.liveness is not None:
            self.liveness.pause()

    def reading_resumed(self, now: float) -> None:
        """Reading again: liveness watches afresh from ``now``."""
        if self.liveness is not None:
            self.liveness.resume(now)

    # --- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the link; returns the events they complete, in order."""
        if self.state in _ENDED:
            return []
        self._now = now
        link = self._link
        if link.rest:
            # Chunks are kept apart until the packet is complete: joining at every chunk would
            # copy a large payload once per chunk.
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
                    try:
                        check_fixed_header(data[pos])
                        need = frame_length(data, pos) or 0
                    except FramingError as exc:
                        self._protocol_error(events, _MALFORMED, str(exc))
                        return events
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
            need = frame_length(rest) or 0
            if limit is not None and need > limit:
                # Refuse it before buffering it: the broker ignored our Maximum Packet Size.
                self._protocol_error(events, _PACKET_TOO_LARGE, "packet over our maximum")
                return events
            link.rest.append(rest)
            link.rest_size = len(rest)
            link.need = need
        if self._waiters:
            self._check_waiters(events)
        return events

    # --- internals: sending -------------------------------------------------------------------

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

    def _send_publish(self, item: Outgoing) -> None:
        if item.qos == 0:  # queued offline with queue_qos0_offline
            self._out.append(_encode(item, None))
            self.stats.published += 1
            return
        item.packet_id = packet_id = self._allocate_id()
        wire = item.wire = _encode(item, packet_id)
        item.released = False
        store = self.outgoing
        if not store.inflight and self.liveness is not None:
            self.liveness.publishes_waiting(self._now, True)
        store.inflight[packet_id] = item
        self._link.send_quota -= 1
        self._out.append(wire)
        self.stats.published += 1

    def _send_pending(self, events: list[Event]) -> None:
        link = self._link
        store = self.outgoing
        resend, inflight = store.resend, store.inflight
        while resend and link.send_quota > 0:
            item = resend.popleft()
            if inflight.get(item.packet_id) is item:  # not finished by an early ack
                self._resend_one(item)
        pending = store.pending
        limit = link.max_packet_size
        while pending and (link.send_quota > 0 or pending[0].qos == 0):
            item = store.pop_pending()
            if limit is not None and len(_encode(item, 1)) > limit:
                # Over this broker's maximum: this message fails alone, and never reaches the
                # wire (the broker would disconnect us, and the resend would loop forever).
                self.stats.publish_failed += 1
                log.warning(
                    "queued message for %r is over the broker's maximum packet size (%d "
                    "bytes): not sent",
                    item.topic,
                    limit,
                )
                error = PayloadTooLarge(len(item.payload), limit)
                events.append(PublishDone(item.handle, _PACKET_TOO_LARGE, None, error))
                continue
            self._send_publish(item)

    def _resend_one(self, item: Outgoing) -> None:
        """Send an earlier link's unfinished publish again, as MQTT 5 requires on resumption."""
        self._link.send_quota -= 1
        if self.liveness is not None:  # on the wire again: the ack timeout watches it too
            self.liveness.publishes_waiting(self._now, True)
        if item.released:
            self._out.append(PubRelPacket(item.packet_id).write())
        else:
            assert item.wire is not None
            wire = bytearray(item.wire)
            wire[0] |= 0x08  # DUP flag: this PUBLISH may have been seen before
            self._out.append(bytes(wire))

    def _finish(self, packet_id: int, events: list[Event], reason: int, text: str | None) -> None:
        store = self.outgoing
        item = store.inflight.pop(packet_id)
        self._link.send_quota += 1
        if reason >= 0x80:
            self.stats.publish_failed += 1
            if item.handle is None:  # nobody awaits it: say it here
                log.warning("broker refused a publish on %r: reason code %#x", item.topic, reason)
        elif reason == _NO_SUBSCRIBERS:
            self.stats.no_subscribers += 1
        events.append(PublishDone(item.handle, reason, text))
        liveness = self.liveness
        if liveness is not None:
            liveness.acked(self._now)
            if not store.inflight:
                liveness.publishes_waiting(self._now, False)
        if store.pending or store.resend:
            self._send_pending(events)

    def _send_request(
        self,
        kind: type[SubAckPacket] | type[UnsubAckPacket],
        packet: SubscribePacket | UnsubscribePacket,
        handle: object,
        filters: tuple[str, ...],
        purpose: _Purpose,
    ) -> int:
        packet_id = packet.packet_id
        self._requests[packet_id] = _Request(kind, handle, filters, purpose)
        self._out.append(packet.write())
        return packet_id

    def _send_subscribe(
        self, topic_filter: str, qos: int, sid: int, handle: object, purpose: _Purpose
    ) -> None:
        # retain_as_published off (MQTT 5's default; mqtt5's TopicFilter defaults to on): a
        # handler sees retain=True only on the broker's stored copy, never on a live update.
        tf = TopicFilter(
            topic_filter,
            max_qos=_QOS[qos],
            retain_handling=RetainHandling.SEND_ALWAYS,
            retain_as_published=False,
        )
        packet = SubscribePacket(self._allocate_id(), [tf], subscription_id=self._sid(sid))
        self._send_request(SubAckPacket, packet, handle, (topic_filter,), purpose)

    def _send_internal(
        self, topic: str, sid: int, purpose: _Purpose = _Purpose.INTERNAL, handle: object = None
    ) -> None:
        tf = TopicFilter(topic, max_qos=QoS.AT_MOST_ONCE, retain_handling=RetainHandling.SEND_NEVER)
        packet = SubscribePacket(self._allocate_id(), [tf], subscription_id=self._sid(sid))
        self._send_request(SubAckPacket, packet, handle, (topic,), purpose)

    def _sid(self, sid: int) -> int | None:
        """``sid`` when the broker takes subscription identifiers (MQTT 5 lets it refuse)."""
        connack = self.connack
        return sid if connack is None or connack.subscription_id_available else None

    def _check_capabilities(self, topic_filter: str) -> None:
        connack = self.connack
        if connack is None:
            return
        if topic_filter.startswith("$share/") and connack.shared_subscription_available is False:
            raise SubscribeError(
                topic_filter,
                _SHARED_NOT_SUPPORTED,
                "the broker does not offer shared subscriptions",
            )
        if connack.wildcard_subscription_available is False and (
            "+" in topic_filter or "#" in topic_filter
        ):
            raise SubscribeError(
                topic_filter, _WILDCARDS_NOT_SUPPORTED, "the broker does not offer wildcards"
            )

    def _protocol_error(self, events: list[Event], reason: int, message: str) -> None:
        self._out.append(DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode(reason)).write())
        self.state = SessionState.CLOSING
        events.append(Disconnected(reason, message, error=ProtocolError(message, reason)))

    # --- internals: waiters -------------------------------------------------------------------

    def _satisfied(self, waiter: _Waiter) -> bool:
        what = waiter.what
        if what is WaitFor.FLUSHED:
            return not self.outgoing.unfinished
        if what is WaitFor.CAPACITY:
            return self.state is not SessionState.CONNECTED or (
                self.outgoing.unfinished < self.unacked_limit
            )
        return self.state is SessionState.CONNECTED or self.outgoing.has_room(waiter.size)

    def _check_waiters(self, events: list[Event]) -> None:
        if not self._waiters:
            return
        keep: list[_Waiter] = []
        for waiter in self._waiters:
            if self._satisfied(waiter):
                events.append(Settled(waiter.handle))
            else:
                keep.append(waiter)
        self._waiters = keep

    # --- internals: receiving -----------------------------------------------------------------

    def _handle_publish(self, packet: PublishPacket, events: list[Event]) -> None:
        if packet.topic == self._heartbeat_topic and self.liveness is not None:
            self.liveness.heartbeat_returned()
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
        kind = type(packet)
        if self.state is SessionState.CONNECTING:
            if kind is ConnAckPacket:
                assert isinstance(packet, ConnAckPacket)
                self._handle_connack(packet, events, now)
            elif kind is DisconnectPacket:
                assert isinstance(packet, DisconnectPacket)
                self._handle_disconnect(packet, events)
            else:
                self._protocol_error(events, _PROTOCOL_ERROR, f"{kind.__name__} before CONNACK")
            return
        inflight = self.outgoing.inflight
        if kind is PubAckPacket:
            assert isinstance(packet, PubAckPacket)
            item = inflight.get(packet.packet_id)
            if item is not None and item.qos == 1:
                self._finish(packet.packet_id, events, int(packet.reason_code), packet.reason_str)
        elif kind is PubRecPacket:
            assert isinstance(packet, PubRecPacket)
            self._handle_pubrec(packet, events)
        elif kind is PubCompPacket:
            assert isinstance(packet, PubCompPacket)
            item = inflight.get(packet.packet_id)
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
        first = not self._connected_once
        self._connected_once = True
        if packet.assigned_client_id:
            self.client_id = packet.assigned_client_id
        link = self._link
        link.send_quota = packet.receive_max
        link.max_packet_size = packet.max_packet_size
        keep_alive = packet.server_keep_alive
        link.keep_alive = self.keep_alive if keep_alive is None else keep_alive
        link.next_ping = now + link.keep_alive if link.keep_alive > 0 else None
        link.session_present = present = bool(packet.session_present)
        link.first = first
        if self.liveness is not None:
            self.liveness.link_started(now)
        store = self.outgoing
        for item in store.take_expired(now):
            events.append(
                PublishDone(item.handle, 0x80, "expired", OutboxFullError("message expired"))
            )
        if present:
            # The broker kept our session: resend what it has not acknowledged, in order,
            # before any new publish, as the broker's Receive Maximum allows.
            store.resend.extend(store.inflight.values())
        else:
            self._restart_session(events)
        events.append(Connected(present, packet))
        self._restore(fresh=first or not present)
        self._send_pending(events)
        if not link.restoring:
            self._become_ready(events)

    def _restart_session(self, events: list[Event]) -> None:
        """The broker has no session for us: what it never acknowledged is sent again as new.

        A QoS 2 publish whose PUBREC came is owned by the broker already: it is finished.
        """
        store = self.outgoing
        again: list[Outgoing] = []
        for item in store.inflight.values():
            if item.released:
                events.append(PublishDone(item.handle, 0, "session not present; PUBREC received"))
            else:
                again.append(item)
        store.inflight.clear()
        store.pending.extendleft(reversed(again))
        self._incoming_qos2.clear()

    def _restore(self, *, fresh: bool) -> None:
        """Queue the subscription restore plan of a new link (see :mod:`._subtable`)."""
        plan = self.subscriptions.restore_plan(fresh=fresh)
        link = self._link
        for topic_filter, qos, sid in plan.subscribe:
            self._send_subscribe(topic_filter, qos, sid, None, _Purpose.RESTORE)
            link.restoring += 1
        for topic, sid in plan.internal:
            self._send_internal(topic, sid, _Purpose.RESTORE)
            link.restoring += 1
        if plan.unsubscribe:
            packet = UnsubscribePacket(self._allocate_id(), list(plan.unsubscribe))
            self._send_request(UnsubAckPacket, packet, None, plan.unsubscribe, _Purpose.RESTORE)
            link.restoring += 1

    def _become_ready(self, events: list[Event]) -> None:
        link = self._link
        link.ready = True
        if self._announce is not None:
            topic, payload = self._announce(link.first)
            self.publish(topic, payload, 1, True)
        events.append(Ready(link.session_present, link.first, link.refused))

    def _handle_pubrec(self, packet: PubRecPacket, events: list[Event]) -> None:
        packet_id = packet.packet_id
        item = self.outgoing.inflight.get(packet_id)
        if item is None or item.qos != 2:
            reason = mqtt5.PubRelReasonCode(_PACKET_ID_NOT_FOUND)
            self._out.append(PubRelPacket(packet_id, reason_code=reason).write())
            return
        reason_code = int(packet.reason_code)
        if reason_code >= 0x80:
            self._finish(packet_id, events, reason_code, packet.reason_str)
            return
        if reason_code == _NO_SUBSCRIBERS:
            self.stats.no_subscribers += 1
        item.released = True
        if self.liveness is not None:
            self.liveness.acked(self._now)
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
        if len(codes) != len(request.filters):
            self._protocol_error(
                events, _PROTOCOL_ERROR, f"{type(packet).__name__} with {len(codes)} reason codes"
            )
            return
        del self._requests[packet.packet_id]
        purpose = request.purpose
        table = self.subscriptions
        subscribing = type(packet) is SubAckPacket
        for name, code in zip(request.filters, codes, strict=True):
            if purpose is _Purpose.RAW:
                continue
            if subscribing:
                if code < 0x80:
                    table.confirmed(name, code)
                else:
                    table.refused(name)
                    if purpose is not _Purpose.USER:
                        log.error("%s", SubscribeError(name, code))
                        self._link.refused += ((name, code),)
            else:
                table.unsubscribed(name)
                if code >= 0x80 and purpose is not _Purpose.USER:
                    log.warning("could not unsubscribe %r: reason code %#x", name, code)
        if purpose is _Purpose.RAW or purpose is _Purpose.USER or request.handle is not None:
            if subscribing:
                events.append(Subscribed(request.handle, codes))
            else:
                events.append(Unsubscribed(request.handle, codes))
        elif purpose is _Purpose.RESTORE:
            link = self._link
            link.restoring -= 1
            if not link.restoring and not link.ready:
                self._become_ready(events)

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
