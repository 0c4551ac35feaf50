"""Configuration: URL parsing, redaction, every option's check, and the environment."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import traceback
from pathlib import Path
from typing import Any

import pytest

from support.tls import make_certs
from tars.mqtt._config import (
    ENV_VARS,
    ConnectionParams,
    MQTTClientConfig,
    parse_mqtt_url,
    redact_url,
)
from tars.mqtt._errors import ConfigError, InvalidArgumentTypeError, MQTTError

SECRET = "S3cr3tPW"
CERTS = "{certs}"  # stands for the directory of the ``certs`` fixture in the cases below


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server and a client certificate made by openssl (the TLS options read them)."""
    return make_certs(tmp_path_factory.mktemp("certs"))


def fill(value: Any, certs: Path) -> Any:
    """``value`` with :data:`CERTS` replaced by the real directory (in str, Path and dicts)."""
    if isinstance(value, str):
        return value.replace(CERTS, str(certs))
    if isinstance(value, Path):
        return Path(str(value).replace(CERTS, str(certs)))
    if isinstance(value, dict):
        return {k: fill(v, certs) for k, v in value.items()}
    return value


BASE: dict[str, Any] = {"mqtt_url": "mqtt://localhost", "client_id": "svc"}
BASE_ENV = {"MQTT_URL": "mqtt://localhost", "MQTT_CLIENT_ID": "svc"}


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets or (SECRET,):
        assert secret not in text


def assert_error_hides_secret(error: BaseException, *secrets: str) -> None:
    """Nothing a log line could show of the error (message, repr, traceback) has the secret."""
    assert_no_secret(str(error), *secrets)
    assert_no_secret(repr(error), *secrets)
    assert_no_secret("".join(traceback.format_exception(error)), *secrets)


# --- parse_mqtt_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://localhost", ConnectionParams("localhost", 1883, False, None, None)),
        ("mqtt://localhost/", ConnectionParams("localhost", 1883, False, None, None)),
        ("mqtts://broker.example", ConnectionParams("broker.example", 8883, True, None, None)),
        ("mqtt://h:1884", ConnectionParams("h", 1884, False, None, None)),
        ("mqtts://h:1", ConnectionParams("h", 1, True, None, None)),
        ("mqtt://h:65535", ConnectionParams("h", 65535, False, None, None)),
        ("mqtt://h:", ConnectionParams("h", 1883, False, None, None)),
        ("MQTT://h", ConnectionParams("h", 1883, False, None, None)),
        ("MqTtS://h", ConnectionParams("h", 8883, True, None, None)),
        ("mqtt://10.0.0.1:1883", ConnectionParams("10.0.0.1", 1883, False, None, None)),
        ("mqtt://[::1]", ConnectionParams("::1", 1883, False, None, None)),
        ("mqtt://[::1]:1884", ConnectionParams("::1", 1884, False, None, None)),
        ("mqtts://[2001:db8::1]/", ConnectionParams("2001:db8::1", 8883, True, None, None)),
        ("mqtt://user@h", ConnectionParams("h", 1883, False, "user", None)),
        ("mqtt://user:pw@h:2", ConnectionParams("h", 2, False, "user", "pw")),
        ("mqtt://us%40er:p%3Ass@h", ConnectionParams("h", 1883, False, "us@er", "p:ss")),
        ("mqtt://u:p%2F%3F%23%40%20%C3%A9@h", ConnectionParams("h", 1883, False, "u", "p/?#@ é")),
        ("mqtt://:pw@h", ConnectionParams("h", 1883, False, None, "pw")),
        ("mqtt://user:@h", ConnectionParams("h", 1883, False, "user", "")),
        ("mqtt://u:p@ss@h", ConnectionParams("h", 1883, False, "u", "p@ss")),  # last '@' splits
    ],
)
def test_parse_mqtt_url(url: str, expected: ConnectionParams) -> None:
    assert parse_mqtt_url(url) == expected


BAD_URLS = [
    # (url with {c} where credentials go, what the message says)
    ("", "mqtt://"),
    ("{c}localhost:1883", "mqtt://"),
    ("mqtt:/{c}h", "mqtt://"),
    ("http://{c}h", "scheme 'http'"),
    ("wsx://{c}h:1883", "scheme 'wsx'"),
    ("ws://{c}h/mqtt#frag", "fragment"),
    ("ws://{c}h/a b", "whitespace"),
    ("mqtt+ws://{c}h", "scheme"),
    ("mqtt://{c}", "missing host"),
    ("mqtt://{c}:1883", "missing host"),
    ("mqtt://{c}h:0", "port"),
    ("mqtt://{c}h:65536", "port"),
    ("mqtt://{c}h:-1", "port"),
    ("mqtt://{c}h:+1", "port"),
    ("mqtt://{c}h:abc", "port"),
    ("mqtt://{c}h:1.5", "port"),
    ("mqtt://{c}h: 1", "port"),
    ("mqtt://{c}h:١٢", "port"),  # non-ASCII digits
    ("mqtt://{c}h/path", "path"),
    ("mqtt://{c}h//", "path"),
    ("mqtt://{c}h?x=1", "query"),
    ("mqtt://{c}h?", "query"),
    ("mqtt://{c}h#frag", "fragment"),
    ("mqtt://{c}h/#", "fragment"),
    ("mqtt://{c}::1:1883", "brackets"),
    ("mqtt://{c}[::1", "brackets"),
    ("mqtt://{c}[::1]x", "brackets"),
    ("mqtt://{c}[zz]:1", "IPv6"),
    ("mqtt://{c}[10.0.0.1]", "IPv6"),
    ("mqtt://{c}h st", "whitespace"),
    ("mqtt://{c}h\n", "whitespace"),
]


@pytest.mark.parametrize(("template", "why"), BAD_URLS)
@pytest.mark.parametrize("credentials", ["", f"user:{SECRET}@", f":{SECRET}@"])
def test_bad_urls_raise_config_error_without_the_password(
    template: str, why: str, credentials: str
) -> None:
    url = template.format(c=credentials)
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(url)
    assert info.value.field == "mqtt_url"
    assert why.lower() in str(info.value).lower()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MQTTError)
    assert_error_hides_secret(info.value)


@pytest.mark.parametrize(
    ("url", "secret_parts"),
    [
        # A password with unescaped '/', '?' or '#' spills into the path, query or fragment.
        ("mqtt://user:S3cr/3tPW@h", ("S3cr", "3tPW")),
        ("mqtt://user:S3cr?3tPW@h", ("S3cr", "3tPW")),
        ("mqtt://user:S3cr#3tPW@h", ("S3cr", "3tPW")),
        ("mqtt://user:S3cr@t/PW@h", ("S3cr", "t/PW")),
        # The host was forgotten, so the password reads as a port.
        (f"mqtt://user:{SECRET}", (SECRET,)),
        (f"mqtt://user:{SECRET}/", (SECRET,)),
        # The scheme was forgotten (and "://" turns up later).
        (f"user:{SECRET}@host://x", (SECRET,)),
        # Bad percent-encoding in the password.
        (f"mqtt://user:{SECRET}%ff@h", (SECRET,)),
        (f"mqtt://user:{SECRET}%C3@h", (SECRET,)),
    ],
)
def test_malformed_passwords_are_never_quoted(url: str, secret_parts: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(url)
    assert info.value.field == "mqtt_url"
    assert_error_hides_secret(info.value, *secret_parts)


def test_non_string_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(1883)  # type: ignore[arg-type]
    assert info.value.field == "mqtt_url"
    assert isinstance(info.value, InvalidArgumentTypeError)  # a wrong type: also a TypeError


@pytest.mark.parametrize("user", ["Xq%01Zk", "Xq%1FZk", "Xq%7FZk", "Xq%C2%85Zk", "Xq%EF%BF%BFZk"])
def test_a_user_name_with_a_control_or_non_character_is_refused_without_showing_it(
    user: str,
) -> None:
    # The user name is an MQTT 5 UTF-8 string: Mosquitto closes every connection whose CONNECT
    # holds such a character in it, so the client would retry for ever.
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(f"mqtt://{user}:{SECRET}@h")
    assert info.value.field == "mqtt_url"
    assert "user name" in str(info.value)
    assert "MQTT 5 section 1.5.4" in str(info.value)
    assert_error_hides_secret(info.value, SECRET, "Xq", "Zk")


def test_the_password_is_binary_data_with_no_character_rule() -> None:
    assert parse_mqtt_url(f"mqtt://alice:{SECRET}%01@h").password == f"{SECRET}\x01"


# --- redact_url ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://user:pw@h:1883", "mqtt://user:***@h:1883"),
        ("mqtts://:pw@h", "mqtts://:***@h"),
        ("mqtt://us%40er:p%3Ass@h", "mqtt://us%40er:***@h"),
        ("mqtt://u:p@ss@h", "mqtt://u:***@h"),
        ("mqtt://u:p/ss@h/x", "mqtt://u:***@h/x"),
        ("mqtt://u:p#ss@h", "mqtt://u:***@h"),
        ("user:secret@host", "user:***@host"),
        ("user:secret@host://x", "user:***@host://x"),
        ("mqtt://user:secret", "mqtt://user:***"),
        ("mqtt://user:sec/ret", "mqtt://user:***"),
        ("mqtt://host:1883/x@y", "mqtt://host:***@y"),  # over-masking is the safe side
        # Nothing to hide: unchanged.
        ("mqtt://h:1883", "mqtt://h:1883"),
        ("mqtt://h:1883/", "mqtt://h:1883/"),
        ("mqtt://user@h", "mqtt://user@h"),
        ("mqtt://[::1]:1883", "mqtt://[::1]:1883"),
        ("mqtt://h:", "mqtt://h:"),
        ("", ""),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- ConnectionParams ----------------------------------------------------------------------------


def test_connection_params_never_show_the_password() -> None:
    params = ConnectionParams("h", 1883, False, "user", SECRET)
    for text in (repr(params), str(params), f"{params}", params.redacted_url):
        assert_no_secret(text)
        assert "***" in text
    assert "user" in repr(params)
    assert params.password == SECRET


def test_connection_params_without_password_show_none() -> None:
    assert "password=None" in repr(ConnectionParams("h", 1883, False, "user", None))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (ConnectionParams("h", 1883, False, None, None), "mqtt://h:1883"),
        (ConnectionParams("h", 8883, True, None, None), "mqtts://h:8883"),
        (ConnectionParams("h", 1883, False, "user", None), "mqtt://user@h:1883"),
        (ConnectionParams("h", 1883, False, "user", SECRET), "mqtt://user:***@h:1883"),
        (ConnectionParams("h", 1883, False, None, SECRET), "mqtt://:***@h:1883"),
        (ConnectionParams("h", 1883, False, "us@er", ""), "mqtt://us%40er:***@h:1883"),
        (ConnectionParams("::1", 1884, False, None, None), "mqtt://[::1]:1884"),
    ],
)
def test_redacted_url(params: ConnectionParams, expected: str) -> None:
    assert params.redacted_url == expected


def test_redacted_url_parses_back_to_the_same_place() -> None:
    params = parse_mqtt_url(f"mqtts://us%40er:{SECRET}@[2001:db8::1]:9000")
    again = parse_mqtt_url(params.redacted_url)
    assert (again.host, again.port, again.tls, again.username) == (
        "2001:db8::1",
        9000,
        True,
        "us@er",
    )


def test_connection_params_are_frozen() -> None:
    params = ConnectionParams("h", 1883, False, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.port = 1  # type: ignore[misc]


# --- MQTTClientConfig: fields and defaults -------------------------------------------------------

DOCUMENTED_DEFAULTS: dict[str, Any] = {
    "source_name": None,
    "broker_order": "in_order",
    "redirects": "listed",
    "instance": None,
    "keepalive": 60,
    "enable_health": False,
    "enable_heartbeat": False,
    "heartbeat_interval": 5.0,
    "dedupe_ttl": 0.0,
    "dedupe_max_entries": 0,
    "reconnect_min_delay": 0.5,
    "reconnect_max_delay": 5.0,
    "connect_timeout": 10.0,
    "protocol": "auto",
    "wait_for_broker": True,
    "clean_start": True,
    "session_expiry_interval": 0,
    "max_payload_size": 1_048_576,
    "receive_maximum": 100,
    "acknowledge": "after_handling",
    "unrouted_timeout": None,
    "tls_ca_file": None,
    "tls_cert_file": None,
    "tls_key_file": None,
    "tls_insecure": False,
    "ws_headers": None,
    "queue_size": 1000,
    "overflow": "drop_oldest",
    "handler_concurrency": 1,
    "handler_timeout": None,
    "watchdog_missed_heartbeats": 3,
    "publish_timeout": 10.0,
    "outbox_max_messages": 10_000,
    "outbox_max_bytes": 16 * 1024 * 1024,
    "outbox_message_ttl": None,
    "outbox_policy": "drop_oldest",
    "queue_qos0_offline": False,
    "republish_retained": True,
    "outbox_path": None,
    "correlation_format": "native",
}


def test_fields_are_the_documented_ones_with_the_documented_defaults() -> None:
    config = MQTTClientConfig(**BASE)
    assert set(MQTTClientConfig.model_fields) == {"mqtt_url", "client_id", *DOCUMENTED_DEFAULTS}
    for name, default in DOCUMENTED_DEFAULTS.items():
        value = getattr(config, name)
        assert value == default, name
        assert type(value) is type(default), name


def test_every_field_is_documented() -> None:
    for name, info in MQTTClientConfig.model_fields.items():
        assert info.description, name
        assert len(info.description) > 15, name


def test_source_and_connection() -> None:
    config = MQTTClientConfig(mqtt_url=f"mqtts://u:{SECRET}@b:9", client_id="stt")
    assert config.source == "stt"
    assert config.connection == ConnectionParams("b", 9, True, "u", SECRET)
    assert config.connection is config.connection  # parsed once
    assert MQTTClientConfig(**BASE, source_name="stt-worker").source == "stt-worker"


def test_configs_compare_by_value_and_are_hashable() -> None:
    a = MQTTClientConfig(**BASE, keepalive=30)
    b = MQTTClientConfig(**BASE, keepalive=30)
    assert a == b
    assert hash(a) == hash(b)
    assert a != MQTTClientConfig(**BASE)


def test_config_is_frozen() -> None:
    config = MQTTClientConfig(**BASE)
    with pytest.raises(AttributeError, match="frozen"):
        config.keepalive = 5
    assert config.keepalive == 60


def test_model_copy_validates_and_reparses_the_url() -> None:
    config = MQTTClientConfig(**BASE)
    other = config.model_copy(update={"mqtt_url": "mqtts://u:pw@b", "keepalive": 5})
    assert other.connection == ConnectionParams("b", 8883, True, "u", "pw")
    assert other.keepalive == 5
    assert config.keepalive == 60
    with pytest.raises(ConfigError) as info:
        config.model_copy(update={"keepalive": 0})
    assert info.value.field == "keepalive"


# --- MQTTClientConfig: validation ----------------------------------------------------------------

BAD_VALUES: list[tuple[str, Any]] = [
    ("mqtt_url", "http://h"),
    ("mqtt_url", "mqtt://"),
    ("mqtt_url", 1883),
    ("client_id", ""),
    ("client_id", "a+b"),
    ("client_id", "a#"),
    ("client_id", "a\0b"),
    ("client_id", "a\x01b"),
    ("client_id", "a\ud800"),
    ("client_id", "x" * 65536),
    ("client_id", None),
    ("source_name", ""),
    ("source_name", 5),
    ("broker_order", "random"),
    ("redirects", "anywhere"),
    ("instance", ""),
    ("instance", "a+b"),
    ("keepalive", 0),
    ("keepalive", 3601),
    ("keepalive", 1.5),
    ("keepalive", "60"),
    ("keepalive", True),
    ("enable_health", "yes"),
    ("enable_health", 1),
    ("enable_heartbeat", None),
    ("heartbeat_interval", 0.99),
    ("heartbeat_interval", math.inf),
    ("heartbeat_interval", math.nan),
    ("dedupe_ttl", -0.1),
    ("dedupe_max_entries", -1),
    ("reconnect_min_delay", 0),
    ("reconnect_min_delay", -1.0),
    ("reconnect_max_delay", 0),
    ("reconnect_max_delay", 0.4),  # below the default reconnect_min_delay
    ("connect_timeout", 0),
    ("protocol", "3.1"),
    ("protocol", 5),  # the version is a string: "5"
    ("wait_for_broker", "no"),
    ("clean_start", 0),
    ("session_expiry_interval", -1),
    ("session_expiry_interval", 4_294_967_296),
    ("max_payload_size", 0),
    ("max_payload_size", 268_435_456),
    ("receive_maximum", 0),
    ("receive_maximum", 65536),
    ("acknowledge", "on_handling"),
    ("acknowledge", "ON_ARRIVAL"),
    ("unrouted_timeout", 0),
    ("unrouted_timeout", -5.0),
    ("tls_ca_file", ""),
    ("tls_ca_file", "/no/such/ca.pem"),
    ("tls_cert_file", ""),
    ("tls_cert_file", 5),
    ("tls_key_file", ""),
    ("tls_key_file", "/no/such/client.key"),  # and no certificate
    ("tls_insecure", "false"),
    ("ws_headers", {"Upgrade": "h2c"}),
    ("queue_size", 0),
    ("overflow", "drop"),
    ("overflow", "BLOCK"),
    ("handler_concurrency", 0),
    ("handler_timeout", 0),
    ("handler_timeout", -1.0),
    ("watchdog_missed_heartbeats", 0),
    ("publish_timeout", 0),
    ("publish_timeout", -math.inf),
    ("outbox_max_messages", -1),
    ("outbox_max_bytes", -1),
    ("outbox_message_ttl", 0),
    ("outbox_policy", "block_forever"),
    ("queue_qos0_offline", "true"),
    ("republish_retained", "no"),
    ("outbox_path", ""),
    ("outbox_path", 5),
    ("outbox_path", "/no/such/parent/outbox"),
    ("correlation_format", "legacy"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=lambda v: str(v)[:20])
def test_bad_values_raise_config_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**{**BASE, field: value})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "char", ["\x01", "\x1f", "\x7f", "\x85", "\x9f", "\ufdd0", "\U0001fffe"], ids=ascii
)
def test_a_control_or_non_character_in_client_id_is_a_config_error(char: str) -> None:
    # MQTT 5 section 1.5.4: Mosquitto closes a connection whose client id holds one (and the
    # id is a level of the health topics), so it is refused at construction, whichever way.
    client_id = f"sv{char}c"
    for build in (
        lambda: MQTTClientConfig(**{**BASE, "client_id": client_id}),
        lambda: MQTTClientConfig.from_env({**BASE_ENV, "MQTT_CLIENT_ID": client_id}),
        lambda: MQTTClientConfig(**{**BASE, "instance": client_id}),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.field in ("client_id", "instance")
        assert f"U+{ord(char):04X}" in str(info.value)


def test_every_option_has_a_bad_value_test() -> None:
    assert {field for field, _ in BAD_VALUES} == set(MQTTClientConfig.model_fields)


GOOD_VALUES: list[tuple[str, Any]] = [
    ("client_id", "x" * 65535),
    ("client_id", "stt/worker"),
    ("client_id", "é"),
    ("keepalive", 1),
    ("keepalive", 3600),
    ("heartbeat_interval", 1),
    ("heartbeat_interval", 1.0),
    ("session_expiry_interval", 4_294_967_295),
    ("max_payload_size", 1),
    ("max_payload_size", 268_435_455),
    ("receive_maximum", 1),
    ("receive_maximum", 65535),
    ("reconnect_min_delay", 5.0),  # equal to the default reconnect_max_delay
    ("handler_timeout", 0.001),
    ("outbox_max_messages", 0),
    ("outbox_max_bytes", 0),
    ("outbox_message_ttl", 0.5),
    ("overflow", "drop_oldest"),
    ("overflow", "drop_newest"),
    ("outbox_policy", "raise"),
    ("outbox_policy", "block"),
    ("outbox_policy", "drop_newest"),
    ("tls_ca_file", f"{CERTS}/ca.pem"),
    ("outbox_path", Path(CERTS)),
    ("outbox_path", Path(CERTS) / "not-yet"),  # created by the store, under an existing parent
]


@pytest.mark.parametrize(("field", "value"), GOOD_VALUES, ids=lambda v: str(v)[:20])
def test_boundary_values_are_accepted(field: str, value: Any, certs: Path) -> None:
    value = fill(value, certs)
    assert getattr(MQTTClientConfig(**{**BASE, field: value}), field) == value


def test_dedupe_ttl_needs_a_bound_on_entries() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, dedupe_ttl=1.0)
    assert info.value.field == "dedupe_max_entries"
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, dedupe_ttl=1.0, dedupe_max_entries=0)
    assert info.value.field == "dedupe_max_entries"
    config = MQTTClientConfig(**BASE, dedupe_ttl=1.0, dedupe_max_entries=10)
    assert (config.dedupe_ttl, config.dedupe_max_entries) == (1.0, 10)


def test_reconnect_max_delay_must_not_be_below_min() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, reconnect_min_delay=2.0, reconnect_max_delay=1.0)
    assert info.value.field == "reconnect_max_delay"
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, reconnect_min_delay=6.0)  # above the default max of 5.0
    assert info.value.field == "reconnect_max_delay"
    config = MQTTClientConfig(**BASE, reconnect_min_delay=2.0, reconnect_max_delay=2.0)
    assert config.reconnect_max_delay == 2.0


@pytest.mark.parametrize("missing", ["mqtt_url", "client_id"])
def test_required_fields(missing: str) -> None:
    data = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**data)
    assert info.value.field == missing
    assert "required" in str(info.value)


def test_unknown_options_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, keepalivee=5)
    assert info.value.field == "keepalivee"
    assert "did you mean 'keepalive'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, zzz=1, aaa=2)
    assert info.value.field == "aaa, zzz"


def test_several_problems_are_all_named() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, keepalive=0, queue_size=0, publish_timeout=0)
    assert info.value.field == "keepalive"
    assert "publish_timeout" in str(info.value)
    assert "queue_size" in str(info.value)


def test_repr_and_str_show_the_url_redacted() -> None:
    config = MQTTClientConfig(mqtt_url=f"mqtt://user:{SECRET}@h", client_id="svc")
    for text in (repr(config), str(config), f"{config!r}"):
        assert_no_secret(text)
        assert "mqtt://user:***@h" in text
    assert config.mqtt_url == f"mqtt://user:{SECRET}@h"


@pytest.mark.parametrize(
    ("url", "secret_parts"),
    [
        (f"mqtt://user:{SECRET}@h:99999", (SECRET,)),
        (f"http://user:{SECRET}@h", (SECRET,)),
        (f"mqtt://user:{SECRET}@h/path", (SECRET,)),
        (f"mqtt://user:{SECRET}", (SECRET,)),
        ("mqtt://user:S3cr#3tPW@h", ("S3cr", "3tPW")),
    ],
)
def test_config_errors_never_contain_the_password(url: str, secret_parts: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(mqtt_url=url, client_id="svc")
    assert info.value.field == "mqtt_url"
    assert_error_hides_secret(info.value, *secret_parts)
    # A bad value elsewhere must not drag the (valid) URL's password along either.
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(mqtt_url=f"mqtt://user:{SECRET}@h", client_id="svc", keepalive="x")
    assert_error_hides_secret(info.value)


def test_config_errors_do_not_chain_pydantic_errors() -> None:
    """A chained ValidationError would quote the input (password included) in tracebacks."""
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(mqtt_url=f"mqtt://u:{SECRET}@h", client_id="c", keepalive=0)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_model_validate_raises_config_errors_too() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.model_validate({"mqtt_url": f"mqtt://u:{SECRET}@h:0", "client_id": "c"})
    assert info.value.field == "mqtt_url"
    assert_error_hides_secret(info.value)
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.model_validate({**BASE, "bogus": 1})
    assert info.value.field == "bogus"
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.model_validate("mqtt://h")
    assert info.value.field == "config"
    config = MQTTClientConfig.model_validate({**BASE, "keepalive": 5})
    assert (config.keepalive, config.connection.host) == (5, "localhost")


def test_model_validate_json_raises_config_errors_too() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.model_validate_json(
            f'{{"mqtt_url": "mqtt://u:{SECRET}@h", "client_id": "c", "receive_maximum": 0}}'
        )
    assert info.value.field == "receive_maximum"
    assert_error_hides_secret(info.value)
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.model_validate_json(f'{{"mqtt_url": "mqtt://u:{SECRET}@h", ')
    assert info.value.field == "config"
    assert_error_hides_secret(info.value)
    config = MQTTClientConfig.model_validate_json('{"mqtt_url": "mqtts://h", "client_id": "c"}')
    assert config.connection.tls is True


# --- from_env ------------------------------------------------------------------------------------


def test_env_var_names() -> None:
    assert ENV_VARS["mqtt_url"] == "MQTT_URL"
    assert ENV_VARS["client_id"] == "MQTT_CLIENT_ID"
    assert ENV_VARS["dedupe_max_entries"] == "MQTT_DEDUPE_MAX_ENTRIES"
    assert ENV_VARS["queue_qos0_offline"] == "MQTT_QUEUE_QOS0_OFFLINE"
    assert set(ENV_VARS) == set(MQTTClientConfig.model_fields)
    for name, var in ENV_VARS.items():
        if name != "mqtt_url":
            assert var == "MQTT_" + name.upper()


# One non-default value per option: (field, env text, parsed value, other env needed).
ENV_CASES: list[tuple[str, str, Any, dict[str, str]]] = [
    ("mqtt_url", " mqtts://u:pw@b:9 ", "mqtts://u:pw@b:9", {}),
    ("client_id", "stt-worker", "stt-worker", {}),
    ("source_name", "stt", "stt", {}),
    ("broker_order", "shuffle", "shuffle", {}),
    ("redirects", "never", "never", {}),
    ("instance", "pod-7", "pod-7", {}),
    ("keepalive", "30", 30, {}),
    ("enable_health", "true", True, {}),
    ("enable_heartbeat", "1", True, {}),
    ("heartbeat_interval", "2.5", 2.5, {}),
    ("dedupe_ttl", "30", 30.0, {"MQTT_DEDUPE_MAX_ENTRIES": "100"}),
    ("dedupe_max_entries", "500", 500, {}),
    ("reconnect_min_delay", "0.25", 0.25, {}),
    ("reconnect_max_delay", "30", 30.0, {}),
    ("connect_timeout", "3", 3.0, {}),
    ("protocol", "3.1.1", "3.1.1", {}),
    ("wait_for_broker", "no", False, {}),
    ("clean_start", "off", False, {}),
    ("session_expiry_interval", "3600", 3600, {}),
    ("max_payload_size", "2048", 2048, {}),
    ("receive_maximum", "10", 10, {}),
    ("acknowledge", "on_arrival", "on_arrival", {}),
    ("unrouted_timeout", "120", 120.0, {}),
    ("tls_ca_file", f"{CERTS}/ca.pem", f"{CERTS}/ca.pem", {}),
    (
        "tls_cert_file",
        f"{CERTS}/client.pem",
        f"{CERTS}/client.pem",
        {"MQTT_TLS_KEY_FILE": f"{CERTS}/client.key"},
    ),
    (
        "tls_key_file",
        f"{CERTS}/client.key",
        f"{CERTS}/client.key",
        {"MQTT_TLS_CERT_FILE": f"{CERTS}/client.pem"},
    ),
    ("tls_insecure", "YES", True, {}),
    ("ws_headers", '{"X-Token": "t"}', {"X-Token": "t"}, {}),
    ("queue_size", "5", 5, {}),
    ("overflow", "drop_newest", "drop_newest", {}),
    ("handler_concurrency", "4", 4, {}),
    ("handler_timeout", "1.5", 1.5, {}),
    ("watchdog_missed_heartbeats", "5", 5, {}),
    ("publish_timeout", "2", 2.0, {}),
    ("outbox_max_messages", "0", 0, {}),
    ("outbox_max_bytes", "1024", 1024, {}),
    ("outbox_message_ttl", "60", 60.0, {}),
    ("outbox_policy", "raise", "raise", {}),
    ("queue_qos0_offline", "On", True, {}),
    ("republish_retained", "false", False, {}),
    ("outbox_path", f" {CERTS} ", Path(CERTS), {}),
    ("correlation_format", "original", "original", {}),
]


def test_every_option_has_an_env_case() -> None:
    assert {case[0] for case in ENV_CASES} == set(MQTTClientConfig.model_fields)


@pytest.mark.parametrize(("field", "text", "expected", "extra"), ENV_CASES)
def test_each_env_var_is_read(
    field: str, text: str, expected: Any, extra: dict[str, str], certs: Path
) -> None:
    text, expected, extra = fill(text, certs), fill(expected, certs), fill(extra, certs)
    config = MQTTClientConfig.from_env({**BASE_ENV, **extra, ENV_VARS[field]: text})
    value = getattr(config, field)
    assert value == expected
    assert type(value) is type(expected)


def test_from_env_reads_everything_at_once(certs: Path) -> None:
    env = {ENV_VARS[field]: fill(text, certs) for field, text, _, _ in ENV_CASES}
    config = MQTTClientConfig.from_env(env)
    for field, _, expected, _ in ENV_CASES:
        assert getattr(config, field) == fill(expected, certs), field
    assert config.connection == ConnectionParams("b", 9, True, "u", "pw")


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MQTT_URL", "mqtt://from-environ:1999")
    monkeypatch.setenv("MQTT_CLIENT_ID", "env-svc")
    monkeypatch.setenv("MQTT_KEEPALIVE", "42")
    config = MQTTClientConfig.from_env()
    assert (config.connection.host, config.connection.port) == ("from-environ", 1999)
    assert (config.client_id, config.keepalive) == ("env-svc", 42)


def test_overrides_win_over_env() -> None:
    env = {**BASE_ENV, "MQTT_KEEPALIVE": "30", "MQTT_ENABLE_HEALTH": "maybe"}
    config = MQTTClientConfig.from_env(env, keepalive=5, enable_health=True, client_id="other")
    assert (config.keepalive, config.enable_health, config.client_id) == (5, True, "other")
    # Required options may come from overrides alone.
    config = MQTTClientConfig.from_env({}, mqtt_url="mqtt://h", client_id="c")
    assert config.connection.host == "h"


def test_unset_env_leaves_defaults() -> None:
    config = MQTTClientConfig.from_env(BASE_ENV)
    for name, default in DOCUMENTED_DEFAULTS.items():
        assert getattr(config, name) == default, name


@pytest.mark.parametrize(
    "var",
    [
        "MQTT_SOURCE_NAME",
        "MQTT_TLS_CA_FILE",
        "MQTT_HANDLER_TIMEOUT",
        "MQTT_OUTBOX_MESSAGE_TTL",
        "MQTT_KEEPALIVE",
        "MQTT_ENABLE_HEALTH",
    ],
)
@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_env_values_mean_unset(var: str, empty: str) -> None:
    config = MQTTClientConfig.from_env({**BASE_ENV, var: empty})
    field = next(name for name, v in ENV_VARS.items() if v == var)
    assert getattr(config, field) == DOCUMENTED_DEFAULTS[field]


def test_unrelated_mqtt_variables_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = MQTTClientConfig.from_env({**BASE_ENV, "MQTT_HOST": "elsewhere", "MQTT_X": "1"})
    assert config.connection.host == "localhost"
    warned = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert warned == [
        "environment variable MQTT_HOST is not a tars-core option: ignored",
        "environment variable MQTT_X is not a tars-core option: ignored",
    ]


def test_a_misspelt_variable_is_named_with_the_closest_option_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {**BASE_ENV, "MQTT_KEEP_ALIVE": "30", "MQTT_PASSWORD_X": "s3cret"}
    config = MQTTClientConfig.from_env(env)
    assert config.keepalive == 60  # not read: the warning says why
    hints = [r.getMessage() for r in caplog.records if "MQTT_KEEP_ALIVE" in r.getMessage()]
    assert hints == [
        "environment variable MQTT_KEEP_ALIVE is not a tars-core option: ignored "
        "(did you mean MQTT_KEEPALIVE?)"
    ]
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True), ("TRUE", True), ("True", True), (" true ", True), ("1", True),
        ("yes", True), ("Yes", True), ("on", True), ("ON", True), ("\ttrue\n", True),
        ("false", False), ("FALSE", False), ("0", False), ("no", False), ("NO", False),
        ("off", False), ("Off", False), (" 0 ", False),
    ],
)  # fmt: skip
def test_env_booleans_accepted(text: str, expected: bool) -> None:
    env = {**BASE_ENV, "MQTT_ENABLE_HEALTH": text}
    assert MQTTClientConfig.from_env(env).enable_health is expected


@pytest.mark.parametrize(
    "text", ["y", "n", "t", "f", "2", "-1", "tru", "enable", "enabled", "yes please", "1.0", "ja"]
)
def test_env_booleans_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**BASE_ENV, "MQTT_ENABLE_HEALTH": text})
    assert info.value.field == "MQTT_ENABLE_HEALTH"
    message = str(info.value)
    for accepted in ("true/false", "1/0", "yes/no", "on/off"):
        assert accepted in message


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("MQTT_KEEPALIVE", "abc"),
        ("MQTT_KEEPALIVE", "1.5"),
        ("MQTT_KEEPALIVE", "60s"),
        ("MQTT_QUEUE_SIZE", "1e3"),
        ("MQTT_SESSION_EXPIRY_INTERVAL", "forever"),
        ("MQTT_HEARTBEAT_INTERVAL", "fast"),
        ("MQTT_HANDLER_TIMEOUT", "1,5"),
        ("MQTT_OUTBOX_MESSAGE_TTL", "1h"),
    ],
)
def test_env_numbers_that_do_not_parse_name_the_variable(var: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**BASE_ENV, var: text})
    assert info.value.field == var
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("var", "text", "field"),
    [
        ("MQTT_KEEPALIVE", "0", "keepalive"),
        ("MQTT_HEARTBEAT_INTERVAL", "inf", "heartbeat_interval"),
        ("MQTT_OVERFLOW", "BLOCK", "overflow"),
        ("MQTT_CLIENT_ID", "a/+", "client_id"),
    ],
)
def test_env_values_out_of_range_name_the_field_and_the_variable(
    var: str, text: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**BASE_ENV, var: text})
    assert info.value.field == field
    assert f"(from {var})" in str(info.value)


def test_env_cross_field_error_names_the_field_at_fault() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**BASE_ENV, "MQTT_DEDUPE_TTL": "5"})
    assert info.value.field == "dedupe_max_entries"  # left at its default: no variable to name
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**BASE_ENV, "MQTT_RECONNECT_MAX_DELAY": "0.1"})
    assert info.value.field == "reconnect_max_delay"
    assert "(from MQTT_RECONNECT_MAX_DELAY)" in str(info.value)


@pytest.mark.parametrize("env", [{"MQTT_CLIENT_ID": "c"}, {"MQTT_URL": "", "MQTT_CLIENT_ID": "c"}])
def test_missing_mqtt_url(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env(env)
    assert info.value.field == "MQTT_URL"


@pytest.mark.parametrize(
    "env", [{"MQTT_URL": "mqtt://h"}, {"MQTT_URL": "mqtt://h", "MQTT_CLIENT_ID": " "}]
)
def test_missing_client_id(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env(env)
    assert info.value.field == "MQTT_CLIENT_ID"


def test_bad_env_url_hides_the_password() -> None:
    env = {"MQTT_URL": f"mqtt://user:{SECRET}@h:70000", "MQTT_CLIENT_ID": "c"}
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env(env)
    assert info.value.field == "mqtt_url"
    assert "MQTT_URL" in str(info.value)
    assert_error_hides_secret(info.value)


def test_override_errors_name_the_field_only() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**BASE_ENV, "MQTT_KEEPALIVE": "30"}, keepalive=0)
    assert info.value.field == "keepalive"
    assert "MQTT_KEEPALIVE" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env(BASE_ENV, keep_alive=3)
    assert info.value.field == "keep_alive"


# --- files: TLS and the durable outbox -----------------------------------------------------------


def test_a_missing_ca_file_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="no such file") as info:
        MQTTClientConfig(**BASE, tls_ca_file="/no/such/ca.pem")
    assert info.value.field == "tls_ca_file"


def test_a_ca_file_without_certificates_is_refused(certs: Path) -> None:
    with pytest.raises(ConfigError, match="no PEM certificate") as info:
        MQTTClientConfig(**BASE, tls_ca_file=str(certs / "san.ext"))
    assert info.value.field == "tls_ca_file"


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_client_certificate_and_key_go_together(certs: Path, given: str) -> None:
    path = str(certs / ("client.pem" if given == "tls_cert_file" else "client.key"))
    with pytest.raises(ConfigError, match="give both or neither") as info:
        MQTTClientConfig(**BASE, **{given: path})
    assert info.value.field == "tls_key_file"


def test_a_client_certificate_and_key_that_load_are_kept(certs: Path) -> None:
    config = MQTTClientConfig(
        **BASE, tls_cert_file=str(certs / "client.pem"), tls_key_file=str(certs / "client.key")
    )
    assert (config.tls_cert_file, config.tls_key_file) == (
        str(certs / "client.pem"),
        str(certs / "client.key"),
    )


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("nope.pem", "client.key", "no such file"),
        ("client.pem", "nope.key", "no such file"),
        ("client.pem", "server.key", "not a PEM certificate and its private key"),
        ("ca.pem", "ca.pem", "not a PEM certificate and its private key"),
    ],
)
def test_a_client_certificate_that_does_not_load_is_refused(
    certs: Path, cert: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        MQTTClientConfig(**BASE, tls_cert_file=str(certs / cert), tls_key_file=str(certs / key))
    assert info.value.field == "tls_key_file"


def test_an_encrypted_key_is_refused_without_prompting(certs: Path, tmp_path: Path) -> None:
    # OpenSSL would otherwise ask for the passphrase on the terminal: a service would hang.
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs / "client.key"), "-aes256", "-passout",
         "pass:secret", "-out", str(tmp_path / "enc.key")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="encrypted"):
        MQTTClientConfig(
            **BASE, tls_cert_file=str(certs / "client.pem"), tls_key_file=str(tmp_path / "enc.key")
        )


def test_outbox_path_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory") as info:
        MQTTClientConfig(**BASE, outbox_path=tmp_path / "file")
    assert info.value.field == "outbox_path"


def test_outbox_path_accepts_text_and_names_one_file_per_client(tmp_path: Path) -> None:
    config = MQTTClientConfig(**BASE, outbox_path=str(tmp_path), instance="pod/2")
    assert config.outbox_path == tmp_path
    assert config.outbox_file == tmp_path / "svc-pod%2F2.outbox.sqlite3"
    assert MQTTClientConfig(**BASE).outbox_file is None
    again = MQTTClientConfig.model_validate_json(config.model_dump_json())
    assert again.outbox_path == tmp_path


# --- ws_headers (issue 22): the extra headers of a WebSocket upgrade -----------------------------


def test_ws_headers_are_checked_and_never_shown() -> None:
    config = MQTTClientConfig(**BASE, ws_headers={"Authorization": f"Bearer {SECRET}"})
    assert config.ws_headers == {"Authorization": f"Bearer {SECRET}"}
    assert SECRET not in repr(config)
    assert "Authorization" in repr(config)


def test_ws_headers_come_from_the_environment_as_a_json_object() -> None:
    env = {
        "MQTT_URL": "wss://gw.example/mqtt",
        "MQTT_CLIENT_ID": "svc",
        "MQTT_WS_HEADERS": f'{{"Authorization": "Bearer {SECRET}", "X-Tenant": "a"}}',
    }
    config = MQTTClientConfig.from_env(env)
    assert config.ws_headers == {"Authorization": f"Bearer {SECRET}", "X-Tenant": "a"}
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env({**env, "MQTT_WS_HEADERS": f"Authorization: {SECRET}"})
    assert info.value.field == "ws_headers"
    assert "JSON object" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Bad Name": "x"}, "not a valid HTTP header name"),
        ({"X-Token": f"{SECRET}\r\nX-Evil: 1"}, "without line breaks"),
        ({"X-Token": 5}, "must be a str"),
        ({"Sec-WebSocket-Protocol": "mqttv3.1"}, "set by the WebSocket handshake"),
        ({"host": "elsewhere"}, "set by the WebSocket handshake"),
        (["Authorization", SECRET], "mapping"),
    ],
)
def test_bad_ws_headers_name_the_header_never_the_value(headers: object, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(**BASE, ws_headers=headers)
    assert info.value.field == "ws_headers"
    assert says in str(info.value)
    assert SECRET not in str(info.value)
