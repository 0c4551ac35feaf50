"""MQTT over WebSockets: the link variant for ``ws://`` and ``wss://`` brokers.

A :class:`WebSocketLink` sits between a TCP (or TLS) transport and the
:class:`~.connection.Connection`, which does not know it is there: to the transport below it is
an ``asyncio.Protocol``; to the connection above it is an ``asyncio.Transport`` with the calls
the connection uses (``write``, ``pause_reading``/``resume_reading``, ``close``, ``abort``,
``get_extra_info``, the write flow control). It does the HTTP upgrade, then carries MQTT bytes
in binary frames both ways. The WebSocket protocol itself (handshake, framing, masking, ping
and pong, the closing handshake) is websockets' sans-I/O ``Protocol``; this module only moves
its bytes and events, as the connection does for the MQTT session.

What MQTT 5 (section 6) asks, and how it is met here:

- the ``mqtt`` subprotocol is offered in the upgrade request;
- MQTT packets travel in binary frames; a packet may span frames and a frame may hold several
  packets: frames are only a transport, the session's reader reassembles the byte stream (a
  read's frames are handed up as one chunk);
- any other data frame (text) closes the link.

A refused upgrade becomes a :class:`~tars.mqtt.ConnectError` naming the HTTP status (and the
path, for a 404); a status no retry can change (401, 403, 404 and the other 4xx but 408 and
429) is ``fatal``, so ``connect()`` fails at once instead of retrying for ever, as it does for
bad credentials.

Secrets: the extra headers (``ws_headers``, often a token) and every frame (a CONNECT holds the
password) are never logged: websockets logs each header and frame at DEBUG, so its protocol
objects get a logger that never has DEBUG enabled.

Importing this module imports websockets, so the client imports it only for a WebSocket URL
(start-up stays fast for the others); without the ``ws`` extra that import is a
:class:`~tars.mqtt.ConfigError` naming it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from .._errors import ConfigError, ConnectError, ConnectionLostError
from .._url import ConnectionParams
from .connection import Connector

try:
    from websockets.client import ClientProtocol
    from websockets.exceptions import InvalidStatus
    from websockets.frames import CloseCode, Frame, Opcode
    from websockets.http11 import Request, Response
    from websockets.protocol import OPEN, Protocol
    from websockets.typing import Subprotocol
    from websockets.uri import WebSocketURI
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ConfigError(
        "mqtt_url",
        "ws:// and wss:// URLs need the 'ws' extra (the websockets package): "
        "pip install 'websockets>=17'",
    ) from exc

__all__ = ["SUBPROTOCOL", "WebSocketLink", "quiet_logger", "refusal", "websocket_connector"]

SUBPROTOCOL: Final = Subprotocol("mqtt")
"""The WebSocket subprotocol of MQTT (MQTT 5, section 6)."""


class _NoDebug(logging.LoggerAdapter[logging.Logger]):
    """A logger whose DEBUG is always off: websockets' debug lines show headers and frames."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def quiet_logger(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """The logger given to websockets' protocol objects: INFO and above only, never DEBUG."""
    return _NoDebug(logging.getLogger(name), {})


_CLIENT_LOG: Final = quiet_logger("tars.mqtt.websocket")


class WebSocketLink(asyncio.Protocol, asyncio.Transport):
    """One WebSocket link: a protocol to the transport below, a transport to ``inner`` above.

    ``ws`` is websockets' sans-I/O client or server protocol, in its CONNECTING state. The
    subclass's :meth:`_start` begins the upgrade and :meth:`_handshake` ends it; once it
    succeeded, ``inner.connection_made(self)`` is called and the link carries MQTT bytes.
    """

    _log: logging.Logger = logging.getLogger("tars.mqtt.websocket")
    """Where a failed callback is said (the server side of the test broker has its own)."""

    def __init__(self, ws: Protocol, inner: asyncio.Protocol) -> None:
        super().__init__()
        self._ws = ws
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._open = False  # upgraded: inner.connection_made was called
        self._closing = False
        self._lost: Exception | None = None  # why the link ended, told to inner when it has
        self._peer = "the WebSocket peer"  # host:port once connection_made read it (_where)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """The upgrade's outcome: a :class:`ConnectError` when it was refused or cut."""

    # --- the transport below ---------------------------------------------------------------

    # As in the MQTT connection: an exception raised in one of these callbacks (a bug of ours
    # or websockets', a platform surprise) would go to the loop's exception handler and leave
    # the link half-open: the upgrade never settles, and the user sees only a connect timeout;
    # a server-side link stays stuck. Each one is caught and ends the link with an error that
    # names it (_callback_failed).

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: TCP (and TLS) is up; begin the upgrade."""
        # A cast, not an isinstance check: any conforming loop's transport (uvloop's is not an
        # asyncio.Transport subclass) has the calls used here.
        self._transport = cast(asyncio.Transport, transport)
        self._peer = _peer_name(transport, self._peer)
        try:
            self._start()
            self._send()
        except Exception as exc:
            self._callback_failed("connection_made", exc)

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the peer: the upgrade's answer, then frames."""
        try:
            self._ws.receive_data(data)
            self._process()
        except Exception as exc:
            self._callback_failed("data_received", exc)

    def eof_received(self) -> bool | None:
        """asyncio: the peer closed its side; close ours (``connection_lost`` follows)."""
        try:
            self._ws.receive_eof()
            self._process()
        except Exception as exc:
            self._callback_failed("eof_received", exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the transport is gone; tell ``inner``, or fail the upgrade."""
        try:
            if not self._open:
                self._fail(
                    ConnectError(
                        f"{self._where()}: the link closed during the WebSocket upgrade"
                        + (f" ({exc})" if exc else "")
                        + " (is it a WebSocket endpoint?)"
                    ),
                    exc,
                )
                return
            reason = exc or self._lost or self._close_reason()
        except Exception as error:
            self._callback_failed("connection_lost", error)
            if not self._open:
                return
            reason = self._lost  # set by _callback_failed: inner still learns the link is gone
        self._inner.connection_lost(reason)

    def pause_writing(self) -> None:
        """asyncio: the transport's buffer is full; so is ours."""
        if self._open:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """asyncio: the transport's buffer drained."""
        if self._open:
            self._inner.resume_writing()

    # --- the transport above (what the connection calls) -------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` (MQTT bytes) as one binary frame; dropped once the link is closing (as
        a closing socket drops writes: the session resends what matters on the next link)."""
        if self._closing or self._ws.state is not OPEN:
            return
        self._ws.send_binary(data)
        self._send()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Close the link: a WebSocket close frame (1000), then the transport."""
        if self._closing:
            return
        self._closing = True
        if self._ws.state is OPEN:
            self._ws.send_close(CloseCode.NORMAL_CLOSURE)
            self._send()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the link at once (no close frame)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def is_closing(self) -> bool:
        return self._closing or self._transport is None or self._transport.is_closing()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport is not None and self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's (``socket``, ``peername``, ``sslcontext``...), and
        ``websocket_subprotocol``: what the peer chose."""
        if name == "websocket_subprotocol":
            return self._ws.subprotocol
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._transport is not None:
            self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0) if self._transport is None else self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner

    # --- the two sides ----------------------------------------------------------------------

    def _start(self) -> None:
        """Begin the upgrade (the client sends its request; a server waits for one)."""

    def _handshake(self, event: Request | Response) -> None:
        """The upgrade's request (server) or answer (client) arrived."""
        raise NotImplementedError

    def _where(self) -> str:
        """Who is at the other end, for messages (read once: never from a failing transport)."""
        return self._peer

    # --- internals ---------------------------------------------------------------------------

    def _callback_failed(self, callback: str, exc: Exception) -> None:
        """A protocol callback raised: log it with its traceback and end the link with an
        error that names it. During the upgrade the connect fails at once with a
        :class:`ConnectError` (retried like any failed attempt); once MQTT flows, ``inner``
        loses its link with a :class:`ConnectionLostError` saying why, when the transport's
        ``connection_lost`` comes (or now, when that callback is the one that failed)."""
        where = self._where()
        text = f"the WebSocket link's {callback} callback raised {exc!r}"
        self._log.error("%s: %s; dropping the link", where, text, exc_info=exc)
        if not self._open:
            error = ConnectError(f"{where}: {text}")
            error.__cause__ = exc
            if not self.opened.done():
                self.opened.set_exception(error)
                self.opened.exception()  # retrieved: a connector cancelled meanwhile never will
        elif self._lost is None:
            self._lost = ConnectionLostError(text)
            self._lost.__cause__ = exc
        self.abort()  # a second failure here goes to the loop's handler: the link ended already

    def _upgraded(self) -> None:
        """The upgrade succeeded: from now on MQTT bytes flow."""
        self._open = True
        if not self.opened.done():
            self.opened.set_result(None)
        self._inner.connection_made(self)

    def _fail(self, error: ConnectError, cause: BaseException | None = None) -> None:
        """The upgrade failed: report it once, and drop the transport."""
        if cause is not None:
            error.__cause__ = cause
        if not self.opened.done():
            self.opened.set_exception(error)
            self.opened.exception()  # retrieved: a connector cancelled meanwhile never will
        self.abort()

    def _process(self) -> None:
        chunks: list[bytes] = []
        for event in self._ws.events_received():
            if not isinstance(event, Frame):
                self._handshake(event)
                continue
            opcode = event.opcode
            if opcode is Opcode.BINARY or opcode is Opcode.CONT:
                chunks.append(bytes(event.data))
            elif opcode is Opcode.TEXT:
                # MQTT 5, 6.0: a data frame that is not binary closes the network connection.
                self._lost = ConnectionLostError("the peer sent a text frame: MQTT needs binary")
                self._ws.fail(CloseCode.UNSUPPORTED_DATA, "MQTT travels in binary frames")
                break
        self._send()
        if chunks and self._open:
            self._inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._ws.close_expected() and self._transport is not None:
            # A close frame was sent or answered, or the protocol failed: the link is over.
            self._transport.close()

    def _send(self) -> None:
        transport = self._transport
        for data in self._ws.data_to_send():
            if transport is None or transport.is_closing():
                return
            if data:
                transport.write(data)
            else:  # the end of the stream (a server after the closing handshake): what was
                transport.close()  # written still goes out first

    def _close_reason(self) -> Exception | None:
        """Why the peer ended the link, when it said so in a close frame other than 1000, or
        the WebSocket protocol failed; None for a normal close."""
        ws = self._ws
        if ws.parser_exc is not None and not isinstance(ws.parser_exc, EOFError):
            # (EOF without a close frame is a plain lost link, as on TCP: the peer died.)
            return ConnectionLostError(f"WebSocket protocol error: {ws.parser_exc}")
        close = ws.close_rcvd
        if close is not None and close.code != CloseCode.NORMAL_CLOSURE:
            return ConnectionLostError(f"the peer closed the WebSocket: {close}")
        return None


def _peer_name(transport: asyncio.BaseTransport, default: str) -> str:
    """The transport's peer as ``host:port``, or ``default``. Read once, when the link opens,
    and guarded: :meth:`WebSocketLink._callback_failed` names the link with it, and must not
    call into a transport that may be what failed (the report would raise in its turn, into
    the loop's handler, and leave the link open)."""
    try:
        peer = transport.get_extra_info("peername")
    except Exception:
        return default
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else default


class ClientLink(WebSocketLink):
    """The client side: sends the upgrade request (path, ``mqtt`` subprotocol, extra headers)."""

    def __init__(
        self,
        params: ConnectionParams,
        inner: asyncio.Protocol,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        assert params.ws_path is not None
        path, _, query = params.ws_path.partition("?")
        uri = WebSocketURI(params.tls, params.host, params.port, path, query)
        ws = ClientProtocol(
            uri,
            subprotocols=[SUBPROTOCOL],
            # No size limit: frames are only a transport. Brokers batch packets into one frame
            # (Mosquitto and the test broker sent 4 MB frames of 64 KiB packets, measured), and
            # a packet over the session's maximum is refused by the session itself.
            max_size=None,
            logger=_CLIENT_LOG,
        )
        super().__init__(ws, inner)
        self._client = ws
        self._params = params
        self._headers = headers or {}

    def _where(self) -> str:
        return self._params.redacted_url

    def _start(self) -> None:
        request = self._client.connect()
        for name, value in self._headers.items():
            request.headers[name] = value
        self._client.send_request(request)

    def _handshake(self, event: Request | Response) -> None:
        assert isinstance(event, Response)
        failure = self._client.handshake_exc
        if failure is None:
            self._upgraded()
        elif isinstance(failure, InvalidStatus):
            self._fail(refusal(self._params, failure.response), failure)
        else:
            self._fail(
                ConnectError(f"{self._where()}: the WebSocket upgrade failed: {failure}"), failure
            )


def refusal(params: ConnectionParams, response: Response) -> ConnectError:
    """The :class:`ConnectError` of an upgrade answered by another status than 101.

    401 and 403 are fatal (like bad credentials: a token or header the server refused); so is
    any other 4xx but 408 (timeout) and 429 (too many requests), a 404 naming the path. 5xx (a
    proxy whose broker is down) are retried.
    """
    status = response.status_code
    where = params.redacted_url
    path = where[where.find("/", where.find("://") + 3) :]
    text = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status in (401, 403):
        message = (
            f"{where}: the WebSocket upgrade was refused ({text}): check the credentials the "
            "server expects in ws_headers (a token, a cookie)"
        )
    elif status == 404:
        message = (
            f"{where}: no WebSocket endpoint at the path {path!r} ({text}): check the path of "
            "the URL (brokers and proxies commonly serve MQTT on /mqtt, the default)"
        )
    else:
        message = f"{where}: the WebSocket upgrade was refused ({text})"
    fatal = 400 <= status < 500 and status not in (408, 429)
    return ConnectError(message, fatal=fatal, http_status=status)


def websocket_connector(
    params: ConnectionParams,
    ssl_context: ssl.SSLContext | None,
    headers: Mapping[str, str] | None = None,
) -> Connector:
    """A connector (as :func:`~.connection.open_connection` takes) that opens TCP (TLS for
    ``wss://``) to ``params``, upgrades it to a WebSocket, and only then hands the link to the
    connection. Raises :class:`ConnectError` when the upgrade is refused or cut; the transport
    is closed then (and when cancelled: ``connect_timeout``)."""

    async def connect(
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        inner = protocol_factory()
        link = ClientLink(params, inner, headers)
        transport, _ = await loop.create_connection(
            lambda: link,
            params.host,
            params.port,
            ssl=ssl_context,
            server_hostname=params.host if ssl_context is not None else None,
        )
        try:
            await link.opened
        except BaseException:
            transport.abort()
            raise
        return link, inner

    return connect
