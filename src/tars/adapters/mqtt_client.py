"""Drop-in for the fleet's original client: ``from tars.adapters.mqtt_client import MQTTClient``.

A service written against the original ``tars.adapters.mqtt_client`` runs on tars-core with not
one line changed: the same names, signatures and wire format (envelopes ``{id, type, ts,
source, data}``, correlation carried in ``id``, health ``{message_id, ok, event, err,
timestamp}``). Underneath, :class:`MQTTClient` is composed over :class:`tars.mqtt.MQTTClient`,
so the service also gets what tars-core adds: reconnection with backoff and resubscription, the
outbox (no QoS 1 message lost across a reconnect), the heartbeat watchdog and the health will.
docs/migration-original.md lists every behaviour difference and how to move on to
:mod:`tars.mqtt`.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from tars.mqtt import ClientState, ConnectError, Message, Subscription
from tars.mqtt import MQTTClient as NativeClient
from tars.mqtt import MQTTClientConfig as NativeConfig

from ._models import (
    ConnectionParams,
    DropInNotConnectedError,
    Envelope,
    HealthPing,
    HeartbeatPayload,
    MessageDeduplicator,
    MQTTClientConfig,
    SubscriptionHandler,
    parse_mqtt_url,
)
from ._view import ClientView, _as_runtime_error

__all__ = [
    "BrokerUnavailableError",
    "ConnectionParams",
    "DropInNotConnectedError",
    "Envelope",
    "HealthPing",
    "HeartbeatPayload",
    "MQTTClient",
    "MQTTClientConfig",
    "MessageDeduplicator",
    "SubscriptionHandler",
    "parse_mqtt_url",
]

logger = logging.getLogger(__name__)

_HEALTH_TYPE = "health.status"


class BrokerUnavailableError(ConnectError, ConnectionError):
    """``connect()`` could not reach the broker (the original raised at once too, and its
    services retry in their own loop). Also a builtin ``ConnectionError``."""


class _Route:
    """The handler currently registered on one filter: ``subscribe`` again replaces it
    without touching the broker, as the original's per-filter handler table did."""

    def __init__(self, handler: SubscriptionHandler) -> None:
        self.handler = handler
        self.retired = False

    async def __call__(self, message: Message) -> None:
        if not self.retired:
            await self.handler(message.payload)


class MQTTClient:
    """The original client's API over :class:`tars.mqtt.MQTTClient`.

    ``connect()`` is idempotent and fails fast (:class:`BrokerUnavailableError`) when the
    broker cannot be reached; once connected, a lost link is repaired underneath (reconnect,
    resubscribe, outbox) and ``wait_for_disconnect()`` keeps waiting.
    """

    def __init__(
        self,
        mqtt_url: str,
        client_id: str,
        source_name: str | None = None,
        *,
        keepalive: int = 60,
        enable_health: bool = False,
        enable_heartbeat: bool = False,
        heartbeat_interval: float = 5.0,
        dedupe_ttl: float = 0.0,
        dedupe_max_entries: int = 0,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """Check the options as the original did.

        Raises:
            ValueError: an option is out of bounds, or the URL's scheme is not ``mqtt``.
        """
        self._config = MQTTClientConfig(
            mqtt_url=mqtt_url,
            client_id=client_id,
            source_name=source_name,
            keepalive=keepalive,
            enable_health=enable_health,
            enable_heartbeat=enable_heartbeat,
            heartbeat_interval=heartbeat_interval,
            dedupe_ttl=dedupe_ttl,
            dedupe_max_entries=dedupe_max_entries,
            reconnect_min_delay=reconnect_min_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self._conn_params = parse_mqtt_url(mqtt_url)
        self._source_name = source_name or client_id
        cfg = self._config
        self._native = NativeClient(
            config=NativeConfig(
                mqtt_url=self._conn_params.url(),
                client_id=client_id,
                source_name=source_name,
                keepalive=cfg.keepalive,
                enable_health=cfg.enable_health,
                enable_heartbeat=cfg.enable_heartbeat,
                heartbeat_interval=float(cfg.heartbeat_interval),
                dedupe_ttl=float(cfg.dedupe_ttl),
                dedupe_max_entries=cfg.dedupe_max_entries,
                reconnect_min_delay=float(cfg.reconnect_min_delay),
                reconnect_max_delay=float(cfg.reconnect_max_delay),
                wait_for_broker=False,  # the original's connect() failed fast
                correlation_format="original",
            )
        )
        self._view = ClientView(self._native)
        self._routes: dict[str, tuple[_Route, Subscription]] = {}
        self._connecting: asyncio.Task[None] | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"<drop-in MQTTClient over {self._native!r}>"

    # --- properties --------------------------------------------------------------------------

    @property
    def client(self) -> ClientView | None:
        """The asyncio-mqtt-like client (``publish``, ``subscribe``, ``messages()``,
        ``filtered_messages()``): one object from ``connect()`` to ``shutdown()``, across
        reconnects; None before ``connect()`` and after ``shutdown()``."""
        return None if self._idle() else self._view

    @property
    def connected(self) -> bool:
        """True while a link to the broker is up."""
        return self._native.connected

    @property
    def native(self) -> NativeClient:
        """The :class:`tars.mqtt.MQTTClient` underneath, for code moving to the native API."""
        return self._native

    async def __aenter__(self) -> MQTTClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    # --- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect; a no-op when already connected or reconnecting (a concurrent call waits
        for the same attempt).

        Raises:
            BrokerUnavailableError: the broker could not be reached or refused the session.
        """
        if self._connecting is not None and not self._connecting.done():
            await asyncio.shield(self._connecting)
            return
        if not self._idle():
            logger.debug("Already connected, skipping connect()")
            return
        self._stopping = False
        self._connecting = asyncio.get_running_loop().create_task(
            self._native.connect(), name="tars-drop-in-connect"
        )
        try:
            await asyncio.shield(self._connecting)
        except ConnectError as exc:
            raise BrokerUnavailableError(str(exc), reason_code=exc.reason_code) from exc

    async def wait_for_disconnect(self) -> None:
        """Serve until the client is shut down; lost links are repaired underneath.

        Raises:
            DropInNotConnectedError: ``connect()`` was never called.
            BrokerUnavailableError: the client closed without ``shutdown()`` (it gave up),
                so the service's own reconnect loop takes over, as with the original.
        """
        if self._native.state is ClientState.CREATED:
            raise DropInNotConnectedError("Not connected - call connect() first")
        await self._native.wait_for_disconnect()
        if not self._stopping:
            raise BrokerUnavailableError("the MQTT client closed without shutdown()")

    async def disconnect(self) -> None:
        """Close the connection (as :meth:`shutdown`); a no-op when not connected."""
        await self.shutdown()

    async def shutdown(self) -> None:
        """Publish health ``shutdown`` (when enabled), deliver what is pending, disconnect and
        stop every task. Idempotent; a later ``connect()`` starts again."""
        self._stopping = True
        self._view.close()
        await self._native.shutdown()

    # --- publishing ----------------------------------------------------------------------------

    async def publish_event(
        self,
        topic: str,
        event_type: str,
        data: dict[str, Any] | BaseModel,
        *,
        correlation_id: str | None = None,
        qos: int = 0,
        retain: bool = False,
    ) -> str:
        """Publish ``data`` in an original-format envelope and return its id, which is
        ``correlation_id`` when one is given (the original's correlation).

        While the link is being repaired, QoS 1/2 wait in the outbox and QoS 0 is dropped
        (counted).

        Raises:
            DropInNotConnectedError: before ``connect()`` or after ``shutdown()``.
        """
        self._require_started("publish")
        with _as_runtime_error():
            return await self._native.publish_event(
                topic, event_type, data, correlation_id=correlation_id, qos=qos, retain=retain
            )

    async def publish_health(
        self, ok: bool, event: str | None = None, err: str | None = None
    ) -> None:
        """Publish ``{message_id, ok, event, err, timestamp}`` (``None`` fields left out), QoS 1,
        retained, on ``system/health/{client_id}``. A no-op when ``enable_health`` is off, and
        a logged no-op when the client is not started."""
        if not self._config.enable_health:
            return
        if self._idle():
            logger.warning("Cannot publish health: not connected")
            return
        health = HealthPing(ok=ok, event=event, err=err)
        await self.publish_event(
            f"system/health/{self._config.client_id}",
            _HEALTH_TYPE,
            health.model_dump(exclude_none=True),
            qos=1,
            retain=True,
        )

    # --- subscribing ---------------------------------------------------------------------------

    async def subscribe(self, topic: str, handler: SubscriptionHandler, qos: int = 0) -> None:
        """Call ``handler(payload)`` for each message on ``topic``; subscribing the filter again
        replaces its handler (no second delivery). Kept across reconnects.

        Raises:
            DropInNotConnectedError: before ``connect()`` or after ``shutdown()``.
        """
        self._require_started("subscribe")
        current = self._routes.get(topic)
        if current is not None and current[1].qos >= qos:
            current[0].handler = handler
            return
        route = _Route(handler)
        if current is not None:
            current[0].retired = True  # from now on only the new route delivers
        with _as_runtime_error():
            sub = await self._native.subscribe(topic, route, qos)
        if current is not None:
            await self._native.unsubscribe(current[1])
        self._routes[topic] = (route, sub)
        logger.info("Subscribed to topic: %s (qos=%d)", topic, qos)

    # --- internals -----------------------------------------------------------------------------

    def _idle(self) -> bool:
        return self._native.state in (ClientState.CREATED, ClientState.CLOSED, ClientState.CLOSING)

    def _require_started(self, what: str) -> None:
        if self._idle():
            raise DropInNotConnectedError(f"Cannot {what}: not connected to MQTT broker")
