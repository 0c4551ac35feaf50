"""The sans-I/O MQTT 5 session: everything that survives a link lives here.

Rule 1 of this module (after h11's): **whatever outlives one network link is owned by the
session, and every field of its state is set in** :meth:`Session.__init__` **below**. The
session holds its parts as attributes, and each part owns its own data (as h11's
``Connection`` owns a ``ReceiveBuffer`` and websockets' ``Protocol`` a ``StreamReader``):

- :attr:`Session.reader` (:mod:`.reader`): framing and the partial-packet buffer of the link;
- :attr:`Session.outgoing` (:mod:`.publishing`): each outgoing publish from the call to its
  outcome (packet ids, the broker's Receive Maximum window, DUP resends, the offline queue
  with the outbox limits and its optional durable journal);
- :attr:`Session.subscriptions` (:mod:`.subscribing`): the subscription table, its
  SUBSCRIBE/UNSUBSCRIBE traffic and the restore plan for a fresh or a resumed broker session;
- the incoming acknowledgements (:mod:`.incoming`) of received QoS 1/2 messages;
- :attr:`Session.liveness` (:mod:`.liveness`): heartbeat, watchdog and ack-timeout deadlines.

The session itself keeps the link's state (:class:`SessionState`, the keep-alive ping, CONNACK,
readiness), dispatches each packet to the part it concerns, owns the output buffer the parts
write to, and the one :meth:`Session.next_deadline`. No part refers to another, nor to the
session: each is handed, at construction, only what it writes to (the output, the counters,
the packet-id allocator), and the link state and the time with each call. The asyncio layer
above only moves bytes, keeps one timer, and turns handles into futures; it asks here for
every decision, so every race between a link coming up and a call arriving is a unit test
without a socket.

No sockets, no sleeping, no asyncio (the one exception: a durable outbox, handed in as a
:class:`~.outgoing.Journal`, does synchronous disk I/O with an fsync for each QoS 1/2 publish
accepted while no link is up, and only then): it takes bytes received, method calls and the
current time (``now``, from a monotonic clock); it returns bytes to send
(:meth:`Session.data_to_send`), events (:mod:`.events`), and the next deadline.

- One :class:`Session` lives as long as the client, across many links.
  :meth:`Session.connection_made` starts a link (queues CONNECT), :meth:`Session.connection_lost`
  ends it. On CONNACK the session itself queues the resends, the subscription restore and the
  pending publishes, in that order, and reports :class:`~.events.Ready` once every restore
  request is answered.
- Each outgoing QoS 1/2 publish and each request carries an opaque ``handle`` chosen by the
  caller, given back in the event that finishes it.
- Incoming QoS 1/2: with ``ack_after_handling`` (the client's default) the PUBACK or PUBREC
  waits until :meth:`Session.ack` says every handler is done with it, in arrival order (see
  :mod:`.incoming`); without it, QoS 1 is acknowledged on receipt. QoS 2 is delivered on
  PUBLISH and its id kept until PUBREL (the spec's method B): exactly once to the application.
- Anything the broker sends that MQTT 5 does not allow is a protocol error: the session queues a
  DISCONNECT with the right reason code and reports :class:`~.events.Disconnected`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

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
    SubAckPacket,
    TopicFilter,
    UnsubAckPacket,
    Will,
)

from .._errors import (
    ClientStateError,
    ConnectionLostError,
    InvalidArgumentError,
    OutboxFullError,
    ProtocolError,
)
from .._record import Record
from .codes import (
    KEEP_ALIVE_TIMEOUT,
    MAX_PACKET_ID,
    PACKET_ID_NOT_FOUND,
    PROTOCOL_ERROR,
    TOPIC_ALIAS_INVALID,
    UNSUPPORTED_PROTOCOL_VERSION,
    Violation,
)
from .events import (
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    PublishDone,
    Ready,
    RequestAborted,
    Settled,
)
from .framing import read_packet
from .incoming import Due, Incoming
from .liveness import Liveness
from .outgoing import OutboxPolicy, OutgoingStore
from .poison import link_ended_by_broker
from .publishing import Publishing
from .reader import Reader
from .stats import SessionStats
from .subscribing import Subscribing

if TYPE_CHECKING:  # the durable store (sqlite3) is loaded only by those who use it
    from .mqtt311 import Downgrade  # and the 3.1.1 codec by the clients that speak it
    from .outgoing import Journal

__all__ = ["Session", "SessionState", "SessionStats", "WaitFor"]

log = logging.getLogger("tars.mqtt")

_DEFAULT_UNACKED_LIMIT: Final = 1000
_PINGREQ: Final = PingReqPacket().write()
_MQTT3_ONLY: Final = (
    "the broker speaks only MQTT 3.1.1 (or older): use protocol='3.1.1' or 'auto' (the default)"
)


class SessionState(enum.Enum):
    """Where the current link is in its life."""

    DISCONNECTED = "disconnected"  # no link
    CONNECTING = "connecting"  # CONNECT sent, waiting for CONNACK
    CONNECTED = "connected"  # CONNACK success received
    CLOSING = "closing"  # DISCONNECT queued (by us) or the link found dead: it should close


_ENDED: Final = frozenset((SessionState.CLOSING, SessionState.DISCONNECTED))
_AT_MOST_ONCE: Final = mqtt5.QoS.AT_MOST_ONCE
_AT_LEAST_ONCE: Final = mqtt5.QoS.AT_LEAST_ONCE
_PUBACK_SUCCESS: Final = mqtt5.PubAckReasonCode.SUCCESS


class WaitFor(enum.Enum):
    """What a waiter registered with :meth:`Session.wait` waits for."""

    FLUSHED = "flushed"  # no publish owed an outcome
    CAPACITY = "capacity"  # fewer unfinished publishes than the limit (or no link)
    ROOM = "room"  # a link, or room in the outbox for ``size`` bytes


class _Waiter:
    __slots__ = ("handle", "size", "what")

    def __init__(self, handle: object, what: WaitFor, size: int) -> None:
        self.handle = handle
        self.what = what
        self.size = size


class _Link(Record):
    """What lives and dies with one network link (the parts keep their own share)."""

    __slots__ = (
        "broker_reason",
        "connacked",
        "first",
        "keep_alive",
        "next_ping",
        "ping_deadline",
        "ready",
        "session_present",
    )
    keep_alive: int
    next_ping: float | None
    ping_deadline: float | None
    ready: bool
    session_present: bool
    first: bool
    connacked: bool  # CONNACK accepted: resends and the restore went out on this link
    broker_reason: int | None  # the reason code of the broker's DISCONNECT, if one came

    def __init__(self) -> None:
        self.keep_alive = 0
        self.next_ping = None
        self.ping_deadline = None
        self.ready = False
        self.session_present = False
        self.first = False
        self.connacked = False
        self.broker_reason = None


class Session:
    """The MQTT 5 state of one client, fed bytes, calls and the time; giving back bytes and
    events (see the module docstring).

    Raises :class:`~tars.mqtt.ClientStateError` for calls that make no sense in the current link
    state and :class:`~tars.mqtt.PayloadTooLarge` for a publish over the broker's maximum packet
    size. Everything the broker gets wrong becomes a :class:`~.events.Disconnected` event.
    """

    def __init__(
        self,
        client_id: str,
        *,
        keep_alive: int = 60,
        clean_start: bool = True,
        session_expiry_interval: int = 0,
        receive_maximum: int = 100,
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
        ack_after_handling: bool = False,
        journal: Callable[[], Journal] | None = None,
        incoming: Incoming[Any] | None = None,
    ) -> None:
        """``heartbeat`` is (topic, payload factory) of the heartbeat the liveness schedule asks
        for; ``announce(first)`` gives the (topic, payload) of a retained QoS 1 status published
        as each link becomes ready. ``ack_after_handling``: received QoS 1/2 messages are
        acknowledged by :meth:`acknowledge` once the incoming part (``incoming``, see
        :mod:`.incoming`) says they are due, not on arrival. ``journal`` opens the durable
        outbox (see :meth:`open_journal`). ``receive_maximum`` defaults to the client's
        (:class:`~tars.mqtt.MQTTClientConfig`).

        Raises :class:`~tars.mqtt.InvalidArgumentError` for a ``receive_maximum`` outside
        1..65535 and for bad outbox limits.
        """
        if not 1 <= receive_maximum <= MAX_PACKET_ID:
            raise InvalidArgumentError("receive_maximum must be in 1..65535")
        self.client_id = client_id
        self.keep_alive = keep_alive
        self.clean_start = clean_start
        self.session_expiry_interval = session_expiry_interval
        self.receive_maximum = receive_maximum
        self.username = username
        self._password = password
        self.will = will
        self.ping_timeout = ping_timeout  # how long a PINGREQ may wait for its PINGRESP
        self.unacked_limit = unacked_limit
        self.ack_after_handling = ack_after_handling
        # The link's state and the session's own.
        self.state = SessionState.DISCONNECTED
        self.connack: ConnAckPacket | None = None
        self.stats = SessionStats()
        self._link = _Link()
        self._out: list[bytes] = []  # the output buffer every part writes to
        self._next_id = 0  # the last packet id given (to a publish or a request)
        self._waiters: list[_Waiter] = []
        self._connected_once = False
        self._now = 0.0  # the time of the last input
        self._heartbeat = heartbeat
        self._heartbeat_topic = heartbeat[0] if heartbeat is not None else None
        self._announce = announce
        self._journal = journal
        # The parts, each owning its data; none refers to another or to the session.
        send = self._out.append
        self.reader = Reader(max_packet_size)
        self.outgoing = Publishing(
            OutgoingStore(
                max_messages=outbox_max_messages,
                max_bytes=outbox_max_bytes,
                ttl=outbox_ttl,
                policy=outbox_policy,
            ),
            send=send,
            stats=self.stats,
            allocate_id=self._allocate_id,
            liveness=liveness,
            queue_qos0_offline=queue_qos0_offline,
        )
        self.subscriptions = Subscribing(send=send, allocate_id=self._allocate_id)
        # Each received QoS 1/2 message from arrival to acknowledgement (order, holders, the
        # unrouted backlog, QoS 2 ids): the incoming part owns it.
        self.incoming: Incoming[Any] = incoming if incoming is not None else Incoming()
        self._incoming_qos2 = self.incoming.qos2  # delivered and PUBREC-ed, waiting for PUBREL
        self.liveness = liveness
        # MQTT 3.1.1 (docs/mqtt311.md): the protocol level of the next link, and the rewrite of
        # what the current one sends. On MQTT 5 the reader keeps mqtt5's read and there is no
        # rewrite: the hot path is unchanged.
        self.protocol_level = 5
        self.links_started = 0  # CONNECTs queued, ever: tells a caller whether one went out
        self._downgrade: Downgrade | None = None
        self._warned_properties = [False]
        self._incoming_limit = receive_maximum  # QoS 2 awaiting PUBREL before a protocol error
        if heartbeat is not None:
            self.subscriptions.table.add_internal(heartbeat[0])

    def __repr__(self) -> str:  # never shows the password
        return (
            f"<Session client_id={self.client_id!r} state={self.state.value} "
            f"inflight={len(self.outgoing.store.inflight)} "
            f"pending={len(self.outgoing.store.pending)}>"
        )

    def use_credentials(self, username: str | None, password: str | None) -> None:
        """The credentials of the next CONNECT (each broker of a list may have its own)."""
        self.username = username
        self._password = password

    def use_protocol(self, level: int) -> None:
        """The protocol level of the next link: 5 (MQTT 5) or 4 (MQTT 3.1.1)."""
        if level not in (4, 5):
            raise InvalidArgumentError(f"protocol level must be 4 (3.1.1) or 5, not {level!r}")
        self.protocol_level = level

    @property
    def max_packet_size(self) -> int | None:
        """Ours, told to the broker in CONNECT; the reader refuses a larger packet."""
        return self.reader.max_packet_size

    @property
    def linked(self) -> bool:
        """True while a CONNACK-ed link is up (publishes go out now)."""
        return self.state is SessionState.CONNECTED

    @property
    def ready(self) -> bool:
        """True once the current link's restore is answered (see :class:`~.events.Ready`)."""
        return self.state is SessionState.CONNECTED and self._link.ready

    @property
    def session_present(self) -> bool:
        """Whether the broker resumed our session on the current (or last) link."""
        return self._link.session_present

    @property
    def inflight_count(self) -> int:
        """QoS 1/2 publishes sent and not yet finished."""
        return len(self.outgoing.store.inflight)

    @property
    def at_capacity(self) -> bool:
        """True while a link is up and ``unacked_limit`` or more publishes are unfinished."""
        return self.state is SessionState.CONNECTED and self.outgoing.store.unfinished >= (
            self.unacked_limit
        )

    @property
    def output_backlog(self) -> int:
        """Packets queued for the wire since the last :meth:`data_to_send`."""
        return len(self._out)

    def connection_made(self, now: float) -> None:
        """A new link is up: queue CONNECT. ``clean_start`` applies only to the first link."""
        if self.state is not SessionState.DISCONNECTED:
            raise ClientStateError(f"connection_made() in state {self.state.value}")
        self._now = now
        self._out.clear()
        self._link = _Link()
        self.reader.clear()
        self.incoming.link_ended()  # a new link: tokens of the last one are void
        self.links_started += 1
        # MQTT 3.1.1: the link reads with the 3.1.1 codec and rewrites what we send (the
        # CONNECT below included) in data_to_send(); MQTT 5 keeps mqtt5's read and no rewrite.
        if self.protocol_level == 4:
            from .mqtt311 import Downgrade  # here: loaded by the clients that speak 3.1.1 only

            downgrade = Downgrade(self.client_id, self.stats, self._warned_properties)
            self._downgrade = downgrade
            self.reader.read = downgrade.read
            self._incoming_limit = MAX_PACKET_ID  # the broker never learns receive_maximum
        else:
            self._downgrade = None
            self.reader.read = read_packet
            self._incoming_limit = self.receive_maximum
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

    def connection_lost(self, *, now: float, broker_closed: bool = False) -> list[Event]:
        """The link is gone. Publishes stay for the next link; requests are aborted.

        ``broker_closed``: the broker closed the connection (not us, not a transport error);
        ``now``: the clock of the poison-message breaker's :data:`~.poison.BARE_CLOSE_SPAN`.
        A link the broker ended after its CONNACK feeds the poison-message breaker
        (:mod:`.poison`), whose verdict comes back as events.
        """
        events: list[Event] = []
        link = self._link
        if link.connacked and (broker_closed or link.broker_reason is not None):
            events += link_ended_by_broker(
                self.outgoing.store,
                self.subscriptions.table,
                self.subscriptions.requests.values(),
                link.broker_reason,
                self.stats,
                now,
            )
        self.state = SessionState.DISCONNECTED
        self._out.clear()
        self._link = _Link()
        self.reader.clear()
        self.incoming.link_ended()  # the broker redelivers them (resumed session) or they are gone
        self.outgoing.link_ended()
        if self.liveness is not None:
            self.liveness.link_ended()
        events += [RequestAborted(h) for h in self.subscriptions.link_ended()]
        self._check_waiters(events)
        return events

    def acknowledge(self, due: list[Due]) -> bool:
        """Queue the acknowledgements the incoming part made due (:meth:`Incoming.done
        <._incoming.Incoming.done>`, in arrival order): PUBACK for QoS 1, PUBREC for QoS 2.
        False without a link (the broker sends those messages again)."""
        if self.state is not SessionState.CONNECTED:
            return False
        out = self._out
        for pid, qos in due:
            if qos == 1:
                out.append(b"\x40\x02" + pid.to_bytes(2, "big"))  # PUBACK, success
            else:
                self._incoming_qos2.add(pid)
                out.append(PubRecPacket(pid).write())
        return True

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
        caller fails them). Offline records abandoned so are counted as outbox drops, except
        those in the durable outbox: they stay there for the next start, which sends them, and
        the journal is closed."""
        handles: list[object] = []
        lost = kept = 0
        store = self.outgoing.store
        for item in store.take_all():
            handles.append(item.handle)
            if item.seq is not None:
                kept += 1
                continue
            lost += 1
            if item.offline:  # the outbox's: counted as its drops (the rest was in flight)
                store.dropped += 1
        store.detach()
        if lost:
            log.warning(
                "%s: %d publishes never acknowledged by the broker were discarded at shutdown",
                self.client_id,
                lost,
            )
        if kept:
            log.info(
                "%s: %d publishes not acknowledged yet stay in the durable outbox for the next "
                "start",
                self.client_id,
                kept,
            )
        requests = self.subscriptions.requests
        handles.extend(r.handle for r in requests.values())
        handles.extend(w.handle for w in self._waiters)
        requests.clear()
        self._waiters.clear()
        self._incoming_qos2.clear()
        return handles

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call, as one buffer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self._downgrade is not None:  # an MQTT 3.1.1 link (see connection_made)
            return self._downgrade(data)
        return data

    def restart(self) -> None:
        """A new life after :meth:`abandon` (``connect()`` after ``shutdown()``): the next link
        starts as the first one did (``clean_start``, a full restore, "ready")."""
        self._connected_once = False
        self.subscriptions.table.forget_broker()

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
                    KEEP_ALIVE_TIMEOUT,
                    "no PINGRESP from the broker",
                    error=ProtocolError("keep-alive timeout", KEEP_ALIVE_TIMEOUT),
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
            log.warning(
                "%s: link to the broker is stale (%s); reconnecting",
                self.client_id,
                why,
                extra={"client_id": self.client_id},
            )
            return [
                Disconnected(
                    KEEP_ALIVE_TIMEOUT,
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

    # --- publishing (the outgoing part) ---------------------------------------------------------

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
        counted. ``handle`` comes back in the :class:`~.events.PublishDone` of the record;
        ``now`` (monotonic) dates an offline record for the outbox TTL and starts the ack
        timeout of a publish sent now: pass it (without it, the time of the last input is
        used, and a link idle for longer than ``publish_timeout`` is found stale at once).

        Raises :class:`~tars.mqtt.PayloadTooLarge` when the encoded packet is over the broker's
        Maximum Packet Size, :class:`~tars.mqtt.PublishError` when its CONNACK said it cannot
        serve the QoS or the retain flag, :class:`~tars.mqtt.OutboxFullError` (outbox policy
        ``raise``), :class:`~tars.mqtt.InvalidArgumentError` for a QoS other than 0, 1, 2.
        """
        if now is not None:
            self._now = now
        return self.outgoing.publish(
            topic,
            payload,
            qos,
            retain,
            handle,
            properties,
            self.state is SessionState.CONNECTED,
            self._now,
        )

    def open_journal(self) -> int:
        """Open the durable outbox, if there is one and it is not open yet, and queue what an
        earlier process left in it ahead of any new publish. Returns how many were loaded.

        From then on, QoS 1/2 publishes accepted without a link are written to it before
        :meth:`publish` returns (synchronous disk I/O, see :mod:`.journal`). Raises
        :class:`~tars.mqtt.ConfigError` when the file cannot be opened or is in use.
        """
        store = self.outgoing.store
        if self._journal is None or store.journal is not None:
            return 0
        loaded = store.attach(self._journal())
        if loaded:
            log.info(
                "%s: %d publishes left in the durable outbox by an earlier run are queued",
                self.client_id,
                loaded,
            )
        if loaded and not store.has_room(0):  # a run with larger limits, or many in flight
            log.warning(
                "%s: the durable outbox holds %d publishes, more than outbox_max_messages / "
                "outbox_max_bytes allow; all are kept (in memory too) and sent first, and new "
                "offline publishes meet the outbox policy until they are",
                self.client_id,
                loaded,
            )
        return loaded

    def has_room(self, size: int) -> bool:
        """Whether a publish of ``size`` bytes can be taken now without an outbox drop."""
        return self.state is SessionState.CONNECTED or self.outgoing.store.has_room(size)

    def wait(self, handle: object, what: WaitFor, size: int = 0) -> bool:
        """Register ``handle`` to get a :class:`~.events.Settled` when ``what`` holds.

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

    def _satisfied(self, waiter: _Waiter) -> bool:
        what = waiter.what
        store = self.outgoing.store
        if what is WaitFor.FLUSHED:
            return not store.unfinished
        if what is WaitFor.CAPACITY:
            return self.state is not SessionState.CONNECTED or (
                store.unfinished < self.unacked_limit
            )
        return self.state is SessionState.CONNECTED or store.has_room(waiter.size)

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

    # --- subscribing (the subscriptions part) ---------------------------------------------------

    def add_subscription(self, topic_filter: str, qos: int, *, handle: object = None) -> bool:
        """One more subscription on ``topic_filter``: True when a SUBSCRIBE was sent now (its
        :class:`~.events.Subscribed` carries ``handle``), False when the broker holds it
        already or no link is up (the restore plan sends it).

        Raises :class:`~tars.mqtt.SubscribeError` when the broker's CONNACK said it cannot serve
        this filter (shared subscriptions, wildcards).
        """
        linked = self.state is SessionState.CONNECTED
        return self.subscriptions.add_subscription(topic_filter, qos, handle, linked)

    def remove_subscription(self, topic_filter: str, qos: int, *, handle: object = None) -> bool:
        """One subscription fewer: True when an UNSUBSCRIBE was sent now (its
        :class:`~.events.Unsubscribed` carries ``handle``)."""
        linked = self.state is SessionState.CONNECTED
        return self.subscriptions.remove_subscription(topic_filter, qos, handle, linked)

    def subscription_id(self, topic_filter: str) -> int | None:
        """The identifier the broker tags ``topic_filter``'s messages with (None: none)."""
        return self.subscriptions.table.sid(topic_filter)

    def add_internal(self, topic: str, *, handle: object = None) -> tuple[int, bool]:
        """An internal consumer's exact topic (QoS 0, no retained copies); subscribed now when
        linked, and on every new link. Returns its subscription identifier, and whether a
        SUBSCRIBE was sent now (its :class:`~.events.Subscribed` carries ``handle``)."""
        linked = self.state is SessionState.CONNECTED
        return self.subscriptions.add_internal(topic, handle, linked)

    def subscribe(
        self,
        filters: list[TopicFilter],
        *,
        handle: object = None,
        subscription_id: int | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """A protocol-level SUBSCRIBE, outside the table (not restored on a new link).

        Raises :class:`~tars.mqtt.ClientStateError` without a CONNACK-ed link.
        """
        self._require_connected("subscribe")
        return self.subscriptions.subscribe(
            filters, handle=handle, subscription_id=subscription_id, user_properties=user_properties
        )

    def unsubscribe(
        self,
        patterns: list[str],
        *,
        handle: object = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """A protocol-level UNSUBSCRIBE, outside the table.

        Raises :class:`~tars.mqtt.ClientStateError` without a CONNACK-ed link.
        """
        self._require_connected("unsubscribe")
        return self.subscriptions.unsubscribe(
            patterns, handle=handle, user_properties=user_properties
        )

    def _require_connected(self, what: str) -> None:
        if self.state is not SessionState.CONNECTED:
            raise ClientStateError(
                f"{what}() needs a connected session (state: {self.state.value})"
            )

    def _allocate_id(self) -> int:
        """A packet id no publish in flight and no request awaiting its answer uses (the two
        parts that take ids share one space: MQTT 5 has one per direction)."""
        inflight, requests = self.outgoing.store.inflight, self.subscriptions.requests
        if len(inflight) + len(requests) >= MAX_PACKET_ID:
            raise ClientStateError("all 65535 packet ids are in use")
        next_id = self._next_id
        while True:
            next_id = next_id % MAX_PACKET_ID + 1
            if next_id not in inflight and next_id not in requests:
                self._next_id = next_id
                return next_id

    def reading_paused(self) -> None:
        """The link stopped reading on purpose (backpressure): liveness has no verdict."""
        if self.liveness is not None:
            self.liveness.pause()

    def reading_resumed(self, now: float) -> None:
        """Reading again: liveness watches afresh from ``now``."""
        if self.liveness is not None:
            self.liveness.resume(now)

    def _become_ready(self, events: list[Event]) -> None:
        """Every restore request of the link is answered: announce, and say so."""
        link = self._link
        link.ready = True
        if self._announce is not None:
            topic, payload = self._announce(link.first)
            self.publish(topic, payload, 1, True)
        events.append(Ready(link.session_present, link.first, self.subscriptions.refused))

    # --- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the link; returns the events they complete, in order."""
        if self.state in _ENDED:
            return []
        self._now = now
        packets, error = self.reader.feed(data)
        events: list[Event] = []
        handle = self._handle_packet
        connected = SessionState.CONNECTED
        for packet in packets:
            # `is` comparisons, not `in _ENDED`, per packet: an Enum member's hash is a Python
            # call (issue 18's receive path, measured).
            if type(packet) is PublishPacket and self.state is connected:
                self._handle_publish(packet, events)
            else:
                handle(packet, events, now)
            state = self.state
            if state is not connected and state is not SessionState.CONNECTING:
                return events
        if error is not None:
            if error.v311_connack and self.state is SessionState.CONNECTING:
                # The broker answered our CONNECT in MQTT 3.1.1: it refused our version. No
                # retry fixes it.
                self.state = SessionState.CLOSING
                events.append(ConnectFailed(UNSUPPORTED_PROTOCOL_VERSION, _MQTT3_ONLY))
            else:
                self._protocol_error(events, error.reason, error.message)
            return events
        if self._waiters and packets:
            self._check_waiters(events)
        return events

    def _protocol_error(self, events: list[Event], reason: int, message: str) -> None:
        self._out.append(DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode(reason)).write())
        self.state = SessionState.CLOSING
        events.append(Disconnected(reason, message, error=ProtocolError(message, reason)))

    def _handle_publish(self, packet: PublishPacket, events: list[Event]) -> None:
        topic = packet.topic
        if not topic or "+" in topic or "#" in topic or packet.topic_alias is not None:
            # We never allow Topic Aliases (no Topic Alias Maximum in our CONNECT), and a topic
            # name has no wildcards: such a PUBLISH reaching a "#" handler would be a lie.
            if packet.topic_alias is not None:
                self._protocol_error(events, TOPIC_ALIAS_INVALID, "PUBLISH with a topic alias")
            else:
                self._protocol_error(
                    events, PROTOCOL_ERROR, f"PUBLISH with an invalid topic name {topic!r}"
                )
            return
        if topic == self._heartbeat_topic and self.liveness is not None:
            self.liveness.heartbeat_returned()
        codec_qos = packet.qos  # the codec's members are singletons: `is`, not int()
        if codec_qos is _AT_MOST_ONCE:
            events.append(packet)
            return
        qos = 1 if codec_qos is _AT_LEAST_ONCE else int(codec_qos)
        if not qos:
            events.append(packet)
            return
        packet_id = packet.packet_id
        if not packet_id:
            self._protocol_error(events, PROTOCOL_ERROR, "QoS > 0 PUBLISH without a packet id")
            return
        incoming, held = self._incoming_qos2, self.incoming
        if qos == 2 and packet_id in incoming:
            # A resend of a message we already delivered: acknowledge again, deliver once.
            self._out.append(PubRecPacket(packet_id).write())
            return
        if packet_id in held:
            return  # sent again before we acknowledged it: it is being handled already
        if len(incoming) >= self._incoming_limit or (
            self.ack_after_handling and len(held) == self.receive_maximum
        ):
            # Some brokers ignore our Receive Maximum (Mosquitto with max_inflight_messages 0,
            # or a QoS 2 burst while our PUBRECs wait for PUBREL): tolerated, as ending the link
            # would lose more, but flow control is then the broker's.
            self.stats.receive_maximum_exceeded += 1
            if self.stats.receive_maximum_exceeded == 1:
                log.warning(
                    "%s: the broker sends more unacknowledged messages than our Receive "
                    "Maximum (%d); they are accepted, but memory is then bounded only by "
                    "the broker's own limits",
                    self.client_id,
                    self.receive_maximum,
                )
        if self.ack_after_handling:
            held.arrive(packet_id, qos)  # acknowledged once its holders are done (see .incoming)
        elif qos == 1:
            self._out.append(PubAckPacket(packet_id).write())
        else:
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
                self._protocol_error(events, PROTOCOL_ERROR, f"{kind.__name__} before CONNACK")
            return
        if kind is PubAckPacket:
            assert isinstance(packet, PubAckPacket)
            code = packet.reason_code  # a singleton member: `is` before int() (3x the cost)
            self.outgoing.handle_puback(
                packet.packet_id,
                events,
                0 if code is _PUBACK_SUCCESS else int(code),
                packet.reason_str,
                now,
            )
        elif kind is PubRecPacket:
            assert isinstance(packet, PubRecPacket)
            self.outgoing.handle_pubrec(packet, events, now)
        elif kind is PubCompPacket:
            assert isinstance(packet, PubCompPacket)
            self.outgoing.handle_pubcomp(
                packet.packet_id, events, int(packet.reason_code), packet.reason_str, now
            )
        elif kind is PubRelPacket:
            assert isinstance(packet, PubRelPacket)
            known = packet.packet_id in self._incoming_qos2
            self._incoming_qos2.discard(packet.packet_id)
            reason = mqtt5.PubCompReasonCode(0 if known else PACKET_ID_NOT_FOUND)
            self._out.append(PubCompPacket(packet.packet_id, reason_code=reason).write())
        elif kind is SubAckPacket or kind is UnsubAckPacket:
            assert isinstance(packet, SubAckPacket | UnsubAckPacket)
            try:
                restored = self.subscriptions.handle_request_ack(packet, events)
            except Violation as exc:
                self._protocol_error(events, exc.reason, exc.message)
                return
            if restored and not self._link.ready:
                self._become_ready(events)
        elif kind is PingRespPacket:
            self._link.ping_deadline = None
        elif kind is DisconnectPacket:
            assert isinstance(packet, DisconnectPacket)
            self._handle_disconnect(packet, events)
        else:
            self._protocol_error(events, PROTOCOL_ERROR, f"unexpected {kind.__name__} from broker")

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
        link.connacked = True
        keep_alive = packet.server_keep_alive
        link.keep_alive = self.keep_alive if keep_alive is None else keep_alive
        link.next_ping = now + link.keep_alive if link.keep_alive > 0 else None
        link.session_present = present = bool(packet.session_present)
        link.first = first
        outgoing, subscriptions = self.outgoing, self.subscriptions
        outgoing.link_started(packet)
        subscriptions.link_started(packet)
        if self.liveness is not None:
            self.liveness.link_started(now)
        for item in outgoing.store.take_expired(now):
            events.append(
                PublishDone(item.handle, 0x80, "expired", OutboxFullError("message expired"))
            )
        if present:
            # The broker kept our session: resend what it has not acknowledged, in order,
            # before any new publish, as the broker's Receive Maximum allows.
            outgoing.resume_session()
        else:
            outgoing.restart_session(events)
            self._incoming_qos2.clear()
        events.append(Connected(present, packet))
        subscriptions.restore(fresh=first or not present)
        outgoing.send_pending(events, now)
        if not subscriptions.restoring:
            self._become_ready(events)

    def _handle_disconnect(self, packet: DisconnectPacket, events: list[Event]) -> None:
        self.state = SessionState.CLOSING
        self._link.broker_reason = int(packet.reason_code)  # for the poison-message breaker
        events.append(
            Disconnected(
                int(packet.reason_code),
                packet.reason_str,
                by_peer=True,
                server_reference=packet.server_reference,
            )
        )
