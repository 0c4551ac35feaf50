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
import contextlib
import enum
import logging
import signal
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, Unpack

from mqtt5 import QoS, Will
from pydantic import BaseModel

from ._backoff import BackoffPolicy, ExponentialBackoff
from ._checks import PublishCheck
from ._config import MQTTClientConfig
from ._connection import Connector, MessageListener, settle
from ._dedup import DedupWindow
from ._dispatch import Dispatcher
from ._envelope import Envelope, encode_event
from ._errors import (
    ClientStateError,
    ConnectionLostError,
    MQTTError,
    NotConnectedError,
    SubscribeError,
)
from ._health import encode_health, encode_heartbeat, health_topic, keepalive_topic, will_payload
from ._linkview import LinkView
from ._liveness import Liveness
from ._message import Message
from ._options import ClientOptions
from ._requests import PendingRequests
from ._session import Session, WaitFor
from ._subscription import Handler, ModelT, Overflow, Subscription
from ._supervisor import Hook, Supervisor
from ._topics import validate_topic_filter, validate_topic_name

__all__ = ["ClientState", "ClientStats", "MQTTClient"]

log = logging.getLogger("tars.mqtt")

_SHUTDOWN_TIMEOUT: Final = 5.0
_PACKET_OVERHEAD: Final = 128 * 1024
_MQTT_MAX_PACKET: Final = 268_435_455 + 5


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
    no_subscribers: int = 0  # QoS 1/2 publishes the broker acknowledged with 0x10


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
            raise TypeError("pass either config= or mqtt_url/client_id/options, not both")
        self._config = cfg = config
        self._state = ClientState.CREATED
        self._session = session = _make_session(cfg)
        self._dispatcher = Dispatcher()
        self._listeners: list[MessageListener] = [self._dispatcher.on_packet]
        if cfg.enable_heartbeat:
            # Our own heartbeat coming back: the session's liveness noted it; nothing to deliver.
            topic = keepalive_topic(cfg.effective_client_id)
            self._dispatcher.add_internal(topic, session.subscription_id(topic) or 0, _ignore)
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
            tls_context=_tls_factory(cfg, ssl_context),
            connector=connector,
            connect_timeout=cfg.connect_timeout,
            wait_for_broker=cfg.wait_for_broker,
            settle_after=cfg.reconnect_max_delay,
            connect_hooks=self._connect_hooks,
            disconnect_hooks=self._disconnect_hooks,
        )
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
        session = self._session
        if self._state is ClientState.CLOSED:
            session.restart()
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
            fut = asyncio.get_running_loop().create_future()
            sid, sent = self._session.add_internal(response_topic, handle=fut)
            self._dispatcher.add_internal(response_topic, sid, requests.on_answer)
            if sent:
                self._supervisor.flush_soon()
                # Lost meanwhile: the next link subscribes every internal topic anyway.
                with contextlib.suppress(ConnectionLostError):
                    await fut
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
            raise ValueError("the request has no response topic: pass topic=")
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
        payload = self._check(topic, payload, qos, properties)
        self._require_running("publish")
        session = self._session
        fut: asyncio.Future[int] | None = None
        if qos:
            if not wait and session.at_capacity:
                # Bounds the memory of publishes nobody awaits when the broker is slower than
                # the producer: the producer is slowed down instead.
                await self._wait_for(WaitFor.CAPACITY)
            if not session.has_room(len(payload)) and self._config.outbox_policy == "block":
                await self._wait_for(WaitFor.ROOM, len(payload))
                self._require_running("publish")
            if wait:
                fut = asyncio.get_running_loop().create_future()
        events = session.publish(
            topic,
            payload,
            qos,
            retain,
            handle=fut,
            properties=properties,
            now=asyncio.get_running_loop().time(),  # linked too: it starts the ack clock
        )
        if events:
            settle(events)
        current = self._supervisor.current
        if current is not None:
            current.flush_soon()
            if current.write_paused:
                # Handed over already: a QoS 1/2 message is resent on the next link, and a
                # QoS 0 one is at most once anyway. Losing the link here is not an error.
                with contextlib.suppress(ConnectionLostError):
                    await current.drain()
        if fut is not None:
            await fut

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every QoS 1/2 publish issued so far is acknowledged and the outbox is
        empty. Raises ``TimeoutError`` after ``timeout`` seconds, and
        :class:`~tars.mqtt.ClientStateError` before :meth:`connect` or after :meth:`shutdown`."""
        if self._state in (ClientState.CLOSED, ClientState.CREATED):
            raise ClientStateError(f"flush() while {self._state.value}")
        async with asyncio.timeout(timeout):
            await self._wait_for(WaitFor.FLUSHED)

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
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            raise ClientStateError(f"subscribe() while {self._state.value}")
        for existing in self._dispatcher.subscriptions(topic):
            if existing.handler == handler:
                # Already there (a reconnect loop subscribing again on the same client): a
                # second subscription would deliver every message twice.
                return existing
        cfg = self._config
        sup = self._supervisor
        sub = Subscription(
            topic,
            handler,
            qos=qos,
            queue_size=queue_size if queue_size is not None else cfg.queue_size,
            overflow=overflow if overflow is not None else cfg.overflow,
            concurrency=concurrency if concurrency is not None else cfg.handler_concurrency,
            timeout=timeout if timeout is not None else cfg.handler_timeout,
            dedup=DedupWindow(cfg.dedupe_ttl, cfg.dedupe_max_entries)
            if cfg.dedupe_ttl > 0
            else None,
            pause=sup.pause_reading,
            resume=sup.resume_reading,
        )
        session = self._session
        fut = asyncio.get_running_loop().create_future()
        sent = session.add_subscription(topic, qos, handle=fut)  # refusals announced: raises
        self._dispatcher.add(sub, session.subscription_id(topic))
        if self._state is not ClientState.CREATED:
            sub.start()
        if not sent:  # the broker holds it already, or the next link's restore sends it
            return sub
        sup.flush_soon()
        try:
            codes: tuple[int, ...] = await fut
        except ConnectionLostError:
            return sub  # the link flapped under us: like subscribing while offline
        except BaseException:
            await self._undo(sub)
            raise
        if codes and codes[0] >= 0x80:
            await self._undo(sub)
            raise SubscribeError(topic, codes[0])
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
            if not self._dispatcher.remove(sub) and sub in self._dispatcher.subscriptions():
                continue
            await sub.stop()
            fut = asyncio.get_running_loop().create_future()
            # No link: a resumed (persistent) broker session would still hold the filter, so
            # the session unsubscribes it on the next link (a fresh session has nothing).
            if self._session.remove_subscription(sub.topic_filter, sub.qos, handle=fut):
                self._supervisor.flush_soon()
                with contextlib.suppress(ConnectionLostError):
                    await fut

    # --- internals -----------------------------------------------------------------------------

    async def _run(self) -> None:
        """The supervisor's task; when its policy gives up, the client shuts down."""
        error = await self._supervisor.run()
        if error is not None and self._state is ClientState.CONNECTING:
            await self.shutdown()

    async def _wait_for(self, what: WaitFor, size: int = 0) -> None:
        """Wait until the session settles ``what`` (or shutdown fails the wait)."""
        fut = asyncio.get_running_loop().create_future()
        if not self._session.wait(fut, what, size):
            return
        try:
            await fut
        finally:
            self._session.forget_waiter(fut)

    async def _undo(self, sub: Subscription) -> None:
        self._dispatcher.remove(sub)
        self._session.remove_subscription(sub.topic_filter, sub.qos)
        self._supervisor.flush_soon()
        await sub.stop()

    def _require_running(self, what: str) -> None:
        state = self._state
        if state is ClientState.CREATED:
            raise NotConnectedError(f"{what}() before connect()")
        if state is not ClientState.CONNECTING:
            raise ClientStateError(f"{what}() while {state.value}")

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


def _make_session(cfg: MQTTClientConfig) -> Session:
    """The client's one session, for its whole life (every link, every connect())."""
    client_id = cfg.effective_client_id
    heartbeat = None
    if cfg.enable_heartbeat:
        heartbeat = (keepalive_topic(client_id), lambda: encode_heartbeat(time.time()))
    announce = None
    if cfg.enable_health:

        def announce(first: bool) -> tuple[str, bytes]:
            event = "ready" if first else "reconnected"
            _, payload = encode_health(True, event, None, source=cfg.source, timestamp=time.time())
            return health_topic(client_id), payload

    return Session(
        client_id,
        keep_alive=cfg.keepalive,
        clean_start=cfg.clean_start,
        session_expiry_interval=cfg.session_expiry_interval,
        receive_maximum=cfg.receive_maximum,
        # The broker must not send us more (MQTT 5 Maximum Packet Size): room for the largest
        # accepted payload plus the longest topic and generous properties.
        max_packet_size=min(cfg.max_payload_size + _PACKET_OVERHEAD, _MQTT_MAX_PACKET),
        outbox_max_messages=cfg.outbox_max_messages,
        outbox_max_bytes=cfg.outbox_max_bytes,
        outbox_ttl=cfg.outbox_message_ttl,
        outbox_policy=cfg.outbox_policy,
        queue_qos0_offline=cfg.queue_qos0_offline,
        liveness=Liveness(
            heartbeat_interval=cfg.heartbeat_interval if cfg.enable_heartbeat else None,
            missed=cfg.watchdog_missed_heartbeats,
            publish_timeout=cfg.publish_timeout,
        ),
        heartbeat=heartbeat,
        announce=announce,
    )


def _tls_factory(
    cfg: MQTTClientConfig, given: ssl.SSLContext | None
) -> Callable[[], ssl.SSLContext]:
    """The TLS context of ``mqtts://`` links: the one given, or one built from the config on
    first use (and kept)."""
    made: list[ssl.SSLContext] = [given] if given is not None else []

    def get() -> ssl.SSLContext:
        if not made:
            ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
            if cfg.tls_insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            made.append(ctx)
        return made[0]

    return get


def _ignore(msg: Message) -> None:
    """The internal consumer of our own heartbeat (the session's liveness already saw it)."""
