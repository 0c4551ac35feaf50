"""The supervisor: the one holder of the current link, and the connect loop that replaces it.

It opens a link to the broker it is on (one of ``mqtt_url``'s list, or where an MQTT 5 server
redirection sent it), waits for the session's ``Ready`` (subscriptions restored, resends and
the outbox already on the wire, in order), holds it until it ends, then decides what next: the
next broker of the list, the redirection target at once, or a backoff delay. What a failure
means is a parameter (``is_fatal``, the classification; ``backoff``, the delays), as websockets
does with ``process_exception`` and ``reconnect_delays``.

Link up and link down happen here, once per link. The supervisor knows nothing of the client
above it: the client reads :attr:`Supervisor.link`, awaits :attr:`Supervisor.first_link`, and
awaits :meth:`Supervisor.run` (which returns when the policy gives up).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Literal

from .._backoff import BackoffPolicy
from .._core.protocol import ProtocolChoice, ProtocolOption, level_name
from .._core.session import Session
from .._errors import ConnectError
from .._instruments import Instruments
from .._logfields import link_fields
from .._trouble import ConnectTrouble, scheme_hint, with_scheme_hint
from .._url import ConnectionParams, endpoint_from_reference
from .connection import Connection, Connector, FilterListener, MessageListener, open_connection

__all__ = ["Hook", "Supervisor"]

log = logging.getLogger("tars.mqtt")

Hook = Callable[[], Awaitable[None]]
RedirectPolicy = Literal["listed", "any", "never"]

_MAX_REDIRECTS: Final = 5
# Links that end within _SHORT_LINK seconds, _CLASH_LINKS times in a row, keep the backoff
# growing (a client id clash), however they end (issue 12, D6).
_SHORT_LINK: Final = 2.0
_CLASH_LINKS: Final = 5  # consecutive redirections followed before it counts as a failure
# Said with the first connection trouble: a wrong port must not look like a hung service.
_WAIT_HINT: Final = (
    "; connect() keeps waiting for the broker (wait_for_broker=True, the default): pass "
    "wait_for_broker=False to fail at once, or bound the wait with asyncio.timeout() around "
    "connect()"
)


def is_fatal(error: ConnectError) -> bool:
    """The default classification: a refusal no retry fixes (bad credentials, not authorized,
    bad client id, unsupported protocol version) or an untrusted certificate."""
    return error.fatal


class Supervisor:
    """Connects, reconnects, and holds the one current link of a session."""

    def __init__(
        self,
        session: Session,
        endpoints: Sequence[ConnectionParams],
        *,
        listeners: list[MessageListener],
        filter_listener: FilterListener | None = None,
        backoff: BackoffPolicy,
        tls_context: Callable[[], ssl.SSLContext],
        connector: Connector | None = None,
        connect_timeout: float = 10.0,
        protocol: ProtocolOption = "auto",
        wait_for_broker: bool = True,
        redirects: RedirectPolicy = "listed",
        settle_after: float = 60.0,
        connect_hooks: list[Hook],
        disconnect_hooks: list[Hook],
        is_fatal: Callable[[ConnectError], bool] = is_fatal,
        instruments: Instruments | None = None,
        ws_headers: Mapping[str, str] | None = None,
    ) -> None:
        """``listeners`` hear every PUBLISH received, ``filter_listener`` a subscription filter
        the session gave up (each link is handed them).
        ``settle_after``: a link that lasted this long starts the backoff afresh when lost.
        ``redirects``: which server redirections to follow (see :meth:`_redirect`).
        ``ws_headers``: the extra HTTP headers of a WebSocket upgrade (``ws://``, ``wss://``).

        Raises:
            ConfigError: a WebSocket URL without the ``ws`` extra installed.
        """
        self._session = session
        self._endpoints = tuple(endpoints)
        self._ws_headers = ws_headers
        if any(params.websocket for params in self._endpoints):
            from . import websocket  # noqa: F401 - imported only for ws URLs; ConfigError without
        self._index = 0
        self.params = self._endpoints[0]  # the broker we are on, or trying next
        self._listeners = listeners
        self._filter_listener = filter_listener
        self._backoff = backoff
        self._tls_context = tls_context
        self._connector = connector
        self._connect_timeout = connect_timeout
        self._protocols = ProtocolChoice(protocol)  # MQTT 5 or 3.1.1, per broker
        self._wait_for_broker = wait_for_broker
        self._redirects = redirects
        self.redirects_refused = 0  # redirections the policy did not follow
        self._settle_after = settle_after
        self._connect_hooks = connect_hooks
        self._disconnect_hooks = disconnect_hooks
        self._is_fatal = is_fatal
        self._instruments = (
            instruments if instruments is not None else Instruments(session.client_id)
        )
        self.current: Connection | None = None  # the current link, from CONNECT to its end
        self.link: Connection | None = None  # the current link once ready, until it ends
        self.connects = 0  # links that became ready
        self.first_link: asyncio.Future[None] | None = None
        self._closing = False
        self._paused = 0
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._short_links = 0  # consecutive links that ended soon after they were accepted
        self._hinted = False  # the TLS/plain scheme hint is given once per client

    @property
    def client_id(self) -> str:
        return self._session.client_id

    # --- what the client asks ------------------------------------------------------------------

    def begin(self) -> asyncio.Future[None]:
        """A new run (``connect()``): returns the future of its first link's outcome."""
        self._closing = False
        self._paused = 0
        self.first_link = asyncio.get_running_loop().create_future()
        return self.first_link

    def flush_soon(self) -> None:
        """Write what the session queued, on the current link if there is one (even one still
        restoring its subscriptions: the session already sends on it)."""
        conn = self.current
        if conn is not None:
            conn.flush_soon()

    def pause_reading(self) -> None:
        """Backpressure from a subscription: stop reading the link (calls nest)."""
        self._paused += 1
        if self._paused == 1 and self.link is not None:
            self.link.pause_reading()

    def resume_reading(self) -> None:
        """Undo one :meth:`pause_reading`."""
        if self._paused == 0:
            return
        self._paused -= 1
        if self._paused == 0 and self.link is not None:
            self.link.resume_reading()

    def close(self) -> None:
        """Shutdown began: no new link, and the current one's end is not a loss."""
        self._closing = True
        self.link = None

    async def stop_hooks(self, timeout: float) -> None:
        """Cancel the connect/disconnect hooks still running (shutdown)."""
        me = asyncio.current_task()
        tasks = [t for t in self._hook_tasks if t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def abort(self) -> None:
        """Drop whatever link there is, at once (the end of shutdown)."""
        conn = self.current
        self.current = self.link = None
        if conn is not None:
            conn.abort()

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> ConnectError | None:
        """Connect and reconnect until :meth:`close` or the policy gives up; returns the error
        it gave up on (None when closed). The first link's outcome goes to the future
        :meth:`begin` returned.

        An unexpected error while connecting is logged and retried like any failure, or the
        client would stay "reconnecting" for ever.
        """
        loop = asyncio.get_running_loop()
        first = self.first_link
        assert first is not None, "begin() first"
        attempt = 0
        failed_in_round = 0  # consecutive failed attempts since a link was last up
        redirects = 0  # consecutive redirections followed (a loop of them is a failure)
        trouble = ConnectTrouble()
        while not self._closing:
            params = self.params
            self._session.use_credentials(params.username, params.password)
            broker = f"{params.host}:{params.port}"
            level = self._protocols.level(broker, params.protocol)
            self._session.use_protocol(level)
            started = self._session.links_started  # moves when our CONNECT goes out
            try:
                conn = await open_connection(
                    self._session,
                    params.host,
                    params.port,
                    listeners=self._listeners,
                    filter_listener=self._filter_listener,
                    ssl_context=self._tls_context() if params.tls else None,
                    connector=self._connector or self._websocket(params),
                    timeout=self._connect_timeout,
                    display=params.redacted_url,
                )
            except Exception as exc:
                error = exc if isinstance(exc, ConnectError) else _unexpected(exc, params)
                sent = self._session.links_started != started
                code = error.reason_code
                if self._protocols.failed(broker, level, code, sent, params.protocol):
                    log.info(
                        "%s: %s did not take MQTT 5 (%s); trying MQTT 3.1.1",
                        self.client_id,
                        params.redacted_url,
                        error,
                        extra=self._fields(),
                    )
                    continue  # at once: the same broker, the other protocol level
                if self._redirect(error.server_reference, redirects):
                    redirects += 1
                    continue  # at once: the broker itself sent us there
                redirects = 0
                fatal = self._is_fatal(error)
                failed_in_round += 1
                self._next_endpoint()
                if not first.done():
                    if not fatal and failed_in_round < len(self._endpoints):
                        continue  # several brokers: the first that answers wins
                    if fatal or not self._wait_for_broker:
                        # Raised to the caller, who reads no WARNING: the hint goes with it.
                        first.set_exception(with_scheme_hint(error, params.tls))
                        return error
                delay = self._backoff.next_delay(attempt, refused=error.refused)
                attempt += 1
                if delay is None:
                    error = with_scheme_hint(error, params.tls)
                    log.error(
                        "giving up connecting to %s: %s",
                        params.redacted_url,
                        error,
                        extra=self._fields(),
                    )
                    self._fail_first(error)
                    return error
                self._say_trouble(trouble, loop.time(), params, error, delay, first.done())
                await asyncio.sleep(delay)
                continue
            if self._protocols.succeeded(broker, level):
                log.info(
                    "%s speaks %s with %s",
                    self.client_id,
                    level_name(level),
                    params.redacted_url,
                    extra=self._fields(),
                )
            up_at = loop.time()
            failed_in_round = 0
            calm = False
            if await self._hold(conn, trouble):
                calm = self._calm(conn, loop.time() - up_at)
                attempt = 0 if calm else attempt
            if self._closing:
                return None  # shutdown said goodbye on this link: no reconnecting behind it
            if loop.time() - up_at > self._settle_after:
                redirects = 0  # a link that lasted: its redirection starts no loop
            if self._redirect(conn.server_reference, redirects):
                redirects += 1
                continue  # the broker sent us elsewhere: go now, no backoff
            self._next_endpoint()  # the next broker of the list (the same one when alone)
            if calm and len(self._endpoints) > 1:
                continue  # failover: another node of the cluster at once, no backoff
            delay = self._backoff.next_delay(attempt, refused=False)
            attempt += 1
            if delay is None:
                error = ConnectError(f"gave up reconnecting to {self.params.redacted_url}")
                self._fail_first(error)
                return error
            await asyncio.sleep(delay)
        return None

    async def _hold(self, conn: Connection, trouble: ConnectTrouble) -> bool:
        """Wait for the link to be ready, hold it until it ends; False when it never was."""
        self.current = conn
        try:
            ready = await conn.wait_ready()
            # Not connected any more: the link ended (a DISCONNECT, a protocol error) in the
            # same read as the last SUBACK of the restore.
            if ready is None or self._closing or not conn.is_connected:
                conn.abort()
                await conn.wait_closed()
                if not self._closing:
                    # Said, not silent: a broker that accepts the CONNECT and then closes the
                    # link on the restore (RabbitMQ while a queue's node is down) looks like
                    # "no link" for as long as it lasts, with nothing but this to say why. A
                    # failed attempt like any other: WARNING at the first and then every
                    # WARN_EVERY seconds, INFO between, "connected after" when it heals.
                    now = asyncio.get_running_loop().time()
                    warn = trouble.failed(now)
                    log.log(
                        logging.WARNING if warn else logging.INFO,
                        "%s: the link to %s ended before it was ready (CONNACK and restored "
                        "subscriptions; failed attempts: %d in %.0f s): %s%s",
                        self.client_id,
                        self.params.redacted_url,
                        trouble.attempts,
                        trouble.seconds(now),
                        conn.close_reason or "closed",
                        _REFUSED_311 if warn and self._session.protocol_level == 4 else "",
                        extra=self._fields(),
                    )
                return False
            self._link_up(conn, ready.session_present, trouble)
            await conn.wait_closed()
            self._link_down(conn)
            return True
        finally:
            if self.current is conn:
                self.current = None

    def _link_up(self, conn: Connection, session_present: bool, trouble: ConnectTrouble) -> None:
        loop = asyncio.get_running_loop()
        self.link = conn
        self.connects += 1
        if self._paused:
            # Only now: paused before, the SUBACKs of the restore could never be read while a
            # handler holds a full "block" queue, and the link would hang half-open.
            conn.pause_reading()
        params = self.params
        healed = trouble.connected(loop.time())
        if healed is not None:
            log.info(
                "%s connected to %s after failed attempts: %d in %.1f s",
                self.client_id,
                params.redacted_url,
                healed.attempts,
                healed.seconds,
            )
        log.info(
            "%s connected to %s%s",
            self.client_id,
            params.redacted_url,
            " (session resumed)" if session_present else "",
        )
        if self.first_link is not None and not self.first_link.done():
            self.first_link.set_result(None)
        if self._instruments:
            self._instruments.connected(params.redacted_url)
        self._run_hooks(self._connect_hooks, "connect")

    def _link_down(self, conn: Connection) -> None:
        self.link = None
        if self._closing:
            return
        log.warning(
            "%s lost its link to %s: %s",
            self.client_id,
            self.params.redacted_url,
            conn.close_reason or "closed",
            extra=self._fields(),
        )
        if self._instruments:
            self._instruments.disconnected(self.params.redacted_url)
        self._run_hooks(self._disconnect_hooks, "disconnect")

    def _calm(self, conn: Connection, lasted: float) -> bool:
        """Whether a lost link starts the backoff afresh. A broker that kicks us (DISCONNECT)
        soon after accepting us keeps it growing: a client id clash must not become a reconnect
        storm. A link lost to the network or a broker restart starts afresh, so the client is
        back within about a second of the broker, however many outages came before."""
        if lasted >= _SHORT_LINK:
            self._short_links = 0
        else:
            self._short_links += 1
            if self._short_links >= _CLASH_LINKS:
                # Mosquitto closes the older of two links with one client id without a
                # DISCONNECT: such a clash looks like network losses, but every link dies
                # right after it was accepted.
                if self._short_links == _CLASH_LINKS:
                    log.warning(
                        "%s: %d links in a row to %s ended within %g s of being accepted: is "
                        "another client connected with the client id %r? Backing off.",
                        self.client_id,
                        self._short_links,
                        self.params.redacted_url,
                        _SHORT_LINK,
                        self.client_id,
                        extra=self._fields(),
                    )
                return False
        return conn.broker_disconnect_reason is None or lasted > self._settle_after

    # --- brokers -------------------------------------------------------------------------------

    def _next_endpoint(self) -> None:
        """Move on to the next broker of the list (in the order drawn at construction)."""
        self._index = (self._index + 1) % len(self._endpoints)
        self.params = self._endpoints[self._index]

    def _redirect(self, reference: str | None, redirects: int) -> bool:
        """MQTT 5 server redirection: connect next to where ``reference`` points. False when
        there is none, too many in a row, it is unreadable, or the policy refuses it.

        The policy (``redirects``), because the credentials (and the client certificate) go
        with the client: ``"listed"`` (the default) follows only to a broker ``mqtt_url``
        lists, and connects there with that URL's own credentials, so a spoofed or compromised
        broker cannot send them anywhere else; ``"any"`` follows to any host with the current
        scheme and credentials; ``"never"`` follows none. A refusal is logged with the
        reference and counted (:attr:`redirects_refused`); the client then goes on as after a
        failed attempt (the next broker of the list, or the backoff).
        """
        if not reference or redirects >= _MAX_REDIRECTS:
            return False
        target = endpoint_from_reference(reference, self.params)
        if target is not None and self._redirects != "any":
            listed = self._listed(target) if self._redirects == "listed" else None
            if listed is None:
                self.redirects_refused += 1
                log.warning(
                    "%s: %s redirected us to %r, which mqtt_url does not list: not followed "
                    "(redirects=%r; 'any' follows any host, with these credentials)",
                    self.client_id,
                    self.params.redacted_url,
                    reference,
                    self._redirects,
                    extra=self._fields(),
                )
                return False
            target = listed
        if target is None:
            log.warning(
                "%s: %s redirected us to %r, which is not a usable broker address; ignored",
                self.client_id,
                self.params.redacted_url,
                reference,
                extra=self._fields(),
            )
            return False
        log.warning(
            "%s: %s redirected us to %s (MQTT 5 server reference)",
            self.client_id,
            self.params.redacted_url,
            target.redacted_url,
            extra=self._fields(),
        )
        self.params = target
        return True

    def _listed(self, target: ConnectionParams) -> ConnectionParams | None:
        """The broker of ``mqtt_url`` at ``target``'s host and port (with its own credentials),
        or None. Host names compare without case; no name is resolved (a listed name and its
        address are two different hosts to this check)."""
        host = target.host.lower()
        for endpoint in self._endpoints:
            if endpoint.host.lower() == host and endpoint.port == target.port:
                return endpoint
        return None

    # --- internals -----------------------------------------------------------------------------

    def _websocket(self, params: ConnectionParams) -> Connector | None:
        """How a ``ws://``/``wss://`` broker is reached (None: plain TCP or TLS)."""
        if not params.websocket:
            return None
        from .websocket import websocket_connector

        tls = self._tls_context() if params.tls else None
        # The extra headers (a token) go only to brokers the user listed, not to wherever a
        # server redirection (redirects="any") points.
        listed = self._listed(params) is not None
        return websocket_connector(params, tls, self._ws_headers if listed else None)

    def _fail_first(self, error: ConnectError) -> None:
        if self.first_link is not None and not self.first_link.done():
            self.first_link.set_exception(error)

    def _say_trouble(
        self,
        trouble: ConnectTrouble,
        now: float,
        params: ConnectionParams,
        error: ConnectError,
        delay: float,
        connected_before: bool,
    ) -> None:
        if trouble.failed(now):
            hint = None if self._hinted else scheme_hint(error, params.tls)
            if hint is not None:
                self._hinted = True
            log.warning(
                "%s cannot connect to %s (failed attempts: %d in %.0f s): %s%s; retrying in "
                "%.2f s%s",
                self.client_id,
                params.redacted_url,
                trouble.attempts,
                trouble.seconds(now),
                error,
                "" if hint is None else f" ({hint})",
                delay,
                "" if connected_before else _WAIT_HINT,
                extra=self._fields(),
            )
        else:
            log.info("%s; retrying in %.2f s", error, delay)

    def _fields(self) -> dict[str, str]:
        """The ``extra`` fields of a log line about the link (see :mod:`._logfields`)."""
        return link_fields(self.client_id, self.params.redacted_url)

    def _run_hooks(self, hooks: list[Hook], what: str) -> None:
        for hook in hooks:
            task = asyncio.ensure_future(_guard(hook, what))
            task.set_name(f"tars-mqtt-hook:{what}")
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)


_REFUSED_311 = (
    " (an MQTT 3.1.1 broker may refuse a SUBSCRIBE by closing the link; RabbitMQ does so while"
    " the node that holds this client id's queue is down)"
)


def _unexpected(exc: Exception, params: ConnectionParams) -> ConnectError:
    """An error no transport mapping foresaw (a bug, or a platform surprise), as ConnectError."""
    log.error("unexpected error connecting to %s", params.redacted_url, exc_info=exc)
    error = ConnectError(f"unexpected error connecting to {params.redacted_url}: {exc!r}")
    error.__cause__ = exc
    return error


async def _guard(hook: Hook, what: str) -> None:
    try:
        await hook()
    except Exception:
        log.exception("%s hook %r failed", what, hook)
