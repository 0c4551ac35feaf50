"""Client configuration: the broker URL, every option with its default, and the environment.

A configuration is checked once, when it is built, so a typo fails at start-up with a
:class:`~tars.mqtt.ConfigError` that names the option (or environment variable) to fix, never
later on the first reconnect. Passwords travel inside ``mqtt_url``; they are kept out of every
``repr``, ``str`` and error message this module produces.

Every service builds one of these before anything else, so it is a plain frozen class checked by
hand, not a pydantic model: building a pydantic model at import cost every service start about
60 ms and 10 MB (pydantic itself), more than the rest of the client together (see the start-up
rows of bench/RESULTS.md). The options are declared once, in the class body below
(``name: type = option(default, ge=..., description=..., checks=...)``): that one table drives the
checks, :data:`ENV_VARS`, the environment parsing, ``model_fields`` (the docs table is generated
from it) and the pydantic-like methods (``model_validate``, ``model_dump``, ``model_copy``...)
that callers already use. Its messages are pydantic's, word for word, so errors did not change
when pydantic left this module.

Adding an option is one declaration in the class body (and its line in ``_options.py``'s
``ClientOptions``, which a test keeps in step). A pydantic field ports as:

* ``foo: int = Field(3, ge=1, description="...")`` becomes
  ``foo: int = option(3, ge=1, description="...", checks=(_check_foo,))``;
* a ``@field_validator("foo")`` method ``(cls, value, info)`` becomes a plain function
  ``_check_foo(value, data)`` declared above the class, where ``data`` is ``info.data`` (the
  options declared before ``foo`` that passed); it returns the value or raises ``ValueError``.

``validate_default=True`` needs no porting: defaults go through the checks too.
"""

import math
import os
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, Union, get_args, get_origin

from ._errors import ConfigError, ConfigTypeError
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

if TYPE_CHECKING:
    import random  # loaded only by who shuffles (issue 21)

__all__ = [
    "ENV_VARS",
    "ConnectionParams",
    "MQTTClientConfig",
    "Option",
    "option",
    "parse_mqtt_url",
    "redact_url",
    "warn_unknown_env",
]

Check = Callable[[Any, Mapping[str, Any]], Any]
"""A check beyond the type and bounds: ``(value, data) -> value``, raising ``ValueError`` with the
message to show. ``data`` holds the options declared before this one that passed their checks
(pydantic's ``info.data``)."""


class _WrongType(ValueError):
    """A value of the wrong type (pydantic's ``*_type`` errors): reported as
    :class:`~tars.mqtt.ConfigTypeError`, a ConfigError that is also a TypeError."""


class _Required:
    """The default of an option that has none (``MQTTClientConfig.model_fields[x].default``)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Option:
    """One option: its type, default, bounds, checks and description (one row of the docs).

    Shaped like pydantic's ``FieldInfo`` where callers read it (``annotation``, ``default``,
    ``description``, ``is_required()``), so ``model_fields`` reads as it did.
    """

    __slots__ = (
        "annotation", "checks", "choices", "default", "description", "ge", "gt", "kind", "le",
        "name", "nullable",
    )  # fmt: skip

    def __init__(
        self,
        default: Any,
        *,
        description: str,
        ge: float | None,
        gt: float | None,
        le: float | None,
        checks: tuple[Check, ...],
    ) -> None:
        self.default = default
        self.description = description
        self.ge, self.gt, self.le = ge, gt, le
        self.checks = checks
        self.name = ""
        self.annotation: Any = None
        self.kind: Any = str
        self.nullable = False
        self.choices: tuple[str, ...] = ()

    def bind(self, name: str, annotation: Any) -> None:
        """Learn the option's name and type from the class body it was declared in."""
        self.name, self.annotation = name, annotation
        base = annotation
        if get_origin(base) in (Union, types.UnionType):
            args = [arg for arg in get_args(base) if arg is not type(None)]
            self.nullable = len(args) < len(get_args(base))
            (base,) = args
        if get_origin(base) is Literal:
            self.choices = get_args(base)
            base = str
        self.kind = base

    def is_required(self) -> bool:
        """True when the option has no default (``mqtt_url``, ``client_id``)."""
        return self.default is REQUIRED

    def parse(self, value: Any) -> Any:
        """The value checked against the type and bounds (pydantic's strict mode, its messages).

        Raises:
            ValueError: the message pydantic gave for the same value.
        """
        if value is None and self.nullable:
            return None
        kind = self.kind
        if kind is bool:
            if type(value) is not bool:
                raise _WrongType("Input should be a valid boolean")
            return value
        if kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _WrongType("Input should be a valid integer")
        elif kind is float:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _WrongType("Input should be a valid number")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("Input should be a finite number")
        elif kind is Path:
            if isinstance(value, str):  # the common spelling (environment, JSON, literals)
                if not value:
                    raise ValueError("must not be empty (leave it unset instead)")
                value = Path(value)
            if not isinstance(value, Path):
                raise _WrongType("Input should be an instance of Path")
            return value
        elif get_origin(kind) is dict:
            return value  # a mapping, or a JSON object in a str: its checks read and check it
        elif self.choices:
            if value not in self.choices or type(value) is not str:
                raise ValueError(f"Input should be {_either(self.choices)}")
            return value
        elif not isinstance(value, str):
            raise _WrongType("Input should be a valid string")
        else:
            return value
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"Input should be greater than or equal to {self.ge:g}")
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"Input should be greater than {self.gt:g}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"Input should be less than or equal to {self.le:.0f}")
        return value


def option(
    default: Any = REQUIRED,
    *,
    description: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    checks: tuple[Check, ...] = (),
) -> Any:
    """Declare an option in :class:`MQTTClientConfig`'s body (typed ``Any`` for type checkers,
    like ``pydantic.Field``): the annotation gives its type, ``ge``/``gt``/``le`` its bounds,
    ``checks`` what else it must satisfy; non-finite floats are always refused."""
    return Option(default, description=description, ge=ge, gt=gt, le=le, checks=checks)


def _either(choices: tuple[str, ...]) -> str:
    quoted = [repr(choice) for choice in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --- the checks beyond type and bounds (each one (value, data) -> value) ------------------------


def _check_url(value: str, data: Mapping[str, Any]) -> str:
    check_mqtt_urls(value)
    return value


def _check_id_text(value: str) -> None:
    """The rules a client id shares with the topic levels it becomes (health topics)."""
    if "+" in value or "#" in value or "\0" in value:
        raise ValueError("must not contain '+', '#' or NUL: it is used as a topic level")
    if not value.isprintable():  # the topic rule (MQTT 5 1.5.4), off the start-up path
        from ._topics import forbidden_character

        reason = forbidden_character(value)
        if reason is not None:
            raise ValueError(f"{reason}: it is used as a topic level")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    if size > 65535:
        raise ValueError("must be at most 65,535 bytes of UTF-8")


def _check_client_id(value: str, data: Mapping[str, Any]) -> str:
    if not value:
        raise ValueError("must not be empty")
    _check_id_text(value)
    return value


def _check_instance(value: str | None, data: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    if not value:
        raise ValueError("must not be empty (leave it unset instead)")
    client_id = data.get("client_id")
    _check_id_text(value if client_id is None else f"{client_id}-{value}")
    return value


def _check_not_empty(value: str | None, data: Mapping[str, Any]) -> str | None:
    if value == "":
        raise ValueError("must not be empty (leave it unset instead)")
    return value


def _check_ca_file(value: str | None, data: Mapping[str, Any]) -> str | None:
    if value is not None:
        check_ca_file(value)
    return value


def _check_client_cert(value: str | None, data: Mapping[str, Any]) -> str | None:
    if "tls_cert_file" not in data:
        return value  # the certificate itself was refused: that error is reported
    cert = data["tls_cert_file"]
    if (cert is None) != (value is None):
        raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
    if cert is not None and value is not None:
        check_cert_chain(cert, value)
    return value


def _check_outbox_path(value: Path | None, data: Mapping[str, Any]) -> Path | None:
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


def _check_ws_headers(value: Any, data: Mapping[str, Any]) -> dict[str, str] | None:
    return None if value is None else check_ws_headers(value)


def _check_dedupe(value: int, data: Mapping[str, Any]) -> int:
    ttl = data.get("dedupe_ttl")
    if ttl is not None and ttl > 0 and value == 0:
        raise ValueError("must be > 0 when dedupe_ttl > 0 (it bounds the memory used)")
    return value


def _check_delays(value: float, data: Mapping[str, Any]) -> float:
    low = data.get("reconnect_min_delay")
    if low is not None and value < low:
        raise ValueError(f"must be >= reconnect_min_delay ({low})")
    return value


class MQTTClientConfig:
    """Every option of an :class:`~tars.mqtt.MQTTClient`, checked at construction.

    Build it directly, or with :meth:`from_env` from ``MQTT_*`` environment variables. Frozen
    and compared by value; ``model_validate``, ``model_validate_json``, ``model_dump``,
    ``model_dump_json`` and ``model_copy`` work as on a pydantic model.

    Raises:
        ConfigError: on construction, for any bad or unknown option; ``field`` names it.
    """

    model_fields: ClassVar[dict[str, Option]]
    """Option name -> :class:`Option` (type, default, description), in declaration order."""

    mqtt_url: str = option(
        description="Broker URL: mqtt://[user[:password]@]host[:port] (1883) or mqtts:// (8883, "
        "TLS); over WebSockets ws://host[:port][/path] (80, path /mqtt) or wss:// (443, TLS; "
        "the 'ws' extra). Percent-encode special characters in the user name and password. "
        "Several brokers (a cluster's nodes): comma-separated URLs, all with TLS or none.",
        checks=(_check_url,),
    )
    client_id: str = option(
        description="MQTT client identifier; also the default source of envelopes and a level of "
        "the health topics, so it must be non-empty valid UTF-8 of at most 65,535 bytes, "
        "without '+', '#', NUL, a control character (U+0001..U+001F, U+007F..U+009F) or a "
        "Unicode non-character (MQTT 5 section 1.5.4).",
        checks=(_check_client_id,),
    )
    source_name: str | None = option(
        None,
        description="The 'source' stamped on published envelopes; defaults to client_id.",
        checks=(_check_not_empty,),
    )
    # --- scale-out: several brokers, several instances of one service (docs/scale-out.md) ---
    broker_order: BrokerOrder = option(
        "in_order",
        description="Order in which the brokers of mqtt_url are tried: in_order (the first is "
        "preferred) or shuffle (once per client, so a fleet spreads over a cluster's nodes).",
    )
    redirects: Literal["listed", "any", "never"] = option(
        "listed",
        description="Which MQTT 5 server redirections (CONNACK or DISCONNECT 0x9C/0x9D with a "
        "Server Reference) to follow: listed (only to a broker of mqtt_url, with that URL's "
        "credentials), any (any host, with the current credentials) or never.",
    )
    instance: str | None = option(
        None,
        description="Name of this instance of a replicated service; the MQTT client id (and the "
        "health topics) become '{client_id}-{instance}', which follows the rules of client_id. "
        "Keep it stable across restarts.",
        checks=(_check_instance,),
    )
    keepalive: int = option(60, ge=1, le=3600, description="MQTT keep-alive, in seconds.")
    enable_health: bool = option(
        False, description="Publish a retained health status and a last will saying offline."
    )
    enable_heartbeat: bool = option(
        False, description="Publish heartbeats every heartbeat_interval seconds."
    )
    heartbeat_interval: float = option(5.0, ge=1, description="Seconds between heartbeats.")
    dedupe_ttl: float = option(
        0.0,
        ge=0,
        description="Drop messages whose envelope id was seen this many seconds ago; "
        "0 turns de-duplication off.",
    )
    dedupe_max_entries: int = option(
        0,
        ge=0,
        description="Most envelope ids remembered for de-duplication (needed when dedupe_ttl > 0).",
        checks=(_check_dedupe,),
    )
    reconnect_min_delay: float = option(
        0.5, gt=0, description="First delay before reconnecting, in seconds."
    )
    reconnect_max_delay: float = option(
        5.0,
        gt=0,
        description="Longest delay between reconnect attempts, in seconds (>= "
        "reconnect_min_delay).",
        checks=(_check_delays,),
    )
    connect_timeout: float = option(
        10.0, gt=0, description="Seconds allowed for TCP, TLS and CONNACK on each attempt."
    )
    protocol: Literal["5", "3.1.1", "auto"] = option(
        "auto",
        description="MQTT version: '5', '3.1.1', or 'auto' (MQTT 5 first; 3.1.1 when a broker "
        "refuses MQTT 5 or never answers it, remembered per broker). A broker's URL may say "
        "its own: mqtt://host?protocol=3.1.1. See docs/mqtt311.md.",
    )
    wait_for_broker: bool = option(
        True,
        description="connect() keeps retrying while the broker is down at start; False "
        "fails fast with ConnectError.",
    )
    clean_start: bool = option(True, description="Start a new MQTT session on the first connect.")
    session_expiry_interval: int = option(
        0,
        ge=0,
        le=4_294_967_295,
        description="Seconds the broker keeps the session after a "
        "disconnect (0: ends with the connection).",
    )
    max_payload_size: int = option(
        1_048_576,
        ge=1,
        le=268_435_455,
        description="Largest payload published or accepted, in bytes (the broker is "
        "told the matching MQTT 5 Maximum Packet Size).",
    )
    receive_maximum: int = option(
        100,
        ge=1,
        le=65535,
        description="Most QoS 1/2 messages the broker may have in flight towards us (with "
        "acknowledge='after_handling', the most that wait for their handlers).",
    )
    acknowledge: Literal["after_handling", "on_arrival"] = option(
        "after_handling",
        description="When received QoS 1/2 messages are acknowledged: once every handler they "
        "reached has finished (a worker that dies loses none), or on arrival.",
    )
    unrouted_timeout: float | None = option(
        None,
        gt=0,
        description="Seconds a received QoS 1/2 message that no subscription takes yet (a "
        "resumed session's backlog arriving before subscribe()) waits for one before it is "
        "given up: acknowledged unhandled, counted as unmatched. None (default): it waits, "
        "never acknowledged unhandled; after 5 s it is logged, counted and health turns "
        "degraded.",
    )
    tls_ca_file: str | None = option(
        None,
        description="CA bundle (PEM) to verify the broker with; None uses the system store.",
        checks=(_check_not_empty, _check_ca_file),
    )
    tls_cert_file: str | None = option(
        None,
        description="Client certificate (PEM) presented to the broker (mutual TLS); needs "
        "tls_key_file.",
        checks=(_check_not_empty,),
    )
    tls_key_file: str | None = option(
        None,
        description="Private key (PEM, unencrypted) of tls_cert_file; needs tls_cert_file.",
        checks=(_check_not_empty, _check_client_cert),
    )
    tls_insecure: bool = option(
        False, description="Skip TLS certificate and host name checks (tests only)."
    )
    ws_headers: dict[str, str] | None = option(
        None,
        description="Extra HTTP headers of the WebSocket upgrade of ws:// and wss:// URLs, e.g. "
        "{'Authorization': 'Bearer ...'} for a gateway's token; never logged or shown. From "
        "the environment: a JSON object.",
        checks=(_check_ws_headers,),
    )
    queue_size: int = option(1000, ge=1, description="Capacity of each subscription's queue.")
    overflow: Literal["block", "drop_oldest", "drop_newest"] = option(
        "drop_oldest",
        description="What a full subscription queue does: drop the oldest message "
        "(default: a slow handler never stalls the others), drop the newest, or block "
        "(stop reading the link until there is room: every subscription waits).",
    )
    handler_concurrency: int = option(
        1, ge=1, description="Messages each subscription handles at the same time."
    )
    handler_timeout: float | None = option(
        None, gt=0, description="Seconds a handler may run before it is cancelled; None: no limit."
    )
    watchdog_missed_heartbeats: int = option(
        3, ge=1, description="Missed heartbeat round trips before the link is declared dead."
    )
    publish_timeout: float = option(
        10.0,
        gt=0,
        description="Seconds QoS 1/2 publishes may wait for any acknowledgement before the "
        "link counts as stale and is replaced (the publishes are resent, not failed).",
    )
    outbox_max_messages: int = option(
        10_000, ge=0, description="Most messages kept while disconnected (0: keep none)."
    )
    outbox_max_bytes: int = option(
        16 * 1024 * 1024, ge=0, description="Most payload bytes kept while disconnected."
    )
    outbox_message_ttl: float | None = option(
        None, gt=0, description="Seconds a queued message stays sendable; None: no expiry."
    )
    outbox_policy: Literal["drop_oldest", "drop_newest", "block", "raise"] = option(
        "drop_oldest",
        description="What a full outbox does: drop the oldest or the newest "
        "message, block the publisher, or raise OutboxFullError.",
    )
    queue_qos0_offline: bool = option(
        False, description="Keep QoS 0 messages in the outbox while disconnected too."
    )
    republish_retained: bool = option(
        True,
        description="After a reconnect to a broker that lost our session (a restart without "
        "persistence), re-publish the last retained message this client published on each "
        "topic where the broker holds none. A retained message someone else published there "
        "is left alone, except one that arrives within the window of a few round trips "
        "between that check and the re-publish. On a link without subscription identifiers "
        "(MQTT 3.1.1), a topic one of the client's own filters matches is not checked, so "
        "not re-published (said at INFO; docs/resilience.md).",
    )
    outbox_path: Path | None = option(
        None,
        description="Directory of the durable outbox: QoS 1/2 publishes accepted while "
        "disconnected are kept on disk (one SQLite file per client id, fsynced) until "
        "acknowledged, and sent by the next process after a crash; created if missing (its "
        "parent must exist). None: the outbox lives in memory.",
        checks=(_check_outbox_path,),
    )
    correlation_format: Literal["native", "original"] = option(
        "native",
        description="How publish_event(correlation_id=...) and reply() name the event answered: "
        "'native' writes correlate; 'original' reuses that id as the envelope's own id, as "
        "the fleet's original client expects (use it while unmigrated services consume them).",
    )

    _endpoints: tuple[ConnectionParams, ...]

    def __init__(self, /, **data: Any) -> None:
        unknown = sorted(set(data) - set(self.model_fields))
        if unknown:
            raise _unknown_options(unknown)
        values = _validate(self.model_fields, data)
        set_attr = object.__setattr__
        for name, value in values.items():
            set_attr(self, name, value)
        set_attr(self, "_endpoints", parse_mqtt_urls(values["mqtt_url"]))

    @classmethod
    def model_validate(cls, obj: Any) -> Self:
        """Validate a mapping (e.g. a parsed config file) like the constructor does.

        Raises:
            ConfigError: as the constructor; for anything but a mapping with ``str`` keys, its
                :class:`ConfigTypeError` (``field="config"``).
        """
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, Mapping) or not all(isinstance(key, str) for key in obj):
            raise ConfigTypeError(
                "config", f"Input should be a valid dictionary or instance of {cls.__name__}"
            )
        return cls(**obj)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray) -> Self:
        """Validate a JSON document like the constructor does.

        Raises:
            ConfigError: as the constructor (``field="config"`` for JSON that does not parse);
                its :class:`ConfigTypeError` when ``json_data`` is not text or bytes.
        """
        import json  # only here: it accepts Infinity and NaN, which the checks then name

        if not isinstance(json_data, str | bytes | bytearray):
            raise ConfigTypeError(
                "config", f"JSON must be str, bytes or bytearray, not {type(json_data).__name__}"
            )
        try:
            obj = json.loads(json_data)
        except ValueError as exc:
            error = ConfigError("config", f"Invalid JSON: {exc}")
        else:
            if not isinstance(obj, dict):
                raise ConfigError("config", "Input should be an object")
            return cls(**obj)
        raise error  # outside the except block: the parse error quotes the document

    def model_dump(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """Every option as a dict (``mode="json"``: paths as text), password included."""
        values = {name: getattr(self, name) for name in self.model_fields}
        if mode == "json":
            values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        return values

    def model_dump_json(self) -> str:
        """:meth:`model_dump` as compact JSON, which :meth:`model_validate_json` reads back."""
        import orjson

        return orjson.dumps(self.model_dump(mode="json")).decode()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied, validated like a new config.

        ``deep`` is accepted for compatibility; every field is immutable, so it changes nothing.

        Raises:
            ConfigError: as the constructor.
        """
        return type(self)(**{**self.model_dump(), **(update or {})})

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

    def ordered_endpoints(self, rng: "random.Random | None" = None) -> tuple[ConnectionParams, ...]:
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

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.model_fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{name}: the config is frozen; use model_copy(update={{...}})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{name}: the config is frozen; use model_copy(update={{...}})")

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        for name in self.model_fields:
            value = getattr(self, name)
            if name == "mqtt_url":
                value = redact_urls(value)
            elif name == "ws_headers" and value is not None:
                value = dict.fromkeys(value, "***")  # a header may hold a token
            yield name, value

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.__repr_args__())
        return f"{type(self).__name__}({args})"

    def __str__(self) -> str:
        return " ".join(f"{name}={value!r}" for name, value in self.__repr_args__())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build a config from ``MQTT_*`` variables (see :data:`ENV_VARS`); overrides win.

        Booleans accept true/false, 1/0, yes/no, on/off in any case; an empty value leaves an
        option at its default.

        Raises:
            ConfigError: a variable that does not parse (``field`` is the variable's name,
                e.g. ``MQTT_KEEPALIVE``), ``MQTT_URL`` or ``MQTT_CLIENT_ID`` missing, or any
                value the constructor refuses (``field`` is the option's name and the message
                names the variable it came from); its :class:`ConfigTypeError` when ``env`` is
                not a mapping.
        """
        if env is not None and not isinstance(env, Mapping):
            raise ConfigTypeError("env", f"must be a mapping or None, not {type(env).__name__}")
        source = os.environ if env is None else env
        warn_unknown_env(source)
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            if name in overrides:
                continue
            raw = source.get(var)
            if raw is None or raw.strip() == "":
                if cls.model_fields[name].is_required():
                    raise ConfigError(var, "is not set (and no override was given)")
                continue
            values[name] = _from_text(var, raw, cls.model_fields[name].kind)
        try:
            return cls(**values, **overrides)
        except ConfigError as exc:
            if exc.field not in values:
                raise
            error = ConfigError(exc.field, f"{_message_of(exc)} (from {ENV_VARS[exc.field]})")
        raise error


def _declare(cls: type[MQTTClientConfig]) -> dict[str, Option]:
    """Collect the options of the class body (annotation + ``option(...)``) into one table."""
    fields: dict[str, Option] = {}
    for name, annotation in cls.__annotations__.items():
        declared = cls.__dict__.get(name)
        if isinstance(declared, Option):
            declared.bind(name, annotation)
            fields[name] = declared
            delattr(cls, name)  # instances hold the values; the class holds model_fields
    return fields


MQTTClientConfig.model_fields = _declare(MQTTClientConfig)


def _validate(fields: Mapping[str, Option], data: Mapping[str, Any]) -> dict[str, Any]:
    """Every option checked in declaration order; the first problem raised, the rest named.

    Raises:
        ConfigError: the first option at fault, with "(also invalid: ...)" for the others.
    """
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    wrong_types: set[str] = set()
    for name, opt in fields.items():
        if name in data:
            value = data[name]
        elif opt.default is REQUIRED:
            problems[name] = "is required"
            continue
        else:
            value = opt.default
        try:
            value = opt.parse(value)
            for check in opt.checks:
                value = check(value, values)
        except ValueError as exc:
            problems[name] = _message_of(exc) if isinstance(exc, ConfigError) else str(exc)
            if isinstance(exc, _WrongType | ConfigTypeError):
                wrong_types.add(name)
        else:
            values[name] = value
    if problems:
        field, message = next(iter(problems.items()))
        others = sorted(set(problems) - {field})
        if others:
            message += f" (also invalid: {', '.join(others)})"
        if field in wrong_types:
            raise ConfigTypeError(field, message)  # a wrong type, not a refused value
        raise ConfigError(field, message)
    return values


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

ENV_VARS: dict[str, str] = {
    name: "MQTT_URL" if name == "mqtt_url" else f"MQTT_{name.upper()}"
    for name in MQTTClientConfig.model_fields
}
"""Option name -> environment variable read by :meth:`MQTTClientConfig.from_env`."""


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


def warn_unknown_env(
    source: Mapping[str, str], known: Collection[str] | None = None, reader: str = "tars-core"
) -> None:
    """A WARNING per ``MQTT_*`` variable no option reads, with the closest known name: a
    misspelt one (``MQTT_KEEP_ALIVE``) is otherwise silently ignored. Only a warning: other
    programs may read ``MQTT_*`` variables of their own. The value is never logged (it may be
    a secret). ``known``/``reader``: the variables another reader (the drop-in) reads, and its
    name in the message."""
    if known is None:
        known = ENV_VARS.values()
    unknown = sorted(name for name in source if name.startswith("MQTT_") and name not in known)
    if not unknown:
        return
    import difflib  # only when there is something to say: kept off the start-up path
    import logging

    suffixes = [var.removeprefix("MQTT_") for var in known]  # the shared prefix is no clue
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix("MQTT_"), suffixes, n=1, cutoff=0.7)
        logging.getLogger("tars.mqtt").warning(
            "environment variable %s is not a %s option: ignored%s",
            name,
            reader,
            f" (did you mean MQTT_{close[0]}?)" if close else "",
        )


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
