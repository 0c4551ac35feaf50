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

One class with one ``__init__`` that sets every field (httpx's ``Client``): the methods below
share its state, grouped by section (lifecycle, publish, events/request/reply/health,
subscribe, run), rather than split into mixins that would declare each other's attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, Unpack

from mqtt5 import QoS, Will

from ._argcheck import (
    check_bool,
    check_callable,
    check_int,
    check_number,
    check_str,
    check_type,
    wrong_type,
)
from ._assembly import ignore, make_session, tls_factory
from ._asyncio.acks import Acks
from ._asyncio.connection import Connector, MessageListener, settle
from ._asyncio.dispatch import Dispatcher
from ._asyncio.linkview import LinkView
from ._asyncio.retained import CHECK_SUBSCRIPTION_TOPIC, RetainedRestore, check_subscription_id
from ._asyncio.subscription import Handler, ModelT, Overflow, Subscription
from ._asyncio.supervisor import Hook, Supervisor
from ._backoff import BackoffPolicy, ExponentialBackoff
from ._checks import PublishCheck
from ._client_state import ClientState, ClientStats
from ._config import MQTTClientConfig
from ._core.protocol import MQTT311
from ._core.session import WaitFor
from ._dedup import DedupWindow
from ._envelope import Envelope, encode_event
from ._errors import (
    ClientStateError,
    ConnectionLostError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MQTTError,
    NotConnectedError,
    PoisonMessageError,
    SubscribeError,
)
from ._health import encode_health, health_topic, keepalive_topic, will_payload
from ._instruments import Instruments
from ._message import Message
from ._requests import PendingRequests, reply_to_of, with_reply_to
from ._retained import RetainedMemory
from ._topics import validate_topic_filter, validate_topic_name

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ._instrument import Instrument
    from ._options import ClientOptions  # a TypedDict: for type checkers only

__all__ = ["ClientState", "ClientStats", "MQTTClient"]

log = logging.getLogger("tars.mqtt")

_SHUTDOWN_TIMEOUT: Final = 5.0


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
        check_type("config", config, MQTTClientConfig, optional=True)
        if backoff is not None and not callable(getattr(backoff, "next_delay", None)):
            raise wrong_type("backoff", backoff, "a BackoffPolicy (with next_delay()) or None")
        check_type("ssl_context", ssl_context, ssl.SSLContext, optional=True)
        check_callable("connector", connector, optional=True)
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
        self._source = cfg.source  # the config is frozen: read once, not per event
        self._loop: asyncio.AbstractEventLoop | None = None  # connect()'s
        self._connect_hooks: list[Hook] = []
        self._disconnect_hooks: list[Hook] = []
        self._supervisor = Supervisor(
            session,
            cfg.ordered_endpoints(),  # the brokers in the order this client tries them
            listeners=self._listeners,
            filter_listener=self._filter_given_up,
            backoff=backoff
            or ExponentialBackoff(
                min_delay=cfg.reconnect_min_delay, max_delay=cfg.reconnect_max_delay
            ),
            tls_context=tls_factory(cfg, ssl_context),
            connector=connector,
            connect_timeout=cfg.connect_timeout,
            protocol=cfg.protocol,
            wait_for_broker=cfg.wait_for_broker,
            redirects=cfg.redirects,
            settle_after=cfg.reconnect_max_delay,
            connect_hooks=self._connect_hooks,
            disconnect_hooks=self._disconnect_hooks,
            instruments=self._instruments,
            ws_headers=cfg.ws_headers,
        )
        self._acks = Acks(
            session,
            self._supervisor,
            client_id=cfg.effective_client_id,
            on_health=self._backlog_health if cfg.enable_health else None,
        )
        self._dispatcher = Dispatcher(self._acks)
        self._listeners.append(self._dispatcher.on_packet)
        self._ending: set[asyncio.Task[None]] = set()  # subscriptions a verdict is stopping
        if cfg.enable_heartbeat:
            # Our own heartbeat coming back: the session's liveness noted it; nothing to deliver.
            topic = keepalive_topic(cfg.effective_client_id)
            self._dispatcher.add_internal(topic, session.subscription_id(topic) or 0, ignore)
        # What the service published retained, put back after a broker lost it (issue 20).
        self._retained: RetainedMemory | None = None
        if cfg.republish_retained:
            self._retained = RetainedMemory()
            self._connect_hooks.append(
                RetainedRestore(
                    self._retained,
                    session,
                    lambda: self._supervisor.link,
                    self._listeners,
                    self._republish_retained,
                )
            )
            self._dispatcher.add_internal(CHECK_SUBSCRIPTION_TOPIC, check_subscription_id(), ignore)
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

        Raises :class:`~tars.mqtt.ConfigError` naming the variable at fault, and
        :class:`~tars.mqtt.InvalidArgumentTypeError` when ``env`` is not a mapping.
        """
        check_type("env", env, Mapping, optional=True)
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
        counts, outgoing = session.stats, session.outgoing.store
        return ClientStats(
            published=counts.published,
            publish_failed=counts.publish_failed,
            dropped_offline=counts.dropped_offline,
            outbox_dropped=outgoing.dropped,
            outbox_expired=outgoing.expired,
            unmatched=self._dispatcher.unmatched + session.incoming.discarded,
            connects=self._supervisor.connects,
            stale_links=counts.stale_links,
            outbox_depth=outgoing.offline_count,
            inflight=session.inflight_count,
            no_subscribers=counts.no_subscribers,
            receive_maximum_exceeded=counts.receive_maximum_exceeded,
            unrouted=session.incoming.waiting,
            unrouted_overdue=session.incoming.overdue,
            properties_dropped=counts.properties_dropped,
            redirects_refused=self._supervisor.redirects_refused,
            poisoned=counts.poisoned,
            qos2_downgraded=counts.qos2_downgraded,
            **totals,
        )

    # --- hooks -------------------------------------------------------------------------------

    def on_connect(self, hook: Hook) -> Hook:
        """Register ``async def hook() -> None``, run after every (re)connection (a decorator)."""
        check_callable("hook", hook)
        self._connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: Hook) -> Hook:
        """Register ``async def hook() -> None`` run after every lost link."""
        check_callable("hook", hook)
        self._disconnect_hooks.append(hook)
        return hook

    def add_instrument(self, instrument: Instrument) -> Callable[[], None]:
        """Tell ``instrument`` (a :class:`~tars.mqtt.Instrument`) about every publish, handler
        call and link change from now on; returns a function that removes it.

        Raises :class:`~tars.mqtt.InvalidArgumentTypeError` when it is not an ``Instrument``.
        """
        return self._instruments.add(instrument)

    def add_message_listener(self, listener: MessageListener) -> Callable[[], None]:
        """Call ``listener(packet)`` synchronously for every PUBLISH received (raw
        ``mqtt5.PublishPacket``); returns a function that removes it. Keep it fast."""
        check_callable("listener", listener)
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
            if self._retained is not None:
                self._retained.clear()  # a new life: what the last one published is not ours
        session.open_journal()  # the durable outbox: what an earlier run left goes first
        if cfg.enable_health:
            session.will = Will(
                health_topic(cfg.effective_client_id),
                payload=will_payload(source=cfg.source, timestamp=time.time()),
                qos=QoS.AT_LEAST_ONCE,
                retain=True,
            )
        self._state = ClientState.CONNECTING
        self._loop = loop  # the publish path's: asyncio.get_running_loop() costs a getpid()
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
        cancelled. Idempotent, returns within about ``timeout`` seconds; raises nothing but
        :class:`~tars.mqtt.InvalidArgumentTypeError` for a ``timeout`` that is not a number."""
        check_number("timeout", timeout)
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
            if self._ending:  # subscriptions whose filter was given up, still stopping
                await asyncio.wait(self._ending, timeout=max(0.1, deadline - loop.time()))
        except Exception:  # shutdown never raises: log and finish the job
            log.exception("error during shutdown of %s", self.client_id)
        finally:
            self._finish_close()

    async def disconnect(self) -> None:
        """Same as :meth:`shutdown` (kept for code written against paho-style clients)."""
        await self.shutdown()

    # --- publish -----------------------------------------------------------------------------
    #
    # A publish goes client -> session -> connection: checked once (:mod:`._checks`), handed
    # to the session (which sends it, queues it for the Receive Maximum, or keeps it in the
    # outbox while no link is up), written by the current link at the end of the loop turn;
    # the caller awaits the future the session's event resolves.

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
        ``queue_qos0_offline``) go to the outbox; QoS 0 is otherwise dropped and counted. With
        ``outbox_path``, an offline QoS 1/2 message is on disk (fsynced) when this returns.
        ``properties``: the MQTT 5 PUBLISH properties a caller may set
        (``payload_format_indicator``, ``message_expiry_interval``, ``content_type``,
        ``response_topic``, ``correlation_data``, ``user_properties``).

        Raises :class:`~tars.mqtt.InvalidTopicError`, :class:`~tars.mqtt.PayloadTooLarge`,
        :class:`~tars.mqtt.InvalidArgumentTypeError` (a wrong type, or a key of
        ``properties`` a caller may not set), ``ValueError`` (qos),
        :class:`~tars.mqtt.NotConnectedError` (before :meth:`connect`),
        :class:`~tars.mqtt.ClientStateError` (after :meth:`shutdown`),
        :class:`~tars.mqtt.OutboxFullError` (policy ``raise``, or the durable outbox cannot
        write to its disk),
        :class:`~tars.mqtt.PublishError` (the broker refused it).
        """
        if self._instruments:  # observers (tars.mqtt._instrument) around the same call
            await self._instruments.publish(
                self._publish, topic, payload, qos, retain, wait, properties
            )
        else:
            await self._publish(
                topic, payload, qos=qos, retain=retain, wait=wait, properties=properties
            )

    async def _publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool,
        wait: bool,
        properties: dict[str, Any] | None,
    ) -> None:
        payload = self._check(topic, payload, qos, properties, retain, wait)
        self._require_running("publish")
        session = self._session
        loop = self._loop
        assert loop is not None  # set by connect(), which _require_running() vouches for
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
                fut = loop.create_future()
        if qos or not session.linked:
            # Dates an offline record (TTL) and starts a QoS 1/2 publish's ack clock.
            now = loop.time()
            events = session.publish(
                topic, payload, qos, retain, handle=fut, properties=properties, now=now
            )
            if events:
                settle(events)
        else:  # QoS 0 on a link: written, or raises; it ends nothing
            session.publish(topic, payload, 0, retain, properties=properties)
        if retain and self._retained is not None:  # accepted: the service's state now
            self._retained.note(topic, payload, qos, properties)
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
        check_number("timeout", timeout, optional=True)
        if self._state in (ClientState.CLOSED, ClientState.CREATED):
            raise ClientStateError(f"flush() while {self._state.value}")
        async with asyncio.timeout(timeout):
            await self._wait_for(WaitFor.FLUSHED)

    async def _wait_for(self, what: WaitFor, size: int = 0) -> None:
        """Wait until the session settles ``what`` (or shutdown fails the wait)."""
        fut = asyncio.get_running_loop().create_future()
        if not self._session.wait(fut, what, size):
            return
        try:
            await fut
        finally:
            self._session.forget_waiter(fut)

    def _require_running(self, what: str) -> None:
        state = self._state
        if state is ClientState.CREATED:
            raise NotConnectedError(f"{what}() before connect()")
        if state is not ClientState.CONNECTING:
            raise ClientStateError(f"{what}() while {state.value}")

    # --- events, request/reply, health -------------------------------------------------------
    #
    # Built on publish(): they add only what the fleet's envelopes need (an id, a
    # ``correlate``, the original fleet's answer format).

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
                event_type, data, source=self._source, correlate=correlation_id
            )
        if (
            self._instruments
            or type(self).publish is not _PUBLISH  # a subclass's, or a patched one
            or "publish" in self.__dict__  # patched on this client
        ):
            await self.publish(topic, payload, qos=qos, retain=retain, wait=wait)
        else:  # the same call, one coroutine frame fewer per event (issue 18)
            await self._publish(topic, payload, qos=qos, retain=retain, wait=wait, properties=None)
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
        :meth:`reply`; on an MQTT 3.1.1 link, which has no properties, the envelope carries
        ``reply_to`` instead (not with ``correlation_format="original"``: the original client
        refuses unknown envelope keys). The correlation is registered before the request
        leaves, so an answer can never arrive "too early".

        Use one response topic per service (e.g. ``"stt/answers"``): each distinct response
        topic stays subscribed for the client's life.

        Raises ``TimeoutError`` after ``timeout`` seconds, plus what :meth:`publish` raises.
        """
        check_str("response_topic", response_topic)
        validate_topic_name(response_topic)
        check_int("qos", qos)
        check_number("timeout", timeout)
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
        properties: dict[str, Any] | None = {
            "response_topic": response_topic,
            "correlation_data": msg_id.encode(),
        }
        if self._session.protocol_level == MQTT311:
            # MQTT 3.1.1 has no properties: the envelope says where to answer (docs/mqtt311.md).
            properties = None
            if self._config.correlation_format == "native":
                payload = with_reply_to(payload, response_topic)
        answer = requests.expect(msg_id)
        try:
            async with asyncio.timeout(timeout):
                await self.publish(topic, payload, qos=qos, properties=properties)
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

        On MQTT 3.1.1, which has no response topic property, :meth:`request` writes the
        response topic into the envelope as ``reply_to``, and the answer goes there.

        A request that came without MQTT 5 correlation data (nor ``reply_to``) was not sent by
        :meth:`request`
        (the fleet's original client cannot send any): the answer is then written in the
        original format, which such a requester understands: no ``correlate``, and the
        request's id as its own id. So is every answer with ``correlation_format="original"``.

        Raises :class:`~tars.mqtt.EnvelopeError` when the request is not an envelope and
        ``ValueError`` when there is no topic to answer on.
        """
        check_type("request", request, Message)
        check_str("topic", topic, optional=True)
        check_int("qos", qos, optional=True)
        packet = request.packet
        # An MQTT 3.1.1 request carries its response topic in the envelope (``reply_to``).
        via_envelope = None if packet.response_topic else reply_to_of(request.payload)
        target = topic or packet.response_topic or via_envelope
        if not target:
            raise InvalidArgumentError("the request has no response topic: pass topic=")
        request_id = request.envelope.id
        qos = request.qos if qos is None else qos
        native = packet.correlation_data is not None or via_envelope is not None
        if not native or self._config.correlation_format == "original":
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, msg_id=request_id
            )
            await self.publish(target, payload, qos=qos)
            return msg_id
        return await self.publish_event(
            target, event_type, data, correlation_id=request_id, qos=qos
        )

    async def publish_health(
        self, ok: bool, event: str | None = None, error: str | None = None
    ) -> str:
        """Publish a retained ``health.status`` envelope on ``system/health/{client_id}``, QoS 1."""
        check_bool("ok", ok)
        check_str("event", event, optional=True)
        check_str("error", error, optional=True)
        cfg = self._config
        msg_id, payload = encode_health(ok, event, error, source=cfg.source, timestamp=time.time())
        await self.publish(health_topic(cfg.effective_client_id), payload, qos=1, retain=True)
        return msg_id

    # --- subscribe ---------------------------------------------------------------------------
    #
    # A subscription is two things: a Subscription (handler, queue, worker), routed to by the
    # dispatcher, and one entry of the session's table (filter, QoS, identifier), which the
    # broker is told about now or by the next link's restore.

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
        :class:`~tars.mqtt.PoisonMessageError` (also a ``SubscribeError``: the poison-message
        breaker gave the filter up while this call awaited its SUBACK),
        :class:`~tars.mqtt.ClientStateError` (after shutdown). A link lost before the SUBACK is
        no error: the next link's restore sends the filter again, and if the breaker gives it
        up later, the returned subscription's :attr:`~tars.mqtt.Subscription.error` says so.
        """
        validate_topic_filter(topic)
        check_callable("handler", handler)
        check_int("qos", qos)
        check_int("queue_size", queue_size, optional=True)
        check_str("overflow", overflow, optional=True)
        check_int("concurrency", concurrency, optional=True)
        check_number("timeout", timeout, optional=True)
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
            done=self._acks.done,
        )
        sub._instruments = self._instruments  # the instruments see its handler calls
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
        except PoisonMessageError:
            raise  # the verdict ended the subscription already (_filter_given_up)
        except BaseException:
            await self._undo(sub)
            raise
        if codes and codes[0] >= 0x80:
            refusal = SubscribeError(topic, codes[0])
            await self._undo(sub, refusal)
            raise refusal
        return sub

    async def unsubscribe(
        self, topic: str | Subscription, handler: Handler[Any] | None = None
    ) -> None:
        """Remove the subscriptions on ``topic`` (all, or only ``handler``'s), or one
        :class:`Subscription`; the broker is told when no handler is left on the filter.

        Raises :class:`~tars.mqtt.InvalidTopicError` for a filter that breaks the MQTT rules."""
        if isinstance(topic, Subscription):
            subs = [topic]
        else:
            validate_topic_filter(topic)  # a filter that could never have been subscribed
            check_callable("handler", handler, optional=True)
            subs = [
                s
                for s in self._dispatcher.subscriptions(topic)
                if handler is None or s.handler == handler
            ]
        for sub in subs:
            if sub.error is not None:
                continue  # ended already (refused, or given up): nothing of it left to remove
            if sub not in self._dispatcher.subscriptions(sub.topic_filter):
                continue  # unsubscribed already: its count on the filter is gone with it
            self._dispatcher.remove(sub)
            await sub.stop()
            fut = asyncio.get_running_loop().create_future()
            # No link: a resumed (persistent) broker session would still hold the filter, so
            # the session unsubscribes it on the next link (a fresh session has nothing).
            if self._session.remove_subscription(sub.topic_filter, sub.qos, handle=fut):
                self._supervisor.flush_soon()
                with contextlib.suppress(ConnectionLostError):
                    await fut

    async def _undo(self, sub: Subscription, error: MQTTError | None = None) -> None:
        """A subscribe() that failed: take back what it added, unless an unsubscribe() took
        it back already (its count on the filter is gone: another subscription's is not)."""
        if sub not in self._dispatcher.subscriptions(sub.topic_filter):
            await sub.stop()  # unsubscribed meanwhile: ended by its user, error stays None
            return
        self._dispatcher.remove(sub)
        self._session.remove_subscription(sub.topic_filter, sub.qos)
        self._supervisor.flush_soon()
        await sub.stop(error=error)

    def _filter_given_up(self, topic_filter: str, error: MQTTError) -> None:
        """The session gave ``topic_filter`` up (the poison-message breaker; it left the table,
        and the subscribe() calls awaiting its SUBACK fail with ``error``): its subscriptions
        get no more messages, end with ``error`` (said at once) and stop their workers in tasks
        the client owns until shutdown (the verdict comes as a link ends: the acknowledgements
        of what they held are void, as at any link loss)."""
        for sub in self._dispatcher.subscriptions(topic_filter):
            self._dispatcher.remove(sub)
            sub.ended(error)  # said now: a woken subscribe() caller may look at once
            task = asyncio.get_running_loop().create_task(
                sub.stop(error=error), name=f"tars-mqtt-sub-end:{topic_filter}"
            )
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    # --- run ---------------------------------------------------------------------------------
    #
    # Every service ends its main() with run_forever(), so SIGINT and SIGTERM shut every
    # service down gracefully, whoever wrote it.

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
        still shuts down when cancelled (Ctrl-C under ``asyncio.run``). Raises
        :class:`~tars.mqtt.InvalidArgumentTypeError` when ``signals`` is not a sequence of
        signal numbers (before anything is installed), and what :meth:`connect` raises.
        """
        signals = _signal_numbers(signals)
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

    # --- internals -------------------------------------------------------------------------

    async def _run(self) -> None:
        """The supervisor's task; when its policy gives up, the client shuts down."""
        error = await self._supervisor.run()
        if error is not None and self._state is ClientState.CONNECTING:
            await self.shutdown()

    def _backlog_health(self, degraded: bool, why: str | None) -> None:
        """Received messages wait too long for a subscription (or no longer): say it in the
        retained health status, as a QoS 1 publish of the session like any other."""
        if degraded:
            ok, event = False, "degraded"
            why = f"{why}: subscribe() before connect(), or set unrouted_timeout"
        else:
            ok, event = True, "recovered"
        _, payload = encode_health(
            ok, event, why, source=self._config.source, timestamp=time.time()
        )
        now = asyncio.get_running_loop().time()
        settle(self._session.publish(health_topic(self.client_id), payload, 1, True, now=now))
        self._supervisor.flush_soon()

    async def _republish_retained(
        self, topic: str, payload: bytes, qos: int, properties: dict[str, Any] | None
    ) -> None:
        """The retained restore's way out: an ordinary publish (checks, outbox, stats)."""
        await self._publish(topic, payload, qos=qos, retain=True, wait=False, properties=properties)

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


_PUBLISH: Final = MQTTClient.publish
"""publish() as defined here: publish_event() calls _publish() itself only while this is the
publish() a client would run (no subclass, patch or instrument would miss an event)."""


def _signal_numbers(signals: object) -> tuple[int, ...]:
    """``signals`` as a tuple of ints (``signal.Signals`` included), or the typed error: a bare
    ``TypeError`` from the loop would come after some handlers were installed."""
    if isinstance(signals, str | bytes) or not isinstance(signals, Iterable):
        raise wrong_type("signals", signals, "a sequence of signal numbers")
    numbers = tuple(signals)
    for signum in numbers:
        if not isinstance(signum, int):
            raise wrong_type("each item of signals", signum, "a signal number (an int)")
    return numbers
