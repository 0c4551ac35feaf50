"""The sans-I/O MQTT 5 session: everything that survives a link lives here.

Rule 1 of this module (after h11's): **whatever outlives one network link is owned here, and
nowhere else.** Each outgoing publish from the call to its outcome (packet ids, the broker's
Receive Maximum window, DUP resends, the offline queue with the outbox limits and its optional
durable journal), the subscription table and the restore plan for a fresh or a resumed broker
session, incoming QoS 2 state, and the liveness deadlines (keep-alive, heartbeat, watchdog, ack
timeout). The asyncio layer above
only moves bytes, keeps one timer, and turns handles into futures; it asks here for every
decision, so every race between a link coming up and a call arriving is a unit test without a
socket.

No sockets, no sleeping, no asyncio (the one exception: a durable outbox, handed in as a
:class:`~._journal.Journal`, does synchronous disk I/O with an fsync for each QoS 1/2 publish
accepted while no link is up, and only then): it takes bytes received, method calls and the
current time (``now``, from a monotonic clock); it returns bytes to send
(:meth:`Session.data_to_send`), events (:mod:`._events`), and the next deadline.

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

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    ConnectPacket,
    DisconnectPacket,
    PubAckPacket,
    PublishPacket,
    PubRecPacket,
    Will,
)

from .._errors import (
    ClientStateError,
    ConnectionLostError,
    InvalidArgumentError,
    ProtocolError,
)
from .events import (
    Disconnected,
    Event,
    Ready,
    RequestAborted,
)
from .incoming import IncomingAcks
from .liveness import Liveness
from .outgoing import OutboxPolicy, OutgoingStore
from .poison import link_ended_by_broker
from .session_base import (
    _DEFAULT_UNACKED_LIMIT,
    _KEEP_ALIVE_TIMEOUT,
    _MAX_PACKET_ID,
    _PINGREQ,
    SessionState,
    SessionStats,
    WaitFor,
    _Link,
    _Request,
    _Waiter,
)
from .session_receive import Receiving
from .subtable import SubscriptionTable

if TYPE_CHECKING:  # the durable store (sqlite3) is loaded only by those who use it
    from .outgoing import Journal

__all__ = ["Session", "SessionState", "SessionStats", "WaitFor"]

log = logging.getLogger("tars.mqtt")


class Session(Receiving):
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
        ack_after_handling: bool = False,
        journal: Callable[[], Journal] | None = None,
    ) -> None:
        """``heartbeat`` is (topic, payload factory) of the heartbeat the liveness schedule asks
        for; ``announce(first)`` gives the (topic, payload) of a retained QoS 1 status published
        as each link becomes ready. ``ack_after_handling``: received QoS 1/2 messages are
        acknowledged by :meth:`ack`, not on arrival (see :mod:`._incoming`). ``journal`` opens
        the durable outbox (see :meth:`open_journal`)."""
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
        self.ack_after_handling = ack_after_handling
        self._held = IncomingAcks()  # received, acknowledgement withheld until ack()
        self.generation = 0  # counts links: an ack() from an earlier link is ignored
        self._waiters: list[_Waiter] = []
        self._connected_once = False
        self._now = 0.0
        self._journal = journal
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

    def connection_made(self, now: float) -> None:
        """A new link is up: queue CONNECT. ``clean_start`` applies only to the first link."""
        if self.state is not SessionState.DISCONNECTED:
            raise ClientStateError(f"connection_made() in state {self.state.value}")
        self._now = now
        self._out.clear()
        self._link = _Link()
        self._held.clear()
        self.generation += 1
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

    def connection_lost(self, *, broker_closed: bool = False) -> list[Event]:
        """The link is gone. Publishes stay for the next link; requests are aborted.

        ``broker_closed``: the broker closed the connection (not us, not a transport error).
        A link the broker ended after its CONNACK feeds the poison-message breaker
        (:mod:`.poison`), whose verdict comes back as events.
        """
        events: list[Event] = []
        link = self._link
        if link.connacked and (broker_closed or link.broker_reason is not None):
            events += link_ended_by_broker(
                self.outgoing,
                self.subscriptions,
                self._requests.values(),
                link.broker_reason,
                self.stats,
            )
        self.state = SessionState.DISCONNECTED
        self._out.clear()
        self._link = _Link()
        self._held.clear()  # the broker redelivers them (a resumed session) or they are gone
        self.outgoing.resend.clear()
        if self.liveness is not None:
            self.liveness.link_ended()
        for request in self._requests.values():
            if request.handle is not None:
                events.append(RequestAborted(request.handle))
        self._requests.clear()
        self._check_waiters(events)
        return events

    def ack(self, packet_id: int, generation: int) -> bool:
        """A received QoS 1/2 message (``packet_id`` on link ``generation``) is done with: queue
        the acknowledgements now due, in arrival order. False when nothing was queued (another
        link's message, or one before it is still being handled)."""
        if generation != self.generation or self.state is not SessionState.CONNECTED:
            return False
        due = self._held.finish(packet_id)
        for pid, qos in due:
            if qos == 1:
                self._out.append(PubAckPacket(pid).write())
            else:
                self._incoming_qos2.add(pid)
                self._out.append(PubRecPacket(pid).write())
        return bool(due)

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
        for item in self.outgoing.take_all():
            handles.append(item.handle)
            if item.seq is not None:
                kept += 1
                continue
            lost += 1
            if item.offline:  # the outbox's: counted as its drops (the rest was in flight)
                self.outgoing.dropped += 1
        self.outgoing.detach()
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
        handles.extend(r.handle for r in self._requests.values())
        handles.extend(w.handle for w in self._waiters)
        self._requests.clear()
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
        return data

    def restart(self) -> None:
        """A new life after :meth:`abandon` (``connect()`` after ``shutdown()``): the next link
        starts as the first one did (``clean_start``, a full restore, "ready")."""
        self._connected_once = False
        self.subscriptions.forget_broker()

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
            log.warning(
                "%s: link to the broker is stale (%s); reconnecting",
                self.client_id,
                why,
                extra={"client_id": self.client_id},
            )
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

    def _become_ready(self, events: list[Event]) -> None:
        link = self._link
        link.ready = True
        if self._announce is not None:
            topic, payload = self._announce(link.first)
            self.publish(topic, payload, 1, True)
        events.append(Ready(link.session_present, link.first, link.refused))
