"""MQTTClient: the one MQTT client every TARS service uses. A facade.

The parts, each the one owner of its lifetime (see ``docs/architecture.md``):

- the :class:`~._session.Session` (pure, sans-I/O) holds everything that outlives a link: each
  outgoing publish until its outcome (the outbox is its offline part), the subscription table
  and its restore plan, incoming QoS 2 state, and the liveness deadlines;
- the :class:`~._supervisor.Supervisor` holds the current link and replaces it (backoff,
  failover across brokers, redirection);
- a :class:`~._connection.Connection` moves bytes between one transport and the session;
- each :class:`~._subscription.Subscription` owns its queue and worker; the
  :class:`~._dispatch.Dispatcher` only routes.

The client wires them together once, and owns the lifecycle (:class:`ClientState`) and the
user's API. Publish path: ``publish`` -> checks -> ``session.publish`` -> the supervisor's link
flushes at the end of the loop turn -> the ack resolves the caller's future. Receive path:
connection -> session -> dispatcher -> the subscription's queue -> its handler.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Self, Unpack

from mqtt5 import QoS, Will

from ._assembly import ignore, make_session, tls_factory
from ._asyncio.connection import Connector, MessageListener, settle
from ._asyncio.dispatch import Acknowledger, Dispatcher
from ._asyncio.linkview import LinkView
from ._asyncio.supervisor import Hook, Supervisor
from ._backoff import BackoffPolicy, ExponentialBackoff
from ._checks import PublishCheck
from ._client_events import EventMethods
from ._client_run import RunMethods
from ._client_state import ClientState, ClientStats
from ._client_subscribe import SubscribeMethods
from ._config import MQTTClientConfig
from ._core.session import WaitFor
from ._errors import (
    ClientStateError,
    InvalidArgumentTypeError,
    MQTTError,
)
from ._health import encode_health, health_topic, keepalive_topic, will_payload
from ._instrument import Instrument, Instruments
from ._options import ClientOptions
from ._requests import PendingRequests

__all__ = ["ClientState", "ClientStats", "MQTTClient"]

log = logging.getLogger("tars.mqtt")

_SHUTDOWN_TIMEOUT: Final = 5.0
_PACKET_OVERHEAD: Final = 128 * 1024
_MQTT_MAX_PACKET: Final = 268_435_455 + 5


class MQTTClient(EventMethods, SubscribeMethods, RunMethods):
    """An asyncio MQTT 5 client with envelopes, dispatch, reconnection, heartbeat and health.

    ``MQTTClient("mqtt://user:pass@host:1883", "stt-worker", enable_health=True)`` — every
    keyword is a field of :class:`~tars.mqtt.MQTTClientConfig` (or pass ``config=``). Bad values
    raise :class:`~tars.mqtt.ConfigError` here, at construction.

    ``backoff`` replaces the reconnect policy; ``ssl_context`` the TLS settings of ``mqtts://``;
    ``connector`` the transport (e.g. :class:`tars.mqtt.testing.InMemoryBroker`'s).
    """

    def __init__(
        self,
        mqtt_url: str | None = None,
        client_id: str | None = None,
        *,
        config: MQTTClientConfig | None = None,
        backoff: BackoffPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        if config is None:
            fields: dict[str, Any] = dict(options)
            if mqtt_url is not None:
                fields["mqtt_url"] = mqtt_url
            if client_id is not None:
                fields["client_id"] = client_id
            config = MQTTClientConfig(**fields)
        elif mqtt_url is not None or client_id is not None or options:
            raise InvalidArgumentTypeError(
                "pass either config= or mqtt_url/client_id/options, not both"
            )
        self._config = cfg = config
        self._state = ClientState.CREATED
        self._session = session = make_session(cfg)
        self._listeners: list[MessageListener] = []
        self._instruments = Instruments(cfg.effective_client_id)  # falsy until one is added
        self._connect_hooks: list[Hook] = []
        self._disconnect_hooks: list[Hook] = []
        self._supervisor = Supervisor(
            session,
            cfg.ordered_endpoints(),  # the brokers in the order this client tries them
            listeners=self._listeners,
            backoff=backoff
            or ExponentialBackoff(
                min_delay=cfg.reconnect_min_delay, max_delay=cfg.reconnect_max_delay
            ),
            tls_context=tls_factory(cfg, ssl_context),
            connector=connector,
            connect_timeout=cfg.connect_timeout,
            protocol=cfg.protocol,
            wait_for_broker=cfg.wait_for_broker,
            settle_after=cfg.reconnect_max_delay,
            connect_hooks=self._connect_hooks,
            disconnect_hooks=self._disconnect_hooks,
            instruments=self._instruments,
            ws_headers=cfg.ws_headers,
        )
        acker = None
        if session.ack_after_handling:
            acker = Acknowledger(session, self._supervisor.flush_soon)
        self._dispatcher = Dispatcher(acker)
        self._listeners.append(self._dispatcher.on_packet)
        if cfg.enable_heartbeat:
            # Our own heartbeat coming back: the session's liveness noted it; nothing to deliver.
            topic = keepalive_topic(cfg.effective_client_id)
            self._dispatcher.add_internal(topic, session.subscription_id(topic) or 0, ignore)
        self._check = PublishCheck(cfg.max_payload_size)
        self._requests = PendingRequests()
        self._runner: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._view: LinkView | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        backoff: BackoffPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        **overrides: Any,
    ) -> Self:
        """Build a client from ``MQTT_URL``, ``MQTT_CLIENT_ID`` and the other ``MQTT_*`` variables.

        Raises :class:`~tars.mqtt.ConfigError` naming the variable at fault.
        """
        config = MQTTClientConfig.from_env(env, **overrides)
        return cls(config=config, backoff=backoff, ssl_context=ssl_context, connector=connector)

    def __repr__(self) -> str:
        return f"<MQTTClient {self.client_id!r} {self.broker} state={self.state.value}>"

    # --- properties --------------------------------------------------------------------------

    @property
    def config(self) -> MQTTClientConfig:
        """The validated configuration (frozen)."""
        return self._config

    @property
    def client_id(self) -> str:
        """The MQTT client id sent to the broker: ``client_id``, or ``{client_id}-{instance}``
        for an instance of a replicated service (also the last level of the health and
        keepalive topics)."""
        return self._config.effective_client_id

    @property
    def broker(self) -> str:
        """The broker the client is connected to, or trying next, as a redacted URL (one of
        ``mqtt_url``'s list, or where an MQTT 5 server redirection sent it)."""
        return self._supervisor.params.redacted_url

    @property
    def state(self) -> ClientState:
        """Where the client is in its lifecycle (see :class:`ClientState`)."""
        state = self._state
        if state is ClientState.CONNECTING:  # running: the supervisor knows the link
            sup = self._supervisor
            if sup.link is not None:
                return ClientState.CONNECTED
            if sup.first_link is not None and sup.first_link.done():
                return ClientState.RECONNECTING
        return state

    @property
    def connected(self) -> bool:
        """True exactly while a CONNACK-ed link is up and the client is usable on it."""
        link = self._supervisor.link
        return self._state is ClientState.CONNECTING and link is not None and link.is_connected

    @property
    def client(self) -> LinkView | None:
        """A view of the current link while connected, else None. Read-only.

        For what the client does not wrap: publish with MQTT 5 properties, subscribe with
        options, read the broker's CONNACK and ``session_present``. Subscriptions made through
        it are not restored after a reconnect; messages they bring reach listeners added with
        :meth:`add_message_listener`.
        """
        link = self._supervisor.link
        if link is None or not self.connected:
            return None
        view = self._view
        if view is None or view._conn is not link:
            view = self._view = LinkView(link, self._session)
        return view

    @property
    def stats(self) -> ClientStats:
        """A snapshot of every counter (client and subscriptions)."""
        totals = dict.fromkeys(
            ("received", "handled", "failed", "timed_out", "dropped", "deduplicated", "invalid"), 0
        )
        for sub in self._dispatcher.subscriptions():
            for name in totals:
                totals[name] += getattr(sub.stats, name)
        session = self._session
        counts, outgoing = session.stats, session.outgoing
        return ClientStats(
            published=counts.published,
            publish_failed=counts.publish_failed,
            dropped_offline=counts.dropped_offline,
            outbox_dropped=outgoing.dropped,
            outbox_expired=outgoing.expired,
            unmatched=self._dispatcher.unmatched,
            connects=self._supervisor.connects,
            stale_links=counts.stale_links,
            outbox_depth=outgoing.offline_count,
            inflight=session.inflight_count,
            no_subscribers=counts.no_subscribers,
            receive_maximum_exceeded=counts.receive_maximum_exceeded,
            properties_dropped=counts.properties_dropped,
            **totals,
        )

    # --- hooks -------------------------------------------------------------------------------

    def on_connect(self, hook: Hook) -> Hook:
        """Register ``async def hook() -> None``, run after every (re)connection (a decorator)."""
        self._connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: Hook) -> Hook:
        """Register ``async def hook() -> None`` run after every lost link."""
        self._disconnect_hooks.append(hook)
        return hook

    def add_instrument(self, instrument: Instrument) -> Callable[[], None]:
        """Tell ``instrument`` (a :class:`~tars.mqtt.Instrument`) about every publish, handler
        call and link change from now on; returns a function that removes it."""
        return self._instruments.add(instrument)

    def add_message_listener(self, listener: MessageListener) -> Callable[[], None]:
        """Call ``listener(packet)`` synchronously for every PUBLISH received (raw
        ``mqtt5.PublishPacket``); returns a function that removes it. Keep it fast."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def connect(self) -> None:
        """Connect, and keep reconnecting by itself until :meth:`shutdown`.

        Returns once connected. While the broker is down at start it waits and retries
        (``wait_for_broker=True``, the default) or raises :class:`~tars.mqtt.ConnectError`.
        A refusal no retry can fix (bad credentials, not authorized, bad client id) raises
        :class:`~tars.mqtt.ConnectError` at once. Raises :class:`~tars.mqtt.ClientStateError`
        when already connecting or connected, and :class:`~tars.mqtt.ConfigError` when the
        durable outbox (``outbox_path``) cannot be opened or another process holds it; what an
        earlier run left in it is sent first, once connected.
        """
        if self._state not in (ClientState.CREATED, ClientState.CLOSED):
            raise ClientStateError(f"connect() while {self._state.value}")
        loop = asyncio.get_running_loop()
        cfg = self._config
        session = self._session
        if self._state is ClientState.CLOSED:
            session.restart()
        session.open_journal()  # the durable outbox: what an earlier run left goes first
        if cfg.enable_health:
            session.will = Will(
                health_topic(cfg.effective_client_id),
                payload=will_payload(source=cfg.source, timestamp=time.time()),
                qos=QoS.AT_LEAST_ONCE,
                retain=True,
            )
        self._state = ClientState.CONNECTING
        self._closed = loop.create_future()
        first = self._supervisor.begin()
        for sub in self._dispatcher.subscriptions():
            sub.start()
        self._runner = loop.create_task(self._run(), name="tars-mqtt-supervisor")
        try:
            await asyncio.shield(first)
        except BaseException:
            await self.shutdown()
            raise

    async def shutdown(self, timeout: float = _SHUTDOWN_TIMEOUT) -> None:
        """Close gracefully: health ``shutdown``, pending acks flushed, DISCONNECT, every task
        cancelled. Idempotent, never raises, returns within about ``timeout`` seconds."""
        if self._state in (ClientState.CREATED, ClientState.CLOSED):
            return
        if self._state is ClientState.CLOSING:
            if self._closed is not None:
                await asyncio.shield(self._closed)
            return
        loop = asyncio.get_running_loop()
        link = self._supervisor.link if self.connected else None
        self._state = ClientState.CLOSING
        self._supervisor.close()
        deadline = loop.time() + timeout
        try:
            if link is not None:
                await self._say_goodbye(link, timeout / 2)
            left = max(0.1, deadline - loop.time())
            await self._supervisor.stop_hooks(left)
            runner = self._runner
            if runner is not None and runner is not asyncio.current_task():
                runner.cancel()
                await asyncio.wait((runner,), timeout=left)
            # One after the other in this task (not gathered in tasks of their own), so that a
            # handler calling shutdown() is recognized by its subscription's stop() as the
            # caller, and is neither cancelled nor waited for.
            for sub in self._dispatcher.subscriptions():
                await sub.stop(timeout=max(0.1, deadline - loop.time()))
        except Exception:  # shutdown never raises: log and finish the job
            log.exception("error during shutdown of %s", self.client_id)
        finally:
            self._finish_close()

    async def disconnect(self) -> None:
        """Same as :meth:`shutdown` (kept for code written against paho-style clients)."""
        await self.shutdown()

    # --- internals -----------------------------------------------------------------------------

    async def _run(self) -> None:
        """The supervisor's task; when its policy gives up, the client shuts down."""
        error = await self._supervisor.run()
        if error is not None and self._state is ClientState.CONNECTING:
            await self.shutdown()

    async def _say_goodbye(self, link: Any, timeout: float) -> None:
        """Last words on a live link: health ``shutdown``, pending acks, then DISCONNECT."""
        session = self._session
        try:
            async with asyncio.timeout(timeout):
                if self._config.enable_health:
                    _, payload = encode_health(
                        False, "shutdown", None, source=self._config.source, timestamp=time.time()
                    )
                    topic = health_topic(self.client_id)
                    now = asyncio.get_running_loop().time()
                    settle(session.publish(topic, payload, 1, True, now=now))
                    link.flush()
                fut = asyncio.get_running_loop().create_future()
                if session.wait(fut, WaitFor.FLUSHED):
                    closed = asyncio.ensure_future(link.wait_closed())
                    try:
                        await asyncio.wait((fut, closed), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        session.forget_waiter(fut)
                        closed.cancel()
        except (TimeoutError, MQTTError) as exc:
            log.debug("shutdown: could not finish pending work: %r", exc)
        await link.disconnect(timeout=max(0.1, timeout / 2))

    def _finish_close(self) -> None:
        self._supervisor.abort()
        self._dispatcher.close()
        error = ClientStateError("the client was shut down")
        for handle in self._session.abandon():
            if isinstance(handle, asyncio.Future) and not handle.done():
                handle.set_exception(error)
        first = self._supervisor.first_link
        if first is not None and not first.done():
            first.set_exception(error)
            first.exception()
        self._view = None
        self._state = ClientState.CLOSED
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
