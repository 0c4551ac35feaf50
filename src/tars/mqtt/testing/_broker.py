"""InMemoryBroker: an MQTT 5 broker in the test's own event loop, in memory, over TCP or over
WebSockets.

It speaks real MQTT 5 bytes through the ``mqtt5`` codec, so a client's whole stack (session,
in-flight messages, resend, keep-alive) runs unchanged against it, with no socket through
:meth:`InMemoryBroker.connector` or with one through :meth:`InMemoryBroker.serve_tcp` (and
:meth:`InMemoryBroker.serve_ws`, ``ws://`` and ``wss://``: the ``ws`` extra). It is a
development and test broker: one process, no persistence, no authorization, no TLS (but for
``wss://`` test listeners), no enhanced authentication, no topic aliases; never a production one.

Pure asyncio: no thread, and no task of its own (timers are ``call_later`` handles); after
:meth:`InMemoryBroker.close` nothing of it is left in the loop.

The pieces: ``_memory_transport`` (the socket-less link), ``_broker_link`` (the client's framing,
writes, keep-alive, wire faults), ``_broker_core`` (the MQTT rules), ``_broker_session`` and
``_broker_router`` (pure state), ``_broker_faults`` (the fault switches).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import Callable, Collection, Iterable
from types import TracebackType

from .._argcheck import (
    check_bool,
    check_callable,
    check_int,
    check_number,
    check_str,
    check_type,
)
from .._errors import ClientStateError, InvalidArgumentError
from ._broker_core import AuthCallback, BrokerCore
from ._broker_faults import Faults
from ._broker_link import BrokerLink, LinkState
from ._broker_session import SessionInfo
from ._memory_transport import memory_pipe

__all__ = ["AuthCallback", "InMemoryBroker", "SessionInfo"]

_log = logging.getLogger("tars.mqtt.testing.broker")

_CLOSE_GRACE = 1.0  # seconds a closing link gets to flush its DISCONNECT before it is aborted
_MAX_PACKET_SIZE = 268_435_455  # the largest size MQTT's remaining length can express


class BrokerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    RESTARTING = "restarting"
    CLOSED = "closed"


class InMemoryBroker:
    """A development and test MQTT 5 broker living in the current event loop.

    Where MQTT 5 leaves the broker a choice, this one:

    - sends a client whose subscriptions overlap one copy of a message per matching
      subscription, each at that subscription's QoS and with its id, as Mosquitto does;
    - gives each message of a ``$share/{group}/{filter}`` to one connected member, round robin;
    - answers a QoS 1 publish nobody subscribed to with reason code 0x10 and a QoS 2 one with
      Success, as Mosquitto 2.0 does;
    - queues QoS 1/2 (not QoS 0) messages for an absent client with a session, up to
      ``max_queued_messages``, then drops new ones (counted in :meth:`sessions`);
    - publishes a will on takeover too (MQTT 5, 3.1.4), but not on :meth:`restart` or
      :meth:`close`, where the broker, not the client, goes away.

    Args:
        name: shown in :attr:`url`, peer names and logs; tells brokers of one test apart.
        max_packet_size: the largest packet a client may send (CONNACK advertises it; a larger
            one gets DISCONNECT 0x95). None: no limit beyond MQTT's own.
        receive_maximum: how many QoS 2 publishes a client may have awaiting PUBREL
            (advertised in CONNACK; one more gets DISCONNECT 0x93).
        max_queued_messages: per session, QoS 1/2 messages kept while the client is away or
            its receive window is full; beyond it new messages for that session are dropped.
        auth: ``auth(client_id, username, password) -> bool``; False refuses the connection
            with CONNACK 0x86. None accepts everyone (username and password are ignored).
        protocols: the MQTT versions spoken, ``"5"`` and ``"3.1.1"`` (each link speaks what
            its CONNECT asks for). ``("3.1.1",)`` acts as a 3.1.1-only broker: an MQTT 5
            CONNECT gets return code 1 (unacceptable protocol version) and the link closes.

    Raises:
        InvalidArgumentTypeError: an argument of the wrong type.
        InvalidArgumentError: a limit out of its MQTT range.
    """

    def __init__(
        self,
        *,
        name: str = "memory",
        max_packet_size: int | None = None,
        receive_maximum: int = 65535,
        max_queued_messages: int = 100_000,
        auth: AuthCallback | None = None,
        protocols: Collection[str] = ("5", "3.1.1"),
    ) -> None:
        check_str("name", name)
        check_int("max_packet_size", max_packet_size, optional=True)
        check_int("receive_maximum", receive_maximum)
        check_int("max_queued_messages", max_queued_messages)
        check_callable("auth", auth, optional=True)
        check_type("protocols", protocols, Collection)
        if not protocols or not set(protocols) <= {"5", "3.1.1"}:
            raise InvalidArgumentError(f"protocols must be '5' and/or '3.1.1', not {protocols!r}")
        self._levels = frozenset(5 if p == "5" else 4 for p in protocols)
        if not 1 <= receive_maximum <= 65535:
            raise InvalidArgumentError(f"receive_maximum must be 1..65535, not {receive_maximum}")
        if max_packet_size is not None and not 16 <= max_packet_size <= _MAX_PACKET_SIZE:
            raise InvalidArgumentError(f"max_packet_size must be 16..{_MAX_PACKET_SIZE} or None")
        if max_queued_messages < 0:
            raise InvalidArgumentError("max_queued_messages must be >= 0")
        self._name = name
        self._max_packet_size = max_packet_size
        self._receive_maximum = receive_maximum
        self._max_queued = max_queued_messages
        self._auth = auth
        self._faults = Faults()
        self._state = BrokerState.CREATED
        self._core: BrokerCore | None = None
        # (server, host, port, WebSocket path or None for TCP, TLS context): what restart() reopens
        self._servers: list[_Listener] = []
        self._link_count = 0

    def __repr__(self) -> str:
        return f"<InMemoryBroker {self._name!r} {self._state.value}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start accepting connections.

        Raises:
            ClientStateError: already started or closed (a broker runs once).
        """
        if self._state is not BrokerState.CREATED:
            raise ClientStateError(f"{self!r} cannot start again")
        self._core = BrokerCore(
            asyncio.get_running_loop(),
            max_packet_size=self._max_packet_size,
            receive_maximum=self._receive_maximum,
            max_queued=self._max_queued,
            auth=self._auth,
            faults=self._faults,
            levels=self._levels,
        )
        self._set_state(BrokerState.RUNNING)

    async def close(self) -> None:
        """Stop: DISCONNECT 0x8B to every client, close listeners, cancel every timer.

        Wills are not published (the broker, not the clients, is going away). Idempotent.
        """
        if self._state is BrokerState.CLOSED:
            return
        self._set_state(BrokerState.CLOSED)
        core = self._core
        if core is None:
            return
        servers = [listener[0] for listener in self._servers if listener[0] is not None]
        for server in servers:
            server.close()
        links = list(core.links)
        for link in links:
            core.detach(link, send_will=False)
            if link.state is LinkState.CONNECTED:
                link.disconnect(0x8B)
            else:
                link.abort()
        await _wait_closed(links, _CLOSE_GRACE)
        for server in servers:
            await server.wait_closed()
        core.shutdown()

    async def __aenter__(self) -> InMemoryBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """A placeholder URL (``mqtt://{name}``) for configs; connect through :meth:`connector`."""
        return f"mqtt://{self._name}"

    @property
    def tcp_url(self) -> str | None:
        """``mqtt://host:port`` of the first :meth:`serve_tcp` listener, None before."""
        for _, host, port, ws_path, _ in self._servers:
            if ws_path is None:
                return f"mqtt://{_authority(host, port)}"
        return None

    @property
    def ws_url(self) -> str | None:
        """``ws://host:port/path`` (``wss://`` with TLS) of the first :meth:`serve_ws`
        listener, None before."""
        for _, host, port, ws_path, tls in self._servers:
            if ws_path is not None:
                return f"{'wss' if tls else 'ws'}://{_authority(host, port)}{ws_path}"
        return None

    # -- connecting ----------------------------------------------------------------------------

    async def connector(
        self, protocol_factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """Open an in-memory connection, like ``loop.create_connection`` without a socket.

        Raises:
            ConnectionRefusedError: the broker is not running (not started, restarting with
                downtime, or closed), as a TCP connect to a closed port would.
        """
        core = self._core
        if self._state is not BrokerState.RUNNING or core is None:
            raise ConnectionRefusedError(f"{self!r} is not accepting connections")
        self._link_count += 1
        number = self._link_count
        link = BrokerLink(core, f"memory-{number}")
        protocol = protocol_factory()
        client_side, broker_side = memory_pipe(
            asyncio.get_running_loop(),
            protocol,
            link,
            name_a=("memory-client", number),
            name_b=(self._name, 0),
        )
        link.connection_made(broker_side)
        protocol.connection_made(client_side)
        return client_side, protocol

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Also accept MQTT over TCP on ``host:port`` (0 picks a free port); returns the port.

        Raises:
            ClientStateError: the broker is not running.
            OSError: the address cannot be bound.
        """
        check_str("host", host)
        check_int("port", port)
        if self._state is not BrokerState.RUNNING:
            raise ClientStateError(f"{self!r} is not running")
        server = await self._listen(host, port, None, None)
        bound = server.sockets[0].getsockname()[1]
        self._servers.append((server, host, bound, None, None))
        _log.debug("%r listening on %s:%d", self, host, bound)
        return int(bound)

    async def serve_ws(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str = "/mqtt",
        ssl_context: ssl.SSLContext | None = None,
    ) -> int:
        """Also accept MQTT over WebSockets on ``host:port`` (0 picks a free port) at ``path``
        (another path gets HTTP 404), with TLS (``wss://``) when ``ssl_context`` is given (a
        server context with its certificate loaded); returns the port. See :attr:`ws_url`.

        Needs the ``ws`` extra (websockets).

        Raises:
            ClientStateError: the broker is not running.
            InvalidArgumentError: ``path`` does not start with ``/``.
            OSError: the address cannot be bound.
        """
        if self._state is not BrokerState.RUNNING:
            raise ClientStateError(f"{self!r} is not running")
        if not path.startswith("/"):
            raise InvalidArgumentError(f"path must start with '/', not {path!r}")
        server = await self._listen(host, port, path, ssl_context)
        bound = server.sockets[0].getsockname()[1]
        self._servers.append((server, host, bound, path, ssl_context))
        _log.debug("%r listening for WebSockets on %s:%d%s", self, host, bound, path)
        return int(bound)

    async def _listen(
        self, host: str, port: int, ws_path: str | None, ssl_context: ssl.SSLContext | None
    ) -> asyncio.Server:
        core = self._running_core()
        loop = asyncio.get_running_loop()
        if ws_path is None:
            return await loop.create_server(lambda: BrokerLink(core, "tcp"), host, port)
        from ._broker_ws import ServerLink  # websockets only for those who serve WebSockets

        def link() -> asyncio.Protocol:
            return ServerLink(BrokerLink(core, "ws"), ws_path)

        return await loop.create_server(link, host, port, ssl=ssl_context)

    # -- introspection -------------------------------------------------------------------------

    @property
    def connected_clients(self) -> list[str]:
        """Client ids with a CONNACK-ed connection, in connection order."""
        return [] if self._core is None else list(self._core.connected)

    def sessions(self) -> dict[str, SessionInfo]:
        """A snapshot of every session (connected or kept for an absent client)."""
        core = self._core
        if core is None:
            return {}
        return {
            client_id: session.info(tuple(core.router.subscriptions(client_id)))
            for client_id, session in core.sessions.items()
        }

    def retained(self, topic: str) -> bytes | None:
        """The payload retained on exactly ``topic``, or None."""
        check_str("topic", topic)
        core = self._core
        if core is None:
            return None
        message = core.router.retained(topic)
        if message is None or message.expired(core.now()):
            return None
        return message.payload

    def subscriptions(self, client_id: str) -> list[str]:
        """The topic filters of ``client_id``'s session as subscribed (``$share/...`` included)."""
        check_str("client_id", client_id)
        return [] if self._core is None else self._core.router.subscriptions(client_id)

    # -- faults on links -----------------------------------------------------------------------

    async def drop_link(self, client_id: str | None = None) -> None:
        """Cut ``client_id``'s connection (every connection when None), as a network failure
        would: no DISCONNECT, the will is published. Nothing happens for an absent client."""
        links = self._select(client_id)
        for link in links:
            link.abort()
        await _wait_closed(links, _CLOSE_GRACE)

    def stall(self, client_id: str | None = None) -> None:
        """Make ``client_id``'s connection (every one when None) half-open: the broker stops
        reading and writing it (a PINGREQ gets no answer) but the connection stays open, and
        keep-alive is not enforced on it. What it would have written waits for :meth:`unstall`."""
        for link in self._select(client_id):
            link.stall()

    def unstall(self, client_id: str | None = None) -> None:
        """Undo :meth:`stall`: held writes go out, reading resumes."""
        for link in self._select(client_id):
            link.unstall()

    async def restart(self, *, keep_sessions: bool = True, downtime: float = 0.0) -> None:
        """Crash and come back: every connection is cut (no DISCONNECT, no wills), then the
        broker accepts again, after ``downtime`` seconds during which connecting is refused.

        With ``keep_sessions`` the sessions (subscriptions, queued and in-flight messages) of
        clients with a session expiry survive, as do retained messages; without it everything
        is forgotten, retained messages and delayed deliveries included.

        Raises:
            ClientStateError: the broker is not running.
        """
        check_bool("keep_sessions", keep_sessions)
        check_number("downtime", downtime)
        core = self._running_core()
        self._set_state(BrokerState.RESTARTING)
        closed_servers = []
        if downtime > 0:
            closed_servers = [listener[0] for listener in self._servers if listener[0] is not None]
            for server in closed_servers:
                server.close()  # at once: a connect from now on is refused
            self._servers = [
                (None, host, port, path, tls) for _, host, port, path, tls in self._servers
            ]
        links = list(core.links)
        for link in links:
            core.detach(link, send_will=False)
            link.abort()
        await _wait_closed(links, _CLOSE_GRACE)
        if not keep_sessions:
            core.forget_everything()
        if downtime > 0:
            for server in closed_servers:
                await server.wait_closed()
            await asyncio.sleep(downtime)
            if self._state is BrokerState.RESTARTING:
                self._servers = [
                    (await self._listen(host, port, path, tls), host, port, path, tls)
                    for _, host, port, path, tls in self._servers
                ]
        if self._state is BrokerState.RESTARTING:
            self._set_state(BrokerState.RUNNING)

    def _set_state(self, state: BrokerState) -> None:
        self._state = state
        if self._core is not None:
            # TCP connections a listener still accepts meanwhile are cut at once.
            self._core.accepting = state is BrokerState.RUNNING

    # -- faults on messages --------------------------------------------------------------------

    def duplicate_next(self, topic_filter: str = "#", count: int = 1) -> None:
        """Deliver each of the next ``count`` messages on topics matching ``topic_filter`` twice,
        as two deliveries (QoS 1/2: each with its own packet id, as when a publisher resends
        after a lost PUBACK; only the receiver's dedup window recognises the second).

        Raises:
            InvalidTopicError: ``topic_filter`` is not a valid filter.
            InvalidArgumentError: ``count`` < 1.
        """
        check_int("count", count)
        self._faults.duplicate_next(topic_filter, count)

    def delay_delivery(self, seconds: float) -> None:
        """Deliver every message published from now on ``seconds`` late (0 stops delaying;
        what is already delayed still arrives, in order). Publishers are acked at once."""
        check_number("seconds", seconds)
        if seconds < 0:
            raise InvalidArgumentError(f"seconds must be >= 0, not {seconds}")
        self._faults.delay = seconds

    def reorder_next(self, n: int = 2, client_id: str | None = None) -> None:
        """Hold the next ``n`` PUBLISH deliveries to one client (``client_id``, or whichever
        client gets the next delivery) and send them in reverse order. They also go out (still
        reversed) if that client's receive window fills up first, or on :meth:`clear_faults`.

        Raises:
            InvalidArgumentError: ``n`` < 2.
        """
        check_int("n", n)
        check_str("client_id", client_id, optional=True)
        self._faults.reorder_next(n, client_id)

    def refuse_subscriptions(self, topic_filter: str, reason_code: int = 0x87) -> None:
        """Answer SUBSCRIBE with ``reason_code`` for requested filters equal to or covered by
        ``topic_filter`` (``$share`` prefix ignored), until :meth:`clear_faults`.

        Raises:
            InvalidTopicError: ``topic_filter`` is not a valid filter.
            InvalidArgumentError: ``reason_code`` is not a SUBACK failure code (0x80 and above).
        """
        check_int("reason_code", reason_code)
        self._faults.refuse(topic_filter, reason_code)

    def clear_faults(self) -> None:
        """Disarm every message fault; held reordered deliveries are sent now."""
        self._faults.clear()
        if self._core is not None:
            for link in self._core.links:
                link.release_reordered()

    # -- helpers -------------------------------------------------------------------------------

    def _running_core(self) -> BrokerCore:
        if self._state not in (BrokerState.RUNNING, BrokerState.RESTARTING) or self._core is None:
            raise ClientStateError(f"{self!r} is not running")
        return self._core

    def _select(self, client_id: str | None) -> list[BrokerLink]:
        check_str("client_id", client_id, optional=True)  # drop_link, stall, unstall
        core = self._core
        if core is None:
            return []
        if client_id is None:
            return list(core.links)
        return [link for link in core.links if link.client_id == client_id]


_Listener = tuple[asyncio.Server | None, str, int, str | None, ssl.SSLContext | None]


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _wait_closed(links: Iterable[BrokerLink], grace: float) -> None:
    """Wait until every link is closed; abort the ones still open after ``grace`` seconds."""
    pending = [link for link in links if not link.closed.is_set()]
    try:
        async with asyncio.timeout(grace):
            for link in pending:
                await link.closed.wait()
    except TimeoutError:
        for link in pending:
            link.abort()
        for link in pending:
            await link.closed.wait()
