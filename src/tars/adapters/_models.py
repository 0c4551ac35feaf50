"""The data models of the original fleet client, as its services import them.

Same names, fields, defaults and validation errors as the original
``tars.adapters.mqtt_client`` (and the ``Envelope``/``HealthPing`` contracts it re-exported), so a
service that builds, parses or validates them keeps working unchanged. Where this module differs
it says why: passwords never reach a ``repr`` or a validation error, and de-duplication uses
tars-core's window and key (see :class:`MessageDeduplicator`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Self
from urllib.parse import quote, urlparse

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tars.mqtt import EnvelopeError, NotConnectedError
from tars.mqtt._argcheck import check_int, check_number, check_str
from tars.mqtt._config import warn_unknown_env
from tars.mqtt._dedup import DedupWindow, content_key
from tars.mqtt._envelope import envelope_from_json

__all__ = [
    "ConnectionParams",
    "DropInNotConnectedError",
    "Envelope",
    "HealthPing",
    "HeartbeatPayload",
    "MQTTClientConfig",
    "MessageDeduplicator",
    "SubscriptionHandler",
    "parse_mqtt_url",
]

SubscriptionHandler = Callable[[bytes], Awaitable[None]]
"""A handler of the original client: it receives the raw payload."""


class DropInNotConnectedError(NotConnectedError, RuntimeError):
    """A call that needs a started client, made before ``connect()`` or after ``shutdown()``.

    A ``RuntimeError``, as the original raised, and a :class:`~tars.mqtt.NotConnectedError`.
    """


class Envelope(BaseModel):
    """The original envelope: ``{id, type, ts, source, data}`` and nothing else."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str
    ts: float = Field(default_factory=time.time)
    source: str = "router"
    data: dict[str, Any]

    @classmethod
    def new(
        cls,
        *,
        event_type: str,
        data: Any,
        correlate: str | None = None,
        source: str = "router",
    ) -> Self:
        """Build an envelope; a ``correlate`` becomes its id (the original's correlation)."""
        payload = data.model_dump() if isinstance(data, BaseModel) else data
        return cls(id=correlate or uuid.uuid4().hex, type=event_type, data=payload, source=source)


class HealthPing(BaseModel):
    """The original health status (the ``data`` of a ``health.status`` envelope)."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ok: bool
    event: str | None = None
    err: str | None = None
    timestamp: float = Field(default_factory=time.time)


class HeartbeatPayload(BaseModel):
    """A heartbeat as the original published it on ``system/keepalive/{client_id}``."""

    ok: bool = True
    event: str = "heartbeat"
    timestamp: float


class ConnectionParams(BaseModel):
    """Host, port and credentials parsed from an ``mqtt://`` URL; the password never shows."""

    model_config = ConfigDict(hide_input_in_errors=True)

    hostname: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        password = None if self.password is None else "***"
        return (
            f"ConnectionParams(hostname={self.hostname!r}, port={self.port}, "
            f"username={self.username!r}, password={password!r})"
        )

    __str__ = __repr__

    def url(self) -> str:
        """The URL again, credentials percent-encoded, as tars-core's own client reads it."""
        userinfo = ""
        if self.username is not None or self.password is not None:
            userinfo = quote(self.username or "", safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"mqtt://{userinfo}{host}:{self.port}"


def parse_mqtt_url(url: str) -> ConnectionParams:
    """Parse ``mqtt://[user:pass@]host[:port]``; host defaults to localhost, port to 1883.

    Raises:
        ValueError: the scheme is not ``mqtt``.
        InvalidArgumentTypeError: ``url`` is not a ``str`` (also a ``TypeError``).
    """
    check_str("url", url)
    parsed = urlparse(url)
    if parsed.scheme != "mqtt":
        raise ValueError(f"Invalid MQTT URL scheme: {parsed.scheme!r}. Expected 'mqtt://'.")
    return ConnectionParams(
        hostname=parsed.hostname or "localhost",
        port=parsed.port or 1883,
        username=parsed.username,
        password=parsed.password,
    )


class MQTTClientConfig(BaseModel):
    """The original client's options, with its defaults, bounds and environment variables."""

    model_config = ConfigDict(hide_input_in_errors=True)

    mqtt_url: str
    client_id: str
    source_name: str | None = None
    keepalive: int = Field(default=60, ge=1, le=3600)
    enable_health: bool = False
    enable_heartbeat: bool = False
    heartbeat_interval: float = Field(default=5.0, ge=1.0)
    dedupe_ttl: float = Field(default=0.0, ge=0.0)
    dedupe_max_entries: int = Field(default=0, ge=0)
    reconnect_min_delay: float = Field(default=0.5, ge=0.1)
    reconnect_max_delay: float = Field(default=5.0, ge=0.5)

    @field_validator("reconnect_max_delay")
    @classmethod
    def _max_above_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("reconnect_min_delay")
        if low is not None and value < low:
            raise ValueError(
                f"reconnect_max_delay ({value}) must be >= reconnect_min_delay ({low})"
            )
        return value

    @field_validator("dedupe_max_entries")
    @classmethod
    def _bounded_dedup(cls, value: int, info: ValidationInfo) -> int:
        ttl = info.data.get("dedupe_ttl")
        if ttl is not None and ttl > 0 and value == 0:
            raise ValueError(
                f"dedupe_max_entries must be > 0 when dedupe_ttl={ttl} (it bounds the memory)"
            )
        return value

    @classmethod
    def from_env(cls) -> Self:
        """Read ``MQTT_URL``, ``MQTT_CLIENT_ID`` and the optional ``MQTT_*`` variables.

        Booleans are true only for ``true`` (any case), as in the original. An ``MQTT_*``
        variable it does not read is a WARNING naming the closest one it does (a misspelt
        ``MQTT_KEEP_ALIVE`` is otherwise silently ignored); the original said nothing.

        Raises:
            KeyError: ``MQTT_URL`` or ``MQTT_CLIENT_ID`` is not set.
            ValueError: a value does not parse or is out of bounds.
        """
        env = os.environ
        known = ["MQTT_URL" if n == "mqtt_url" else f"MQTT_{n.upper()}" for n in cls.model_fields]
        warn_unknown_env(env, known, "drop-in")
        return cls(
            mqtt_url=env["MQTT_URL"],
            client_id=env["MQTT_CLIENT_ID"],
            source_name=env.get("MQTT_SOURCE_NAME"),
            keepalive=int(env.get("MQTT_KEEPALIVE", "60")),
            enable_health=env.get("MQTT_ENABLE_HEALTH", "").lower() == "true",
            enable_heartbeat=env.get("MQTT_ENABLE_HEARTBEAT", "").lower() == "true",
            heartbeat_interval=float(env.get("MQTT_HEARTBEAT_INTERVAL", "5.0")),
            dedupe_ttl=float(env.get("MQTT_DEDUPE_TTL", "0.0")),
            dedupe_max_entries=int(env.get("MQTT_DEDUPE_MAX_ENTRIES", "0")),
            reconnect_min_delay=float(env.get("MQTT_RECONNECT_MIN_DELAY", "0.5")),
            reconnect_max_delay=float(env.get("MQTT_RECONNECT_MAX_DELAY", "5.0")),
        )


class MessageDeduplicator:
    """Tells whether an envelope payload was seen within ``ttl`` seconds (at most
    ``max_entries`` remembered).

    The key is tars-core's (:func:`~tars.mqtt._dedup.content_key`: the id plus everything but
    ``ts``), so, as in the original, chunks sharing an id with another ``seq`` and messages
    sharing an id with other data stay distinct. Payloads that are not envelopes are never
    duplicates.
    """

    def __init__(self, *, ttl: float, max_entries: int) -> None:
        """Raises :class:`~tars.mqtt.InvalidArgumentTypeError` for a ``ttl`` that is not a
        number or ``max_entries`` that is not an ``int``."""
        check_number("ttl", ttl)
        check_int("max_entries", max_entries)
        self._window = DedupWindow(ttl, max_entries)
        self._clock = time.monotonic

    def is_duplicate(self, payload: bytes) -> bool:
        """True when the same envelope was seen within the TTL; else remember it."""
        try:
            obj = orjson.loads(payload)
            envelope = envelope_from_json(obj)
        except (orjson.JSONDecodeError, EnvelopeError):
            return False
        key = content_key(bytes(payload), envelope.id, lambda: obj)
        return self._window.seen(key, self._clock())
