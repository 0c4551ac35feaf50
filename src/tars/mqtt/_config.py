"""Client configuration: the broker URL, every option with its default, and the environment.

A configuration is checked once, when it is built, so a typo fails at start-up with a
:class:`~tars.mqtt.ConfigError` that names the option (or environment variable) to fix, never
later on the first reconnect. Passwords travel inside ``mqtt_url``; they are kept out of every
``repr``, ``str`` and error message this module produces, which is why pydantic's own
``ValidationError`` (it quotes the input) is never let out.
"""

from __future__ import annotations

import os
import random
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self, Union, get_args, get_origin

import pydantic
from pydantic import ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator

from ._errors import ConfigError
from ._tls import check_ca_file, check_cert_chain
from ._url import (
    BrokerOrder,
    ConnectionParams,
    check_mqtt_urls,
    check_ws_headers,
    order_endpoints,
    parse_mqtt_url,
    parse_mqtt_urls,
    redact_url,
    redact_urls,
)

__all__ = [
    "ENV_VARS",
    "ConnectionParams",
    "MQTTClientConfig",
    "parse_mqtt_url",
    "redact_url",
]


class MQTTClientConfig(pydantic.BaseModel):
    """Every option of an :class:`~tars.mqtt.MQTTClient`, checked at construction.

    Build it directly, or with :meth:`from_env` from ``MQTT_*`` environment variables.

    Raises:
        ConfigError: on construction, for any bad or unknown option; ``field`` names it.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        hide_input_in_errors=True,
        defer_build=True,
    )

    mqtt_url: str = Field(
        description="Broker URL: mqtt://[user[:password]@]host[:port] (1883) or mqtts:// (8883, "
        "TLS); over WebSockets ws://host[:port][/path] (80, path /mqtt) or wss:// (443, TLS; "
        "the 'ws' extra). Percent-encode special characters in the user name and password. "
        "Several brokers (a cluster's nodes): comma-separated URLs, all with TLS or none."
    )
    client_id: str = Field(
        description="MQTT client identifier; also the default source of envelopes and a level of "
        "the health topics, so it must not be empty or contain '+', '#' or NUL."
    )
    source_name: str | None = Field(
        None, description="The 'source' stamped on published envelopes; defaults to client_id."
    )
    # --- scale-out: several brokers, several instances of one service (docs/scale-out.md) ---
    broker_order: BrokerOrder = Field(
        "in_order",
        description="Order in which the brokers of mqtt_url are tried: in_order (the first is "
        "preferred) or shuffle (once per client, so a fleet spreads over a cluster's nodes).",
    )
    instance: str | None = Field(
        None,
        description="Name of this instance of a replicated service; the MQTT client id (and the "
        "health topics) become '{client_id}-{instance}'. Keep it stable across restarts.",
    )
    keepalive: int = Field(60, ge=1, le=3600, description="MQTT keep-alive, in seconds.")
    enable_health: bool = Field(
        False, description="Publish a retained health status and a last will saying offline."
    )
    enable_heartbeat: bool = Field(
        False, description="Publish heartbeats every heartbeat_interval seconds."
    )
    heartbeat_interval: float = Field(5.0, ge=1, description="Seconds between heartbeats.")
    dedupe_ttl: float = Field(
        0.0,
        ge=0,
        description="Drop messages whose envelope id was seen this many seconds ago; "
        "0 turns de-duplication off.",
    )
    dedupe_max_entries: int = Field(
        0,
        ge=0,
        validate_default=True,  # so that dedupe_ttl > 0 with the default 0 is caught
        description="Most envelope ids remembered for de-duplication (needed when dedupe_ttl > 0).",
    )
    reconnect_min_delay: float = Field(
        0.5, gt=0, description="First delay before reconnecting, in seconds."
    )
    reconnect_max_delay: float = Field(
        5.0,
        gt=0,
        validate_default=True,  # so that reconnect_min_delay above the default 5.0 is caught
        description="Longest delay between reconnect attempts, in seconds (>= "
        "reconnect_min_delay).",
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="Seconds allowed for TCP, TLS and CONNACK on each attempt."
    )
    protocol: Literal["5", "3.1.1", "auto"] = Field(
        "auto",
        description="MQTT version: '5', '3.1.1', or 'auto' (MQTT 5 first; 3.1.1 when a broker "
        "refuses MQTT 5 or never answers it, remembered per broker). See docs/mqtt311.md.",
    )
    wait_for_broker: bool = Field(
        True,
        description="connect() keeps retrying while the broker is down at start; False "
        "fails fast with ConnectError.",
    )
    clean_start: bool = Field(True, description="Start a new MQTT session on the first connect.")
    session_expiry_interval: int = Field(
        0,
        ge=0,
        le=4_294_967_295,
        description="Seconds the broker keeps the session after a "
        "disconnect (0: ends with the connection).",
    )
    max_payload_size: int = Field(
        1_048_576,
        ge=1,
        le=268_435_455,
        description="Largest payload published or accepted, in bytes (the broker is "
        "told the matching MQTT 5 Maximum Packet Size).",
    )
    receive_maximum: int = Field(
        100,
        ge=1,
        le=65535,
        description="Most QoS 1/2 messages the broker may have in flight towards us (with "
        "acknowledge='after_handling', the most that wait for their handlers).",
    )
    acknowledge: Literal["after_handling", "on_arrival"] = Field(
        "after_handling",
        description="When received QoS 1/2 messages are acknowledged: once every handler they "
        "reached has finished (a worker that dies loses none), or on arrival.",
    )
    tls_ca_file: str | None = Field(
        None, description="CA bundle (PEM) to verify the broker with; None uses the system store."
    )
    tls_cert_file: str | None = Field(
        None,
        description="Client certificate (PEM) presented to the broker (mutual TLS); needs "
        "tls_key_file.",
    )
    tls_key_file: str | None = Field(
        None,
        validate_default=True,  # so that tls_cert_file without a key is caught
        description="Private key (PEM, unencrypted) of tls_cert_file; needs tls_cert_file.",
    )
    tls_insecure: bool = Field(
        False, description="Skip TLS certificate and host name checks (tests only)."
    )
    ws_headers: dict[str, str] | None = Field(
        None,
        description="Extra HTTP headers of the WebSocket upgrade of ws:// and wss:// URLs, e.g. "
        "{'Authorization': 'Bearer ...'} for a gateway's token; never logged or shown. From "
        "the environment: a JSON object.",
    )
    queue_size: int = Field(1000, ge=1, description="Capacity of each subscription's queue.")
    overflow: Literal["block", "drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="What a full subscription queue does: drop the oldest message "
        "(default: a slow handler never stalls the others), drop the newest, or block "
        "(stop reading the link until there is room: every subscription waits).",
    )
    handler_concurrency: int = Field(
        1, ge=1, description="Messages each subscription handles at the same time."
    )
    handler_timeout: float | None = Field(
        None, gt=0, description="Seconds a handler may run before it is cancelled; None: no limit."
    )
    watchdog_missed_heartbeats: int = Field(
        3, ge=1, description="Missed heartbeat round trips before the link is declared dead."
    )
    publish_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds QoS 1/2 publishes may wait for any acknowledgement before the "
        "link counts as stale and is replaced (the publishes are resent, not failed).",
    )
    outbox_max_messages: int = Field(
        10_000, ge=0, description="Most messages kept while disconnected (0: keep none)."
    )
    outbox_max_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="Most payload bytes kept while disconnected."
    )
    outbox_message_ttl: float | None = Field(
        None, gt=0, description="Seconds a queued message stays sendable; None: no expiry."
    )
    outbox_policy: Literal["drop_oldest", "drop_newest", "block", "raise"] = Field(
        "drop_oldest",
        description="What a full outbox does: drop the oldest or the newest "
        "message, block the publisher, or raise OutboxFullError.",
    )
    queue_qos0_offline: bool = Field(
        False, description="Keep QoS 0 messages in the outbox while disconnected too."
    )
    outbox_path: Path | None = Field(
        None,
        description="Directory of the durable outbox: QoS 1/2 publishes accepted while "
        "disconnected are kept on disk (one SQLite file per client id, fsynced) until "
        "acknowledged, and sent by the next process after a crash; created if missing (its "
        "parent must exist). None: the outbox lives in memory.",
    )
    correlation_format: Literal["native", "original"] = Field(
        "native",
        description="How publish_event(correlation_id=...) and reply() name the event answered: "
        "'native' writes correlate; 'original' reuses that id as the envelope's own id, as "
        "the fleet's original client expects (use it while unmigrated services consume them).",
    )

    _endpoints: tuple[ConnectionParams, ...] = PrivateAttr()

    def __init__(self, /, **data: Any) -> None:
        unknown = sorted(set(data) - set(type(self).model_fields))
        if unknown:
            raise _unknown_options(unknown)
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            error = _to_config_error(exc)
        else:
            return
        # Raised outside the except block so the ValidationError, which quotes the input (the
        # password included), is not even kept as __context__.
        raise error

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate a mapping (e.g. a parsed config file) like the constructor does.

        Raises:
            ConfigError: as the constructor.
        """
        try:
            return super().model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError as exc:
            error = _to_config_error(exc)
        raise error

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate a JSON document like the constructor does.

        Raises:
            ConfigError: as the constructor (``field="config"`` for JSON that does not parse).
        """
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except pydantic.ValidationError as exc:
            error = _to_config_error(exc)
        raise error

    def model_post_init(self, context: Any, /) -> None:
        """Keep the parsed URLs (already checked by the field validator)."""
        self._endpoints = parse_mqtt_urls(self.mqtt_url)

    @field_validator("mqtt_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        check_mqtt_urls(value)
        return value

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        _check_id_text(value)
        return value

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must not be empty (leave it unset instead)")
        client_id = info.data.get("client_id")
        _check_id_text(value if client_id is None else f"{client_id}-{value}")
        return value

    @field_validator("source_name", "tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _check_not_empty(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("must not be empty (leave it unset instead)")
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _check_ca_file(cls, value: str | None) -> str | None:
        if value is not None:
            check_ca_file(value)
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _check_client_cert(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "tls_cert_file" not in info.data:
            return value  # the certificate itself was refused: that error is reported
        cert = info.data["tls_cert_file"]
        if (cert is None) != (value is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        if cert is not None and value is not None:
            check_cert_chain(cert, value)
        return value

    @field_validator("ws_headers", mode="before")
    @classmethod
    def _check_ws_headers(cls, value: Any) -> Any:
        return None if value is None else check_ws_headers(value)

    @field_validator("outbox_path", mode="before")
    @classmethod
    def _path_from_text(cls, value: Any) -> Any:
        # Strict mode takes only Path objects; a str (an environment variable, a JSON file or
        # a caller's literal) is the common spelling of a path, so it is accepted too.
        if isinstance(value, str):
            if not value:
                raise ValueError("must not be empty (leave it unset instead)")
            return Path(value)
        return value

    @field_validator("outbox_path")
    @classmethod
    def _check_outbox_path(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if value.exists():
            if not value.is_dir():
                raise ValueError(
                    f"{str(value)!r} is not a directory (one file per client id goes in it)"
                )
            if not os.access(value, os.W_OK | os.X_OK):
                raise ValueError(f"directory {str(value)!r} is not writable")
            return value
        parent = value.absolute().parent
        if not parent.is_dir():
            raise ValueError(f"parent directory {str(parent)!r} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"cannot create {str(value)!r}: {str(parent)!r} is not writable")
        return value

    @field_validator("dedupe_max_entries")
    @classmethod
    def _check_dedupe(cls, value: int, info: ValidationInfo) -> int:
        ttl = info.data.get("dedupe_ttl")
        if ttl is not None and ttl > 0 and value == 0:
            raise ValueError("must be > 0 when dedupe_ttl > 0 (it bounds the memory used)")
        return value

    @field_validator("reconnect_max_delay")
    @classmethod
    def _check_delays(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("reconnect_min_delay")
        if low is not None and value < low:
            raise ValueError(f"must be >= reconnect_min_delay ({low})")
        return value

    @property
    def source(self) -> str:
        """The ``source`` of published envelopes: ``source_name`` or else ``client_id``."""
        return self.source_name or self.client_id

    @property
    def connection(self) -> ConnectionParams:
        """Host, port, TLS and credentials of the first URL of ``mqtt_url`` (parsed once)."""
        return self._endpoints[0]

    @property
    def endpoints(self) -> tuple[ConnectionParams, ...]:
        """Every broker of ``mqtt_url``, as written (one for a single URL); parsed once."""
        return self._endpoints

    def ordered_endpoints(self, rng: random.Random | None = None) -> tuple[ConnectionParams, ...]:
        """:attr:`endpoints` in ``broker_order``: what a client tries, first to last.

        With ``"shuffle"`` each call draws a new order (from ``rng``, default a fresh
        ``random.Random()``): a client calls it once, when it is created, and keeps that order,
        so the instances of a fleet sharing one configuration spread over the nodes.
        """
        return order_endpoints(self._endpoints, self.broker_order, rng)

    @property
    def outbox_file(self) -> Path | None:
        """The durable outbox file of this client (``outbox_path`` and the effective client
        id), or None without ``outbox_path``."""
        if self.outbox_path is None:
            return None
        from ._core.durable import outbox_file  # sqlite3 is loaded only by those who use it

        return outbox_file(self.outbox_path, self.effective_client_id)

    @property
    def effective_client_id(self) -> str:
        """The MQTT client id sent to the broker: ``client_id``, or ``{client_id}-{instance}``.

        Also the level of this client's health and heartbeat topics, so the instances of a
        replicated service never take over each other's session or health status.
        """
        return self.client_id if self.instance is None else f"{self.client_id}-{self.instance}"

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied, validated like a new config (pydantic would not).

        ``deep`` is accepted for compatibility; every field is immutable, so it changes nothing.

        Raises:
            ConfigError: as the constructor.
        """
        return type(self)(**{**self.model_dump(), **(update or {})})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).model_fields:
            raise AttributeError(f"{name}: the config is frozen; use model_copy(update={{...}})")
        super().__setattr__(name, value)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "mqtt_url":
                value = redact_urls(value)
            elif name == "ws_headers" and value is not None:
                value = dict.fromkeys(value, "***")  # a header may hold a token
            yield name, value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build a config from ``MQTT_*`` variables (see :data:`ENV_VARS`); overrides win.

        Booleans accept true/false, 1/0, yes/no, on/off in any case; an empty value leaves an
        option at its default.

        Raises:
            ConfigError: a variable that does not parse (``field`` is the variable's name,
                e.g. ``MQTT_KEEPALIVE``), ``MQTT_URL`` or ``MQTT_CLIENT_ID`` missing, or any
                value the constructor refuses (``field`` is the option's name and the message
                names the variable it came from).
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            if name in overrides:
                continue
            raw = source.get(var)
            if raw is None or raw.strip() == "":
                if cls.model_fields[name].is_required():
                    raise ConfigError(var, "is not set (and no override was given)")
                continue
            values[name] = _from_text(var, raw, _KINDS[name])
        try:
            return cls(**values, **overrides)
        except ConfigError as exc:
            if exc.field not in values:
                raise
            error = ConfigError(exc.field, f"{_message_of(exc)} (from {ENV_VARS[exc.field]})")
        raise error


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

ENV_VARS: dict[str, str] = {
    name: "MQTT_URL" if name == "mqtt_url" else f"MQTT_{name.upper()}"
    for name in MQTTClientConfig.model_fields
}
"""Option name -> environment variable read by :meth:`MQTTClientConfig.from_env`."""


def _kind(annotation: Any) -> type:
    """The scalar type an option's environment variable is parsed as (bool, int, float, str)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation if annotation in (bool, int, float) else str


_KINDS = {name: _kind(info.annotation) for name, info in MQTTClientConfig.model_fields.items()}


def _from_text(var: str, raw: str, kind: type) -> Any:
    text = raw.strip()
    if kind is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(var, f"{raw!r} is not a boolean: use true/false, 1/0, yes/no or on/off")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(var, f"{raw!r} is not an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(var, f"{raw!r} is not a number") from None
    return text


def _check_id_text(value: str) -> None:
    """The rules a client id shares with the topic levels it becomes (health topics)."""
    if "+" in value or "#" in value or "\0" in value:
        raise ValueError("must not contain '+', '#' or NUL: it is used as a topic level")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    if size > 65535:
        raise ValueError("must be at most 65,535 bytes of UTF-8")


def _message_of(error: ConfigError) -> str:
    return str(error).removeprefix(f"{error.field}: ")


def _unknown_options(unknown: list[str]) -> ConfigError:
    import difflib  # only for this error message: kept off the start-up path

    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, MQTTClientConfig.model_fields, n=1)
        if close:
            hints.append(f"{name!r} -> did you mean {close[0]!r}?")
    suffix = f" ({'; '.join(hints)})" if hints else ""
    return ConfigError(
        ", ".join(unknown), f"unknown option{'s' if len(unknown) > 1 else ''}{suffix}"
    )


def _to_config_error(exc: pydantic.ValidationError) -> ConfigError:
    """The first problem as a ConfigError; pydantic's ``input_value`` is deliberately dropped."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, ConfigError):
        # model_validate() runs our __init__, whose ConfigError pydantic wrapped: unwrap it.
        return ConfigError(inner.field, _message_of(inner))
    loc = first["loc"]
    field = str(loc[0]) if loc else "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "is required"
    others = sorted({str(e["loc"][0]) for e in errors[1:] if e["loc"]} - {field})
    if others:
        message += f" (also invalid: {', '.join(others)})"
    return ConfigError(field, message)
