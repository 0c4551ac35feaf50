"""The asyncio link under the client: one transport feeding the one :class:`~._session.Session`.

This layer only moves bytes and keeps time; every decision is the session's. It:

- writes what the session queued, coalesced per event-loop turn (:meth:`Connection.flush_soon`),
  and at once after reading (acks go out at the end of the same ``data_received``);
- feeds each received chunk to the session whole;
- runs one timer, for the session's :meth:`~._session.Session.next_deadline` (keep-alive,
  heartbeat, watchdog, ack timeout);
- turns the session's events into future results (:func:`settle`), listener calls (messages,
  a filter given up) and link closes;
- maps transport exceptions to the library's own at one boundary (:func:`map_exceptions`).

It knows nothing of envelopes, handlers or reconnection: the supervisor opens and replaces
links; the client publishes into the session and asks the supervisor to flush.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from mqtt5 import PublishPacket

from .._core.events import (
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    FilterGivenUp,
    PublishDone,
    Ready,
)
from .._core.session import Session, SessionState
from .._errors import (
    ClientStateError,
    ConnectError,
    ConnectionLostError,
    MQTTError,
    ProtocolError,
)
from .._tls import is_certificate_failure
from .._trouble import MQTT311_CLOSE_HINT
from .boundary import map_exceptions, settle

__all__ = [
    "Connection",
    "Connector",
    "FilterListener",
    "MessageListener",
    "map_exceptions",
    "open_connection",
    "settle",
]

log = logging.getLogger("tars.mqtt.connection")

MessageListener = Callable[[PublishPacket], None]
"""Called synchronously for every PUBLISH received, in order, on the event loop."""

FilterListener = Callable[[str, MQTTError], None]
"""``(topic_filter, error)``: the session gave up a subscription filter (the poison-message
breaker, :class:`~.._core.events.FilterGivenUp`); its subscriptions end with ``error``."""

Connector = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple[Any, Any]]]
"""``async (protocol_factory) -> (transport, protocol)``: opens a link some other way than TCP
(the in-memory broker of :mod:`tars.mqtt.testing`, a Unix socket, a websocket adapter...)."""

# Packets queued in one loop turn before they are written at once instead of at its end.
_FLUSH_BACKLOG: Final = 64


class Connection(asyncio.Protocol):
    """One network link of the session. Obtain one from :func:`open_connection`."""

    def __init__(
        self,
        session: Session,
        listeners: list[MessageListener],
        filter_listener: FilterListener | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = session
        self._listeners = listeners
        self._filter_listener = filter_listener
        self._transport: asyncio.Transport | None = None
        self._connected: asyncio.Future[Connected] = self._loop.create_future()
        self._ready: asyncio.Future[Ready] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_reason: BaseException | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._closing_by_us = False  # disconnect()/abort(): an end without a close_reason
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._read_pause_count = 0
        self._owns_session = False
        self.broker_disconnect_reason: int | None = None  # the broker's DISCONNECT, if it sent one
        self.server_reference: str | None = None  # where its DISCONNECT told us to go instead
        self.stale = False  # the liveness checks ended it

    def __repr__(self) -> str:
        return f"<Connection client_id={self._session.client_id!r} state={self.state}>"

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``connecting``, ``connected``, ``closing`` or ``closed``."""
        if self._closed.done():
            return "closed"
        return self._session.state.value

    @property
    def is_connected(self) -> bool:
        """True exactly while the broker's CONNACK has been received and the link is up."""
        return self._session.state is SessionState.CONNECTED and not self._closed.done()

    @property
    def close_reason(self) -> BaseException | None:
        """Why the link ended (None while open or after a clean close by us)."""
        return self._close_reason

    @property
    def write_paused(self) -> bool:
        """True while the transport's buffer is over its high-water mark (see :meth:`drain`)."""
        return self._write_paused

    async def wait_ready(self) -> Ready | None:
        """Wait for the session's ``Ready`` (restore answered); None when the link ended first."""
        await asyncio.wait((self._ready, self._closed), return_when=asyncio.FIRST_COMPLETED)
        return self._ready.result() if self._ready.done() else None

    async def wait_closed(self) -> None:
        """Wait until the link has ended, for whatever reason."""
        await asyncio.shield(self._closed)

    # --- writing ----------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Write what the session queued at the end of this loop turn (one write per turn), or
        now when a producer that never yields queued a lot: it must still reach the socket, so
        that the transport's high-water mark (``drain``) can push back on it."""
        if self._session.output_backlog >= _FLUSH_BACKLOG:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._scheduled_flush)

    def flush(self) -> None:
        """Write what the session queued now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        data = self._session.data_to_send()
        transport = self._transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
        # A publish may have armed the ack timeout: a deadline earlier than the timer's.
        armed = self._timer_deadline
        if armed is not None:
            deadline = self._session.next_deadline()
            if deadline is not None and deadline < armed:
                self._arm_timer()
        elif self._timer is None and self._connected.done() and not self._closed.done():
            self._arm_timer()

    def _scheduled_flush(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            self._callback_failed("flush", exc)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        while self._write_paused:
            if self._closed.done():
                raise ConnectionLostError("the link to the broker was lost")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    # --- ending -----------------------------------------------------------------------------

    async def disconnect(self, reason_code: int = 0, *, timeout: float = 5.0) -> None:
        """Send DISCONNECT and close the link, waiting (bounded) for the transport to close."""
        if self._closed.done():
            return
        self._closing_by_us = True
        self._session.disconnect(reason_code)
        self.flush()
        if self._transport is not None:
            self._transport.close()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the link at once (no DISCONNECT: the broker sends our will)."""
        if reason is not None and self._close_reason is None:
            self._close_reason = reason
        self._closing_by_us = True
        if self._closed.done():
            return
        if self._transport is not None:
            self._transport.abort()
        # Now, not when asyncio calls connection_lost: the session is free for a next link
        # (a connect() right after shutdown()) at once.
        self._release_session()
        if self._transport is None:
            self._mark_closed()

    def pause_reading(self) -> None:
        """Stop reading from the link (backpressure); calls nest: each needs a resume."""
        self._read_pause_count += 1
        if self._read_pause_count == 1:
            self._session.reading_paused()
            if self._transport is not None:
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Undo one :meth:`pause_reading`."""
        if self._read_pause_count == 0:
            return
        self._read_pause_count -= 1
        if self._read_pause_count:
            return
        self._session.reading_resumed(self._loop.time())
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        if not self._closed.done():
            self._arm_timer()

    # --- asyncio.Protocol -------------------------------------------------------------------

    # Any conforming event loop calls these (stock asyncio, uvloop...): they rely only on what
    # asyncio promises a streaming Protocol, never on a concrete transport class (uvloop's
    # TCPTransport is not a subclass of asyncio.Transport). An exception raised in one of them
    # would go to the loop's exception handler and leave the link half-open until the connect
    # timeout said "no CONNACK": each one is caught and ends the link with an error naming it
    # (_callback_failed). A try block costs nothing in 3.11 while nothing is raised.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: the transport is up; set TCP_NODELAY and send CONNECT."""
        # A Protocol's transport is a stream transport (write, pause_reading...) by asyncio's
        # contract, whatever its class: a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)
        try:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # Nagle would hold small packets (acks, QoS 1 round trips) for up to 40 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._session.connection_made(self._loop.time())
            self._owns_session = True
            self.flush()
        except Exception as exc:
            self._callback_failed("connection_made", exc)

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the broker; events dispatched, acks written at once."""
        try:
            events = self._session.receive_data(data, self._loop.time())
            if events:
                self._process(events)
            self.flush()
        except Exception as exc:
            self._callback_failed("data_received", exc)

    def eof_received(self) -> bool | None:
        """asyncio: the broker closed its side; close ours (connection_lost follows)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the transport is gone; the session keeps what outlives the link."""
        if self._close_reason is None:
            if exc is not None:
                self._close_reason = ConnectionLostError(f"link lost: {exc}")
                self._close_reason.__cause__ = exc
            elif not self._closing_by_us:
                self._close_reason = ConnectionLostError("the broker closed the link")
        try:
            self._release_session(broker_closed=exc is None and not self._closing_by_us)
        except Exception as error:
            self._callback_failed("connection_lost", error)
        finally:
            self._mark_closed()

    def pause_writing(self) -> None:
        """asyncio: the write buffer is over its high-water mark; publishers will drain()."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """asyncio: the write buffer drained; wake the publishers waiting in drain()."""
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # --- internals --------------------------------------------------------------------------

    def _callback_failed(self, callback: str, exc: Exception) -> None:
        """A bug (ours, or a platform surprise) raised in a protocol or timer callback: log it
        with its traceback and end the link with an error that names it, so a connect attempt
        fails with it at once (``ConnectError``, retried like any failed attempt) and a ready
        link is lost with it (``ConnectionLostError``), instead of hanging."""
        log.error(
            "%s: the link's %s callback raised %r; dropping the link",
            self._session.client_id,
            callback,
            exc,
            exc_info=exc,
        )
        text = f"the link's {callback} callback raised {exc!r}"
        error: MQTTError = (
            ConnectionLostError(text) if self._connected.done() else ConnectError(text)
        )
        error.__cause__ = exc
        if self._close_reason is None:
            self._close_reason = error
        if self._closed.done():
            return
        try:
            self.abort(error)
        finally:
            # abort() may itself have failed half-way (the same bug): the attempt still ends.
            self._mark_closed()

    def _require_connected(self) -> None:
        if not self.is_connected:
            raise ConnectionLostError("the link to the broker is not up")

    def _release_session(self, *, broker_closed: bool = False) -> None:
        """End this link's use of the session, exactly once (abort and loss may both call)."""
        if self._owns_session:
            self._owns_session = False
            self._process(
                self._session.connection_lost(now=self._loop.time(), broker_closed=broker_closed)
            )

    def _mark_closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        error = self._close_reason or ConnectionLostError("the link to the broker was closed")
        if not self._connected.done():
            err = error if isinstance(error, ConnectError) else None
            if err is None:
                # The broker refusing our client certificate arrives here, as a lost link.
                fatal = is_certificate_failure(error)
                # Our MQTT 5 CONNECT went out and the broker hung up: a 3.1.1-only broker does.
                hint = "" if fatal or self._session.protocol_level != 5 else MQTT311_CLOSE_HINT
                err = ConnectError(f"link closed before CONNACK: {error}{hint}", fatal=fatal)
                err.__cause__ = error
            self._connected.set_exception(err)
            self._connected.exception()  # retrieved: nobody may be waiting any more
        if not self._closed.done():
            self._closed.set_result(None)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionLostError(str(error)))
        self._drain_waiters.clear()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._timer_deadline = self._session.next_deadline()
        if deadline is not None and not self._closed.done():
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        try:
            events = self._session.handle_timeout(self._loop.time())
            if events:
                self._process(events)
            self.flush()
            if not self._closed.done():
                self._arm_timer()
        except Exception as exc:
            self._callback_failed("timer", exc)

    def _process(self, events: list[Event]) -> None:
        listeners = self._listeners
        for event in events:
            kind = type(event)
            if kind is PublishPacket:
                assert isinstance(event, PublishPacket)
                for listener in listeners:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("message listener failed on topic %r", event.topic)
            elif kind is PublishDone:  # one per PUBACK: only a waiting publisher is told
                assert isinstance(event, PublishDone)
                if event.handle is not None:
                    settle((event,))
            elif kind is Connected:
                assert isinstance(event, Connected)
                if not self._connected.done():
                    self._connected.set_result(event)
                self._arm_timer()
            elif kind is Ready:
                assert isinstance(event, Ready)
                if not self._ready.done():
                    self._ready.set_result(event)
            elif kind is ConnectFailed:
                assert isinstance(event, ConnectFailed)
                self._close_reason = ConnectError(
                    f"broker refused the connection: reason code {event.reason_code:#x}"
                    + (f" ({event.reason_string})" if event.reason_string else "")
                    + (
                        f"; it refers us to {event.server_reference!r}"
                        if event.server_reference
                        else ""
                    ),
                    event.reason_code,
                    server_reference=event.server_reference,
                )
                self._close_transport()
            elif kind is Disconnected:
                assert isinstance(event, Disconnected)
                self._on_disconnected(event)
            elif kind is FilterGivenUp:
                assert isinstance(event, FilterGivenUp)
                # The subscriptions first: they end (error set) before a subscribe() call
                # awaiting the SUBACK of that filter is woken with the same error.
                if self._filter_listener is not None:
                    try:
                        self._filter_listener(event.topic_filter, event.error)
                    except Exception:
                        log.exception("filter listener failed on %r", event.topic_filter)
                settle((event,))
            else:
                settle((event,))

    def _on_disconnected(self, event: Disconnected) -> None:
        if event.by_peer:
            self.broker_disconnect_reason = event.reason_code
            self.server_reference = event.server_reference
            text = f"broker closed the connection: reason code {event.reason_code:#x}"
            if event.reason_string:
                text += f" ({event.reason_string})"
            if event.server_reference:
                text += f"; it refers us to {event.server_reference!r}"
            self._close_reason = ConnectionLostError(text, event.reason_code)
        else:
            self._closing_by_us = True  # our verdict, not the broker's (the breaker's input)
            error = event.error or ProtocolError(event.reason_string or "protocol error")
            self._close_reason = error
            self.stale = event.stale
            if not event.stale:  # the session logged the stale verdict itself
                log.warning("closing the link to the broker: %s", error)
        if event.abort:  # a dead or stale link: no DISCONNECT, so the broker sends our will
            self.abort()
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        self.flush()
        if self._transport is not None:
            self._transport.close()

    def _give_up(self) -> None:
        """A failed attempt: drop the transport and leave the session ready for the next one."""
        self._closing_by_us = True
        if self._transport is not None:
            self._transport.abort()
        self._release_session()
        self._mark_closed()


async def open_connection(
    session: Session,
    host: str,
    port: int,
    *,
    listeners: list[MessageListener],
    filter_listener: FilterListener | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connector: Connector | None = None,
    timeout: float = 10.0,
    display: str | None = None,
) -> Connection:
    """Open a link (TCP, TLS, or ``connector``), send CONNECT and wait for CONNACK.
    ``listeners`` hear every PUBLISH received; ``filter_listener``, a filter given up.

    Raises :class:`~tars.mqtt.ConnectError` (``refused`` set when nothing listens) on any
    failure, within ``timeout`` seconds; no transport is left open then. Raises
    :class:`~tars.mqtt.ClientStateError` at once when ``session`` still has a link.
    """
    if session.state is not SessionState.DISCONNECTED:
        # Caught here: inside connection_made it would only be logged, and we would wait for
        # a CONNACK that never comes.
        raise ClientStateError(f"the session already has a link ({session.state.value})")
    loop = asyncio.get_running_loop()
    conn = Connection(session, listeners, filter_listener)
    try:
        with map_exceptions(
            display or f"{host}:{port}", timeout, lambda: conn._transport is not None
        ):
            async with asyncio.timeout(timeout):
                if connector is not None:
                    await connector(lambda: conn)
                else:
                    await loop.create_connection(
                        lambda: conn,
                        host,
                        port,
                        ssl=ssl_context,
                        server_hostname=host if ssl_context is not None else None,
                    )
                await conn._connected
    except BaseException:
        conn._give_up()
        raise
    return conn
