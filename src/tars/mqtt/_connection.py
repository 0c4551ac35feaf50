"""The asyncio link under the client: one transport feeding one :class:`~._session.Session`.

This layer only moves bytes and keeps time. It knows nothing of envelopes, handlers or
reconnection policy. What it adds over the session:

- Writes are coalesced per event-loop turn: calls queue bytes in the session and one
  ``transport.write`` per turn sends them (acks for received data go out at the end of the same
  ``data_received`` call).
- Reads are parsed in bulk: a ``data_received`` chunk goes to the session whole.
- Every QoS 1/2 publish awaited by its caller gets one future, resolved by the broker's ack; a
  publish nobody waits for gets none (``wait=False``: only counters), and QoS 0 gets nothing.
- Transport errors become the library's own errors at this boundary (``ConnectError``,
  ``ConnectionLostError``).

A :class:`Connection` is also what :attr:`MQTTClient.client <tars.mqtt.MQTTClient.client>`
returns: protocol-level access (MQTT 5 properties, subscription options) for what the client
does not wrap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mqtt5 import PublishPacket, QoS, TopicFilter

from ._errors import (
    ClientStateError,
    ConnectError,
    ConnectionLostError,
    MQTTError,
    ProtocolError,
    PublishError,
)
from ._session import (
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    PublishDone,
    RequestAborted,
    Session,
    SessionState,
    Subscribed,
    Unsubscribed,
)
from ._tls import is_certificate_failure

__all__ = ["Connection", "Connector", "MessageListener", "open_connection"]

log = logging.getLogger("tars.mqtt.connection")

MessageListener = Callable[[PublishPacket], None]
"""Called synchronously for every PUBLISH received, in order, on the event loop."""

Connector = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple[Any, Any]]]
"""``async (protocol_factory) -> (transport, protocol)``: opens a link some other way than TCP
(the in-memory broker of :mod:`tars.mqtt.testing`, a Unix socket, a websocket adapter...)."""

_DEFAULT_UNACKED_LIMIT: Final = 1000
# Packets queued in one loop turn before they are written at once instead of at its end.
_FLUSH_BACKLOG: Final = 64


class Connection(asyncio.Protocol):
    """One network link of a session: the protocol-level connection under the client.

    Obtain one from :func:`open_connection` (the client does it for you). Methods raise
    :class:`~tars.mqtt.ConnectionLostError` once the link is gone, and publishes raise
    :class:`~tars.mqtt.PublishError` when the broker refuses them; :meth:`subscribe` and
    :meth:`unsubscribe` return the broker's reason codes as they are (the caller decides).
    """

    def __init__(
        self,
        session: Session,
        listeners: list[MessageListener],
        *,
        on_publish_done: Callable[[PublishDone], None] | None = None,
        unacked_limit: int = _DEFAULT_UNACKED_LIMIT,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = session
        self._listeners = listeners
        self._on_publish_done = on_publish_done
        self._transport: asyncio.Transport | None = None
        self._connected: asyncio.Future[Connected] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_reason: BaseException | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._closing_by_us = False  # disconnect()/abort(): an end without a close_reason
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._unacked_limit = unacked_limit
        self._capacity_waiters: list[asyncio.Future[None]] = []
        self._read_pause_count = 0
        self._owns_session = False
        self._broker_disconnect_reason: int | None = None
        self._server_reference: str | None = None

    def __repr__(self) -> str:
        return f"<Connection client_id={self._session.client_id!r} state={self.state}>"

    # --- public, protocol-level API ---------------------------------------------------------

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
    def client_id(self) -> str:
        """The client id in use (the broker's assigned one when we sent an empty id)."""
        return self._session.client_id

    @property
    def connack(self) -> Any:
        """The broker's CONNACK (``mqtt5.ConnAckPacket``): its limits and features."""
        return self._session.connack

    @property
    def broker_disconnect_reason(self) -> int | None:
        """The reason code of the broker's DISCONNECT, when the broker ended the link so."""
        return self._broker_disconnect_reason

    @property
    def server_reference(self) -> str | None:
        """The MQTT 5 Server Reference the broker sent with its DISCONNECT (go there instead)."""
        return self._server_reference

    @property
    def close_reason(self) -> BaseException | None:
        """Why the link ended (None while open or after a clean close by us)."""
        return self._close_reason

    async def wait_closed(self) -> None:
        """Wait until the link has ended, for whatever reason."""
        await asyncio.shield(self._closed)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
        **properties: Any,
    ) -> int:
        """Publish with any MQTT 5 PUBLISH property of ``mqtt5.PublishPacket`` (``content_type``,
        ``message_expiry_interval``, ``user_properties``, ``response_topic``, ...).

        Returns the broker's reason code (0 for QoS 0 or ``wait=False``). No topic or size
        validation happens here beyond the codec's and the broker's limits.
        """
        fut = self.publish_nowait(
            topic, payload, qos=qos, retain=retain, wait=wait, properties=properties or None
        )
        if self._write_paused:
            await self.drain()
        if fut is None:
            return 0
        return await fut

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
        properties: dict[str, Any] | None = None,
    ) -> asyncio.Future[int] | None:
        """Hand a publish to the session now; for QoS 1/2 with ``wait`` return its ack future."""
        if not self.is_connected:
            raise ConnectionLostError("the link to the broker is not up")
        session = self._session
        fut: asyncio.Future[int] | None = None
        if qos and wait:
            fut = self._loop.create_future()
        session.publish(topic, payload, qos, retain, handle=fut, properties=properties)
        if session.output_backlog >= _FLUSH_BACKLOG:
            # A producer that never yields must still reach the socket, so that the
            # transport's high-water mark (pause_writing -> drain) can push back on it.
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        return fut

    @property
    def write_paused(self) -> bool:
        """True while the transport's buffer is over its high-water mark (see :meth:`drain`)."""
        return self._write_paused

    @property
    def at_capacity(self) -> bool:
        """True while the session owes ``unacked_limit`` or more QoS 1/2 outcomes."""
        return self._session.unfinished_count >= self._unacked_limit

    async def wait_for_capacity(self) -> None:
        """Wait while the session owes more than ``unacked_limit`` QoS 1/2 outcomes.

        This bounds the memory of publishes nobody awaits (``wait=False``) when the broker is
        slower than the producer: the producer is slowed down instead.
        """
        while self._session.unfinished_count >= self._unacked_limit:
            if self._closed.done():
                raise ConnectionLostError("the link to the broker was lost")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._capacity_waiters.append(waiter)
            await waiter

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        while self._write_paused:
            if self._closed.done():
                raise ConnectionLostError("the link to the broker was lost")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def subscribe(
        self,
        *filters: TopicFilter | str,
        qos: int = 2,
        subscription_id: int | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> tuple[int, ...]:
        """Send one SUBSCRIBE and return the SUBACK reason codes (granted QoS or failure)."""
        topic_filters = [
            f if isinstance(f, TopicFilter) else TopicFilter(f, max_qos=QoS(qos)) for f in filters
        ]
        fut: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        self._request(
            lambda: self._session.subscribe(
                topic_filters,
                handle=fut,
                subscription_id=subscription_id,
                user_properties=user_properties,
            )
        )
        return await fut

    async def unsubscribe(
        self, *patterns: str, user_properties: list[tuple[str, str]] | None = None
    ) -> tuple[int, ...]:
        """Send one UNSUBSCRIBE and return the UNSUBACK reason codes."""
        fut: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        self._request(
            lambda: self._session.unsubscribe(
                list(patterns), handle=fut, user_properties=user_properties
            )
        )
        return await fut

    async def disconnect(self, reason_code: int = 0, *, timeout: float = 5.0) -> None:
        """Send DISCONNECT and close the link, waiting (bounded) for the transport to close."""
        if self._closed.done():
            return
        self._closing_by_us = True
        self._session.disconnect(reason_code)
        self._flush()
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
        if self._transport is not None and not self._closed.done():
            self._transport.abort()
        elif self._transport is None and not self._closed.done():
            self._mark_closed()

    def pause_reading(self) -> None:
        """Stop reading from the link (backpressure); calls nest: each needs a resume."""
        self._read_pause_count += 1
        if self._read_pause_count == 1 and self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Undo one :meth:`pause_reading`."""
        if self._read_pause_count == 0:
            return
        self._read_pause_count -= 1
        transport = self._transport
        if self._read_pause_count == 0 and transport is not None and not transport.is_closing():
            transport.resume_reading()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: the transport is up; set TCP_NODELAY and send CONNECT."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle would hold small packets (acks, QoS 1 round trips) for up to 40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._session.connection_made(self._loop.time())
        self._owns_session = True
        self._flush()

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the broker; events dispatched, acks written at once."""
        session = self._session
        events = session.receive_data(data, self._loop.time())
        if events:
            self._process(events)
        if session.output_backlog:
            self._flush()
        # A PINGRESP moves the next deadline earlier than the timer armed for the ping's.
        deadline, armed = session.next_deadline(), self._timer_deadline
        if deadline is not None and armed is not None and deadline < armed:
            self._arm_timer()

    def eof_received(self) -> bool | None:
        """asyncio: the broker closed its side; close ours (connection_lost follows)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the transport is gone; the session keeps its in-flight state."""
        if self._close_reason is None:
            if exc is not None:
                self._close_reason = ConnectionLostError(f"link lost: {exc}")
                self._close_reason.__cause__ = exc
            elif not self._closing_by_us:
                self._close_reason = ConnectionLostError("the broker closed the link")
        self._release_session()
        self._mark_closed()

    def pause_writing(self) -> None:
        """asyncio: the write buffer is over its high-water mark; publishers will drain()."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """asyncio: the write buffer drained; wake the publishers waiting in drain()."""
        self._write_paused = False
        self._wake(self._drain_waiters)

    # --- internals --------------------------------------------------------------------------

    def _release_session(self) -> None:
        """End this link's use of the session, exactly once (abort and loss may both call)."""
        if self._owns_session:
            self._owns_session = False
            self._process(self._session.connection_lost())

    def _request(self, call: Callable[[], int]) -> None:
        if not self.is_connected:
            raise ConnectionLostError("the link to the broker is not up")
        call()
        self._flush()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            # Called directly (an ack, a request): the turn's scheduled flush has nothing left.
            self._flush_handle.cancel()
            self._flush_handle = None
        data = self._session.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _mark_closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        error = self._close_reason or ConnectionLostError("the link to the broker was closed")
        if not self._connected.done():
            err = error if isinstance(error, MQTTError) else ConnectError(str(error))
            if not isinstance(err, ConnectError):
                err = ConnectError(
                    f"link closed before CONNACK: {error}", fatal=is_certificate_failure(error)
                )
                err.__cause__ = error
            self._connected.set_exception(err)
            self._connected.exception()  # retrieved: nobody may be waiting any more
        if not self._closed.done():
            self._closed.set_result(None)
        self._fail_waiters(self._drain_waiters, error)
        self._fail_waiters(self._capacity_waiters, error)

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
        events = self._session.handle_timeout(self._loop.time())
        if events:
            self._process(events)
        self._flush()
        if not self._closed.done():
            self._arm_timer()

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
            elif kind is PublishDone:
                assert isinstance(event, PublishDone)
                self._publish_done(event)
            elif kind is Subscribed or kind is Unsubscribed:
                assert isinstance(event, Subscribed | Unsubscribed)
                fut = event.handle
                if isinstance(fut, asyncio.Future) and not fut.done():
                    fut.set_result(event.reason_codes)
            elif kind is RequestAborted:
                assert isinstance(event, RequestAborted)
                fut = event.handle
                if isinstance(fut, asyncio.Future) and not fut.done():
                    fut.set_exception(ConnectionLostError("link lost before the broker answered"))
            elif kind is Connected:
                assert isinstance(event, Connected)
                if not self._connected.done():
                    self._connected.set_result(event)
                self._arm_timer()
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

    def _publish_done(self, event: PublishDone) -> None:
        fut = event.handle
        if isinstance(fut, asyncio.Future) and not fut.done():
            if event.reason_code >= 0x80:
                fut.set_exception(
                    PublishError(
                        f"broker refused the publish: reason code {event.reason_code:#x}",
                        event.reason_code,
                    )
                )
            else:
                fut.set_result(event.reason_code)
        if self._on_publish_done is not None:
            self._on_publish_done(event)
        waiters = self._capacity_waiters
        if waiters and self._session.unfinished_count < self._unacked_limit:
            self._wake(waiters)

    def _on_disconnected(self, event: Disconnected) -> None:
        if event.by_peer:
            self._broker_disconnect_reason = event.reason_code
            self._server_reference = event.server_reference
            text = f"broker closed the connection: reason code {event.reason_code:#x}"
            if event.reason_string:
                text += f" ({event.reason_string})"
            if event.server_reference:
                text += f"; it refers us to {event.server_reference!r}"
            self._close_reason = ConnectionLostError(text)
        else:
            error = event.error or ProtocolError(event.reason_string or "protocol error")
            self._close_reason = error
            log.warning("closing the link to the broker: %s", error)
        if event.reason_code == 0x8D:  # keep-alive timeout: the link is presumed dead
            self.abort()
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        waiters.clear()

    @staticmethod
    def _fail_waiters(waiters: list[asyncio.Future[None]], error: BaseException) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionLostError(str(error)))
        waiters.clear()

    def _give_up(self) -> None:
        """A failed attempt: drop the transport and leave the session ready for the next one."""
        self.abort()
        self._release_session()
        self._mark_closed()

    async def _wait_connected(self) -> Connected:
        return await self._connected


async def open_connection(
    session: Session,
    host: str,
    port: int,
    *,
    listeners: list[MessageListener],
    ssl_context: ssl.SSLContext | None = None,
    connector: Connector | None = None,
    timeout: float = 10.0,
    on_publish_done: Callable[[PublishDone], None] | None = None,
    unacked_limit: int = _DEFAULT_UNACKED_LIMIT,
    display: str | None = None,
) -> Connection:
    """Open a link (TCP, TLS, or ``connector``), send CONNECT and wait for CONNACK.

    Raises :class:`~tars.mqtt.ConnectError` (``refused`` set when nothing listens) on any
    failure, within ``timeout`` seconds; no transport is left open then. Raises
    :class:`~tars.mqtt.ClientStateError` at once when ``session`` still has a link.
    """
    if session.state is not SessionState.DISCONNECTED:
        # Caught here: inside connection_made it would only be logged, and we would wait for
        # a CONNACK that never comes.
        raise ClientStateError(f"the session already has a link ({session.state.value})")
    loop = asyncio.get_running_loop()
    where = display or f"{host}:{port}"
    conn = Connection(
        session, listeners, on_publish_done=on_publish_done, unacked_limit=unacked_limit
    )
    try:
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
            await conn._wait_connected()
    except TimeoutError:
        conn._give_up()
        raise ConnectError(f"no CONNACK from {where} within {timeout:g} s") from None
    except ConnectionRefusedError as exc:
        conn._give_up()
        raise ConnectError(f"connection to {where} refused", refused=True) from exc
    except (OSError, ssl.SSLError) as exc:
        conn._give_up()
        fatal = is_certificate_failure(exc)  # the same certificate again: no retry helps
        raise ConnectError(f"cannot connect to {where}: {exc}", fatal=fatal) from exc
    except MQTTError:
        conn._give_up()
        raise
    except Exception as exc:
        # Anything else the resolver or transport raises (an IDNA UnicodeError for a host
        # label over 63 characters, a connector's own error...) is still a failed attempt.
        conn._give_up()
        raise ConnectError(f"cannot connect to {where}: {exc!r}") from exc
    except BaseException:
        conn._give_up()
        raise
    return conn
