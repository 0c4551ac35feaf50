"""MQTTClient: the one MQTT client every TARS service uses.

It composes the small parts and owns the lifecycle: an explicit :class:`ClientState`, one
supervisor task that connects, reconnects with backoff and, on every new link, restores the
subscriptions (:mod:`._subscriptions`) and flushes the outbox (:mod:`._publisher`), and one
liveness task (:mod:`._monitor`: heartbeat, watchdog, publish-ack timeout). Every background
task is named, owned here, and gone after :meth:`MQTTClient.shutdown`.

Publish path: ``publish_event`` -> envelope bytes -> session (connected) or outbox (not) -> wire.
Receive path: wire -> session -> dispatcher -> dedup -> the subscription's queue -> its handler.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, Unpack

from mqtt5 import QoS, Will
from pydantic import BaseModel

from ._backoff import BackoffPolicy, ExponentialBackoff
from ._config import MQTTClientConfig
from ._connection import Connection, Connector, MessageListener, open_connection
from ._dedup import DedupWindow
from ._dispatch import Dispatcher, Handler, ModelT, Overflow, Subscription
from ._envelope import Envelope, encode_event
from ._errors import (
    ClientStateError,
    ConnectError,
    ConnectionLostError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MQTTError,
    NotConnectedError,
)
from ._health import encode_health, health_topic, will_payload
from ._message import Message
from ._monitor import LinkMonitor
from ._options import ClientOptions
from ._publisher import Publisher
from ._requests import PendingRequests
from ._session import PublishDone, Session
from ._subscriptions import SubscriptionSync
from ._tls import make_ssl_context
from ._topics import validate_topic_filter, validate_topic_name
from ._trouble import ConnectTrouble
from ._url import endpoint_from_reference

__all__ = ["ClientState", "ClientStats", "MQTTClient"]

log = logging.getLogger("tars.mqtt")

# CONNACK reasons that no retry will fix while the configuration stays the same.
_FATAL_CONNACK: Final = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
_SHUTDOWN_TIMEOUT: Final = 5.0
_MAX_REDIRECTS: Final = 5  # consecutive redirections followed before it counts as a failure
_PACKET_OVERHEAD: Final = 128 * 1024
_MQTT_MAX_PACKET: Final = 268_435_455 + 5
# Said with the first connection trouble: a wrong port must not look like a hung service.
_WAIT_HINT: Final = (
    "; connect() keeps waiting for the broker (wait_for_broker=True, the default): pass "
    "wait_for_broker=False to fail at once, or bound the wait with asyncio.timeout() around "
    "connect()"
)

Hook = Callable[[], Awaitable[None]]


class ClientState(enum.Enum):
    """Where the client is in its life. Only the transitions below happen::

    CREATED -> CONNECTING -> CONNECTED <-> RECONNECTING -> CLOSING -> CLOSED -> CONNECTING ...
    """

    CREATED = "created"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of the client's counters (:attr:`MQTTClient.stats`)."""

    published: int  # publishes handed to a link (QoS 0 sent, QoS 1/2 in flight)
    publish_failed: int  # QoS 1/2 publishes the broker refused
    dropped_offline: int  # QoS 0 publishes dropped while disconnected
    outbox_dropped: int  # dropped by the outbox policy or limits
    outbox_expired: int  # older than outbox_message_ttl when the link came back
    received: int  # messages offered to subscription queues
    handled: int
    failed: int  # handler raised
    timed_out: int  # handler exceeded its timeout
    dropped: int  # dropped by a subscription's overflow policy
    deduplicated: int
    invalid: int  # not an envelope / not valid for a typed handler
    unmatched: int  # received but no subscription wanted it
    connects: int  # successful connections (the first one included)
    stale_links: int  # links the watchdog or the publish timeout tore down
    outbox_depth: int = 0  # messages waiting in the outbox for a link (a gauge)
    inflight: int = 0  # QoS 1/2 publishes sent and not yet acknowledged (a gauge)


class MQTTClient:
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
        self._config = config
        # The brokers in the order this client tries them, drawn once (broker_order).
        self._endpoints = config.ordered_endpoints()
        self._endpoint = 0
        self._params = self._endpoints[0]  # the broker the client is on, or trying next
        self._backoff: BackoffPolicy = backoff or ExponentialBackoff(
            min_delay=config.reconnect_min_delay, max_delay=config.reconnect_max_delay
        )
        self._ssl_context = ssl_context
        self._connector = connector
        self._state = ClientState.CREATED
        self._session: Session | None = None
        self._conn: Connection | None = None
        self._dispatcher = Dispatcher(self._on_block)
        self._listeners: list[MessageListener] = [self._dispatcher.on_packet]
        self._subs = SubscriptionSync(self._dispatcher)
        self._publisher = Publisher(config, link=lambda: self.client, closing=self._closing)
        self._requests = PendingRequests()
        self._link_up_event = asyncio.Event()
        self._monitor = LinkMonitor(
            config,
            link=lambda: self.client,
            link_up=self._link_up_event,
            reading_paused=lambda: self._blocked > 0,
            unacked=lambda: self._session.inflight_count if self._session is not None else 0,
            last_ack=lambda: self._publisher.last_ack,
            on_stale=self._stale,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._first_connect: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._blocked = 0
        self._connect_hooks: list[Hook] = []
        self._disconnect_hooks: list[Hook] = []
        self._connects = 0
        self._stale_links = 0

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
        return (
            f"<MQTTClient {self.client_id!r} {self._params.redacted_url} state={self._state.value}>"
        )

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
        return self._params.redacted_url

    @property
    def state(self) -> ClientState:
        """Where the client is in its lifecycle (see :class:`ClientState`)."""
        return self._state

    @property
    def connected(self) -> bool:
        """True exactly while a CONNACK-ed link is up and the client is usable on it."""
        conn = self._conn
        return self._state is ClientState.CONNECTED and conn is not None and conn.is_connected

    @property
    def client(self) -> Connection | None:
        """The protocol-level connection while connected, else None. Read-only.

        For what the client does not wrap: publish with MQTT 5 properties, subscribe with
        options, read the broker's CONNACK. Subscriptions made through it are not restored
        after a reconnect; messages they bring reach listeners added with
        :meth:`add_message_listener`.
        """
        return self._conn if self.connected else None

    @property
    def stats(self) -> ClientStats:
        """A snapshot of every counter (client and subscriptions)."""
        totals = dict.fromkeys(
            ("received", "handled", "failed", "timed_out", "dropped", "deduplicated", "invalid"), 0
        )
        for sub in self._dispatcher.subscriptions():
            for name in totals:
                totals[name] += getattr(sub.stats, name)
        publisher = self._publisher
        return ClientStats(
            published=publisher.published,
            publish_failed=publisher.publish_failed,
            dropped_offline=publisher.dropped_offline,
            outbox_dropped=publisher.outbox.dropped,
            outbox_expired=publisher.outbox.expired,
            unmatched=self._dispatcher.unmatched,
            connects=self._connects,
            stale_links=self._stale_links,
            outbox_depth=len(publisher.outbox),
            inflight=self._session.inflight_count if self._session is not None else 0,
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
        when already connecting or connected.
        """
        if self._state not in (ClientState.CREATED, ClientState.CLOSED):
            raise ClientStateError(f"connect() while {self._state.value}")
        loop = asyncio.get_running_loop()
        cfg = self._config
        will = None
        if cfg.enable_health:
            will = Will(
                health_topic(cfg.effective_client_id),
                payload=will_payload(source=cfg.source, timestamp=time.time()),
                qos=QoS.AT_LEAST_ONCE,
                retain=True,
            )
        params = self._params
        self._session = Session(
            cfg.effective_client_id,
            keep_alive=cfg.keepalive,
            clean_start=cfg.clean_start,
            session_expiry_interval=cfg.session_expiry_interval,
            receive_maximum=cfg.receive_maximum,
            # The broker must not send us more (MQTT 5 Maximum Packet Size): room for the
            # largest accepted payload plus the longest topic and generous properties.
            max_packet_size=min(cfg.max_payload_size + _PACKET_OVERHEAD, _MQTT_MAX_PACKET),
            username=params.username,
            password=params.password,
            will=will,
        )
        self._state = ClientState.CONNECTING
        self._first_connect = loop.create_future()
        self._closed = loop.create_future()
        self._publisher.start()
        if cfg.enable_heartbeat:
            self._dispatcher.add_internal(self._monitor.topic, self._monitor.on_echo)
        for sub in self._dispatcher.subscriptions():
            sub.start()
        self._spawn(self._supervise(), "tars-mqtt-supervisor")
        self._spawn(self._monitor.run(), "tars-mqtt-liveness")
        try:
            await asyncio.shield(self._first_connect)
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
        was_connected = self.connected
        self._state = ClientState.CLOSING
        self._link_up_event.clear()
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            conn = self._conn
            if was_connected and conn is not None:
                await self._say_goodbye(conn, timeout / 2)
            await self._cancel_tasks(max(0.1, deadline - asyncio.get_running_loop().time()))
            # One after the other in this task (not gathered in tasks of their own), so that a
            # handler calling shutdown() is recognized by its subscription's stop() as the
            # caller, and is neither cancelled nor waited for.
            loop = asyncio.get_running_loop()
            for sub in self._dispatcher.subscriptions():
                await sub.stop(timeout=max(0.1, deadline - loop.time()))
        except Exception:  # shutdown never raises: log and finish the job
            log.exception("error during shutdown of %s", self._config.effective_client_id)
        finally:
            self._finish_close()

    async def disconnect(self) -> None:
        """Same as :meth:`shutdown` (kept for code written against paho-style clients)."""
        await self.shutdown()

    async def wait_for_disconnect(self) -> None:
        """Wait until the client is closed: by :meth:`shutdown` (from anywhere), or because
        the reconnect policy gave up. Returns at once when it is already closed.

        A lost link does not end the wait: the client reconnects and restores its
        subscriptions by itself (use :meth:`on_disconnect` to hear about lost links). This is
        the "serve until stopped" call of services that run their own signal handling.

        Raises :class:`~tars.mqtt.ClientStateError` before the first :meth:`connect`.
        """
        if self._state is ClientState.CREATED:
            raise ClientStateError("wait_for_disconnect() before connect()")
        closed = self._closed
        if closed is not None and not closed.done():
            await asyncio.shield(closed)

    async def run_forever(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Connect (unless already connected), serve until one of ``signals`` arrives or the
        client is shut down elsewhere, then :meth:`shutdown` gracefully: the last line of a
        service's ``main()``, so every service handles SIGINT/SIGTERM the same way.

        The handlers are installed with ``loop.add_signal_handler`` and the previous ones put
        back on return. Where that is not possible (Windows, or not in the main thread) it
        still shuts down when cancelled (Ctrl-C under ``asyncio.run``). Raises what
        :meth:`connect` raises.
        """
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[int] = loop.create_future()

        def on_signal(signum: int) -> None:
            if not stop.done():
                stop.set_result(signum)

        # Handlers before connecting: a signal while (re)trying to reach the broker, or just
        # after "ready" went out, must stop the service gracefully, not kill it.
        installed: list[tuple[int, Any]] = []
        for signum in signals:
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append((signum, previous))
        connecting: asyncio.Task[None] | None = None
        try:
            if self._state in (ClientState.CREATED, ClientState.CLOSED):
                connecting = loop.create_task(self.connect(), name="tars-mqtt-run-forever-connect")
                await asyncio.wait((connecting, stop), return_when=asyncio.FIRST_COMPLETED)
                if connecting.done():
                    connecting.result()  # raises what connect() raised
            closed = self._closed
            if not stop.done() and closed is not None and not closed.done():
                await asyncio.wait((stop, closed), return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                log.info("%s: signal %s received, shutting down", self.client_id, stop.result())
        finally:
            for signum, previous in installed:
                loop.remove_signal_handler(signum)
                if previous is not None:
                    signal.signal(signum, previous)
            if connecting is not None and not connecting.done():
                connecting.cancel()
                await asyncio.wait((connecting,))
                if not connecting.cancelled():
                    connecting.exception()  # retrieved: shutdown() below is the outcome
            await self.shutdown()

    # --- publishing --------------------------------------------------------------------------

    async def publish_event(
        self,
        topic: str,
        event_type: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        correlation_id: str | None = None,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
    ) -> str:
        """Wrap ``data`` in an :class:`~tars.mqtt.Envelope` and publish it; return its id.

        ``correlation_id`` names the event this one answers: as ``correlate`` by default, or,
        with ``correlation_format="original"`` (for a fleet that still runs the original
        client), as the envelope's own id, which is then also what is returned.

        See :meth:`publish` for ``qos``, ``retain``, ``wait`` and the errors raised; also
        ``TypeError`` when ``data`` is not a mapping or pydantic model or cannot be serialized.
        """
        if correlation_id is not None and self._config.correlation_format == "original":
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, msg_id=correlation_id
            )
        else:
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, correlate=correlation_id
            )
        await self.publish(topic, payload, qos=qos, retain=retain, wait=wait)
        return msg_id

    async def request(
        self,
        topic: str,
        event_type: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        response_topic: str,
        qos: int = 1,
        timeout: float = 10.0,
    ) -> Envelope:
        """Publish an event and wait for the answer whose ``correlate`` is its id.

        The answer is expected on ``response_topic`` (an exact topic the client subscribes to
        on first use, and after every reconnect). The request carries MQTT 5
        ``response_topic`` and ``correlation_data`` too, so a responder can simply call
        :meth:`reply`. The correlation is registered before the request leaves, so an answer
        can never arrive "too early".

        Use one response topic per service (e.g. ``"stt/answers"``): each distinct response
        topic stays subscribed for the client's life.

        Raises ``TimeoutError`` after ``timeout`` seconds, plus what :meth:`publish` raises.
        """
        validate_topic_name(response_topic)
        msg_id, payload = encode_event(event_type, data, source=self._config.source)
        requests = self._requests
        if response_topic not in requests.topics:
            requests.topics.add(response_topic)
            sid = self._dispatcher.add_internal(response_topic, requests.on_answer)
            await self._subs.internal_added(self._live_link(), response_topic, sid)
        answer = requests.expect(msg_id)
        try:
            async with asyncio.timeout(timeout):
                await self.publish(
                    topic,
                    payload,
                    qos=qos,
                    properties={
                        "response_topic": response_topic,
                        "correlation_data": msg_id.encode(),
                    },
                )
                return await answer
        finally:
            requests.forget(msg_id)

    async def reply(
        self,
        request: Message,
        event_type: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        topic: str | None = None,
        qos: int | None = None,
    ) -> str:
        """Answer a request received as a :class:`~tars.mqtt.Message`: publish an event whose
        ``correlate`` is the request's envelope id, on ``topic`` or else the request's MQTT 5
        response topic, at the request's QoS unless ``qos`` is given. Returns the answer's id.

        A request that came without MQTT 5 correlation data was not sent by :meth:`request`
        (the fleet's original client cannot send any): the answer is then written in the
        original format, which such a requester understands: no ``correlate``, and the
        request's id as its own id. So is every answer with ``correlation_format="original"``.

        Raises :class:`~tars.mqtt.EnvelopeError` when the request is not an envelope and
        ``ValueError`` when there is no topic to answer on.
        """
        target = topic or request.packet.response_topic
        if not target:
            raise InvalidArgumentError("the request has no response topic: pass topic=")
        request_id = request.envelope.id
        qos = request.qos if qos is None else qos
        if request.packet.correlation_data is None or self._config.correlation_format == "original":
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, msg_id=request_id
            )
            await self.publish(target, payload, qos=qos)
            return msg_id
        return await self.publish_event(
            target, event_type, data, correlation_id=request_id, qos=qos
        )

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Publish raw bytes (or str, sent as UTF-8).

        QoS 1/2 with ``wait=True`` return once the broker acknowledged (across reconnects:
        the message is resent); ``wait=False`` returns once the message is handed over (the ack
        is tracked, see :meth:`flush`). While disconnected, QoS 1/2 (and QoS 0 with
        ``queue_qos0_offline``) go to the outbox; QoS 0 is otherwise dropped and counted.

        Raises :class:`~tars.mqtt.InvalidTopicError`, :class:`~tars.mqtt.PayloadTooLarge`,
        ``ValueError`` (qos), :class:`~tars.mqtt.NotConnectedError` (before :meth:`connect`),
        :class:`~tars.mqtt.ClientStateError` (after :meth:`shutdown`),
        :class:`~tars.mqtt.OutboxFullError` (policy ``raise``),
        :class:`~tars.mqtt.PublishError` (the broker refused it).
        """
        publisher = self._publisher
        payload = publisher.check(topic, payload, qos, properties)
        state = self._state
        conn = self._conn
        if (
            state is ClientState.CONNECTED
            and conn is not None
            and await publisher.send_live(conn, topic, payload, qos, retain, wait, properties)
        ):
            return
        state = self._state  # send_live may have waited: decide on the state as it is now
        if state is ClientState.CREATED:
            raise NotConnectedError("publish() before connect()")
        if state is ClientState.CLOSING or state is ClientState.CLOSED:
            raise ClientStateError(f"publish() while {state.value}")
        await publisher.send_offline(topic, payload, qos, retain, wait, properties)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every QoS 1/2 publish issued so far is acknowledged and the outbox is
        empty. Raises ``TimeoutError`` after ``timeout`` seconds, and
        :class:`~tars.mqtt.ClientStateError` before :meth:`connect` or after :meth:`shutdown`."""
        async with asyncio.timeout(timeout):
            while not self._publisher.flushed(self._session):
                if self._state in (ClientState.CLOSED, ClientState.CREATED):
                    raise ClientStateError(f"flush() while {self._state.value}")
                await self._publisher.wait_progress()

    async def publish_health(
        self, ok: bool, event: str | None = None, error: str | None = None
    ) -> str:
        """Publish a retained ``health.status`` envelope on ``system/health/{client_id}``, QoS 1."""
        cfg = self._config
        msg_id, payload = encode_health(ok, event, error, source=cfg.source, timestamp=time.time())
        await self.publish(health_topic(cfg.effective_client_id), payload, qos=1, retain=True)
        return msg_id

    # --- subscribing -------------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: Handler[ModelT],
        qos: int = 0,
        *,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Call ``handler`` for every message on ``topic`` (a filter; wildcards and
        ``$share/group/...`` allowed), from its own bounded queue.

        The handler is ``async def handler(payload: bytes)``, or takes a
        :class:`~tars.mqtt.Message`, an :class:`~tars.mqtt.Envelope` or a pydantic model (the
        envelope's data, validated) when its first parameter is annotated so. Per-subscription
        ``queue_size``, ``overflow``, ``concurrency`` and ``timeout`` default to the config's.
        Before :meth:`connect` the subscription is sent on connect. Subscribing a handler
        again on the same filter (``==``: the same function or bound method) is a no-op that
        returns the existing :class:`Subscription`, whose options stay those of the first call.

        Raises :class:`~tars.mqtt.InvalidTopicError`, ``TypeError`` (not an async handler, or
        its first parameter annotated with another type, such as ``str`` or ``dict``),
        ``ValueError`` (qos or options), :class:`~tars.mqtt.SubscribeError` (broker refused),
        :class:`~tars.mqtt.ClientStateError` (after shutdown).
        """
        validate_topic_filter(topic)
        if qos not in (0, 1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            raise ClientStateError(f"subscribe() while {self._state.value}")
        for existing in self._dispatcher.subscriptions(topic):
            if existing.handler == handler:
                # Already there (a reconnect loop subscribing again on the same client): a
                # second subscription would deliver every message twice.
                return existing
        cfg = self._config
        dedup = None
        if cfg.dedupe_ttl > 0:
            dedup = DedupWindow(cfg.dedupe_ttl, cfg.dedupe_max_entries)
        sub = Subscription(
            topic,
            handler,
            qos=qos,
            queue_size=queue_size if queue_size is not None else cfg.queue_size,
            overflow=overflow if overflow is not None else cfg.overflow,
            concurrency=concurrency if concurrency is not None else cfg.handler_concurrency,
            timeout=timeout if timeout is not None else cfg.handler_timeout,
            dedup=dedup,
            on_block=self._on_block,
        )
        before = self._dispatcher.filters.get(topic)
        self._dispatcher.add(sub)
        if self._state is not ClientState.CREATED:
            sub.start()
        if before is None or qos > before:  # else the broker's subscription already covers it
            try:
                # A live link, even one still restoring subscriptions: subscribe on it now.
                await self._subs.added(self._live_link(), topic, qos)
            except BaseException:
                self._dispatcher.remove(sub)
                await sub.stop()
                raise
        return sub

    async def unsubscribe(
        self, topic: str | Subscription, handler: Handler[Any] | None = None
    ) -> None:
        """Remove the subscriptions on ``topic`` (all, or only ``handler``'s), or one
        :class:`Subscription`; the broker is told when no handler is left on the filter."""
        if isinstance(topic, Subscription):
            subs = [topic]
        else:
            subs = [
                s
                for s in self._dispatcher.subscriptions(topic)
                if handler is None or s.handler == handler
            ]
        for sub in subs:
            emptied = self._dispatcher.remove(sub)
            await sub.stop()
            if emptied:
                # No link: a resumed (persistent) broker session would still hold the filter,
                # so the next link unsubscribes it (a fresh session has nothing to undo).
                await self._subs.removed(self._live_link(), sub.topic_filter)

    # --- internals: the supervisor -----------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, and reconnect with backoff whenever the link is lost, until shutdown.

        Nothing may kill this task but cancellation: an unexpected error while connecting or
        setting a link up is logged and retried like any failure, or the client would stay
        "reconnecting" forever.
        """
        assert self._first_connect is not None
        loop = asyncio.get_running_loop()
        attempt = 0
        cfg = self._config
        failed_in_round = 0  # consecutive failed attempts since a link was last up
        redirects = 0  # consecutive redirections followed (a loop of them is a failure)
        trouble = ConnectTrouble()
        while not self._closing():
            session = self._session
            assert session is not None
            params = self._params
            session.use_credentials(params.username, params.password)
            try:
                conn = await open_connection(
                    session,
                    params.host,
                    params.port,
                    listeners=self._listeners,
                    ssl_context=self._tls_context(),
                    connector=self._connector,
                    timeout=cfg.connect_timeout,
                    on_publish_done=self._on_publish_done,
                    display=params.redacted_url,
                )
            except Exception as exc:
                error = exc if isinstance(exc, ConnectError) else _unexpected(exc, params)
                reference = error.server_reference
                if reference and redirects < _MAX_REDIRECTS and self._follow_reference(reference):
                    redirects += 1
                    continue  # at once: the broker itself sent us there
                redirects = 0
                first = not self._first_connect.done()
                fatal = error.fatal or error.reason_code in _FATAL_CONNACK
                failed_in_round += 1
                self._next_endpoint()
                if first and not fatal and failed_in_round < len(self._endpoints):
                    continue  # several brokers: the first that answers wins, wait_for_broker or not
                if first and (fatal or not cfg.wait_for_broker):
                    self._first_connect.set_exception(error)
                    return
                delay = self._backoff.next_delay(attempt, refused=error.refused)
                attempt += 1
                if delay is None:
                    log.error("giving up connecting to %s: %s", params.redacted_url, error)
                    if first:
                        self._first_connect.set_exception(error)
                    self._spawn(self.shutdown(), "tars-mqtt-give-up")
                    return
                now = loop.time()
                if trouble.failed(now):
                    log.warning(
                        "%s cannot connect to %s (failed attempts: %d in %.0f s): %s; "
                        "retrying in %.2f s%s",
                        self.client_id,
                        params.redacted_url,
                        trouble.attempts,
                        trouble.seconds(now),
                        error,
                        delay,
                        _WAIT_HINT if first else "",
                    )
                else:
                    log.info("%s; retrying in %.2f s", error, delay)
                await asyncio.sleep(delay)
                continue
            up_at = loop.time()
            failed_in_round = 0
            try:
                up = await self._link_up(conn)
            except Exception:
                log.exception("unexpected error while setting up the link; reconnecting")
                self._conn = None
                up = False
            healed = trouble.connected(loop.time()) if up else None
            if healed is not None:
                log.info(
                    "%s connected to %s after failed attempts: %d in %.1f s",
                    self.client_id,
                    params.redacted_url,
                    healed.attempts,
                    healed.seconds,
                )
            if up:
                await conn.wait_closed()
                self._link_down(conn)
            else:  # lost while restoring subscriptions: let it end, then back off like any loss
                conn.abort()
                await conn.wait_closed()
            if self._closing():
                return  # shutdown() said goodbye on this link: no reconnecting behind its back
            if loop.time() - up_at > self._config.reconnect_max_delay:
                redirects = 0  # a link that lasted: its redirection starts no loop
            reference = conn.server_reference
            if reference and redirects < _MAX_REDIRECTS and self._follow_reference(reference):
                redirects += 1
                continue  # the broker sent us elsewhere: go now, no backoff
            self._next_endpoint()  # the next broker of the list (the same one when alone)
            # A broker that kicks us (DISCONNECT) soon after accepting us keeps the backoff
            # growing: a client id clash must not become a reconnect storm. A link lost to the
            # network or a broker restart starts the backoff afresh, so the client is back
            # within about a second of the broker, however many outages came before.
            kicked = conn.broker_disconnect_reason is not None
            if not kicked or loop.time() - up_at > self._config.reconnect_max_delay:
                attempt = 0
            delay = self._backoff.next_delay(attempt, refused=False)
            attempt += 1
            if delay is None:
                self._spawn(self.shutdown(), "tars-mqtt-give-up")
                return
            await asyncio.sleep(delay)

    def _next_endpoint(self) -> None:
        """Move on to the next broker of the list (in the order drawn at construction)."""
        self._endpoint = (self._endpoint + 1) % len(self._endpoints)
        self._params = self._endpoints[self._endpoint]

    def _follow_reference(self, reference: str) -> bool:
        """MQTT 5 server redirection: connect next to where ``reference`` points (same scheme
        and credentials). False when the reference cannot be read (logged)."""
        target = endpoint_from_reference(reference, self._params)
        if target is None:
            log.warning(
                "%s: %s redirected us to %r, which is not a usable broker address; ignored",
                self.client_id,
                self._params.redacted_url,
                reference,
            )
            return False
        log.warning(
            "%s: %s redirected us to %s (MQTT 5 server reference)",
            self.client_id,
            self._params.redacted_url,
            target.redacted_url,
        )
        self._params = target
        return True

    async def _link_up(self, conn: Connection) -> bool:
        """Restore subscriptions, flush the outbox, then open the client for business."""
        assert self._first_connect is not None
        cfg = self._config
        first = not self._first_connect.done()
        if self._closing():
            return False
        self._conn = conn
        session_present = bool(conn.connack is not None and conn.connack.session_present)
        try:
            await self._subs.restore(conn, fresh=not session_present or first)
        except ConnectionLostError:
            self._conn = None
            return False
        if self._closing() or not conn.is_connected:
            # Shutdown began while restoring, or the link ended (a DISCONNECT, a protocol
            # error) in the same read as the last SUBACK: the health publish and the outbox
            # flush below would be wrong or raise.
            self._conn = None
            return False
        if self._blocked:
            # Only now: paused before, the SUBACKs above could never be read while a handler
            # holds a full "block" queue, and the link would hang half-open until it catches up.
            conn.pause_reading()
        self._publisher.flush_outbox(conn)
        self._state = ClientState.CONNECTED
        self._connects += 1
        self._monitor.link_started(asyncio.get_running_loop().time())
        self._link_up_event.set()
        log.info(
            "%s connected to %s%s",
            cfg.effective_client_id,
            self._params.redacted_url,
            " (session resumed)" if session_present else "",
        )
        if cfg.enable_health:
            _, payload = encode_health(
                True,
                "ready" if first else "reconnected",
                None,
                source=cfg.source,
                timestamp=time.time(),
            )
            conn.publish_nowait(
                health_topic(cfg.effective_client_id), payload, qos=1, retain=True, wait=False
            )
        if first:
            self._first_connect.set_result(None)
        self._run_hooks(self._connect_hooks, "connect")
        if self._publisher.flushed(self._session):
            self._publisher.wake_flush()
        return True

    def _link_down(self, conn: Connection) -> None:
        self._conn = None
        self._link_up_event.clear()
        self._publisher.wake_flush()  # waiters re-check: a dead link settles nothing more
        if self._state is ClientState.CONNECTED:
            self._state = ClientState.RECONNECTING
            reason = conn.close_reason
            log.warning(
                "%s lost its link to %s: %s",
                self._config.effective_client_id,
                self._params.redacted_url,
                reason or "closed",
            )
            self._run_hooks(self._disconnect_hooks, "disconnect")

    def _on_publish_done(self, event: PublishDone) -> None:
        self._publisher.on_publish_done(event, self._session)

    def _stale(self, conn: Connection, why: str) -> None:
        """The monitor found the link dead: drop it (the broker sends our will) and reconnect."""
        self._stale_links += 1
        log.warning("%s: link to the broker is stale (%s); reconnecting", self.client_id, why)
        conn.abort(ConnectionLostError(f"stale link: {why}"))
        self._link_down(conn)

    def _live_link(self) -> Connection | None:
        """The current link while it is up, even while subscriptions are being restored."""
        conn = self._conn
        return conn if conn is not None and conn.is_connected else None

    def _closing(self) -> bool:
        return self._state is ClientState.CLOSING or self._state is ClientState.CLOSED

    # --- internals: misc ---------------------------------------------------------------------

    def _on_block(self, blocked: bool) -> None:
        self._blocked += 1 if blocked else -1
        # Only a link that is up: a new one is paused by _link_up once its subscriptions are
        # restored (pausing it here too would count twice, and one resume would not undo it).
        conn = self.client
        if conn is None:
            return
        if blocked and self._blocked == 1:
            conn.pause_reading()
        elif not blocked and self._blocked == 0:
            conn.resume_reading()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self._params.tls:
            return None
        if self._ssl_context is None:
            self._ssl_context = make_ssl_context(self._config)
        return self._ssl_context

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def _run_hooks(self, hooks: list[Hook], what: str) -> None:
        for hook in hooks:
            self._spawn(_guard(hook, what), f"tars-mqtt-hook:{what}")

    async def _say_goodbye(self, conn: Connection, timeout: float) -> None:
        """Last words on a live link: health ``shutdown``, pending acks, then DISCONNECT."""
        try:
            async with asyncio.timeout(timeout):
                if self._config.enable_health:
                    _, payload = encode_health(
                        False, "shutdown", None, source=self._config.source, timestamp=time.time()
                    )
                    await conn.publish(health_topic(self.client_id), payload, qos=1, retain=True)
                session = self._session
                while session is not None and session.unfinished_count and conn.is_connected:
                    await self._publisher.wait_progress()
        except (TimeoutError, MQTTError) as exc:
            log.debug("shutdown: could not finish pending work: %r", exc)
        await conn.disconnect(timeout=max(0.1, timeout / 2))

    async def _cancel_tasks(self, timeout: float) -> None:
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                log.error("task %s did not stop within %.1f s", task.get_name(), timeout)

    def _finish_close(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.abort()
        self._conn = None
        error = ClientStateError("the client was shut down")
        if self._session is not None:
            for handle in self._session.abandon():
                if isinstance(handle, asyncio.Future) and not handle.done():
                    handle.set_exception(error)
        if self._first_connect is not None and not self._first_connect.done():
            self._first_connect.set_exception(error)
            self._first_connect.exception()
        self._publisher.close(error)
        self._dispatcher.remove_internal(self._monitor.topic)
        self._link_up_event.clear()
        self._blocked = 0
        self._state = ClientState.CLOSED
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)


def _unexpected(exc: Exception, params: Any) -> ConnectError:
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
