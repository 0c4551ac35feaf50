"""Several brokers in ``mqtt_url`` (issue 13): parsing, redaction, order, and the config's view.

The single-URL rules (and their messages) are tested in test_config.py; here, what a list adds.
"""

from __future__ import annotations

import random
from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tars.mqtt import ConfigError, ConnectionParams, MQTTClientConfig
from tars.mqtt._topics import forbidden_character
from tars.mqtt._url import (
    order_endpoints,
    parse_mqtt_url,
    parse_mqtt_urls,
    redact_url,
    redact_urls,
    split_mqtt_urls,
)

MARK = "S3cr3t"

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
ports = st.integers(1, 65535)
secrets = st.text(min_size=0, max_size=12).map(lambda tail: MARK + tail)
# A user name is an MQTT 5 UTF-8 string: no control or non-character (refused, test_config.py).
users = st.text(min_size=1, max_size=8).filter(lambda user: forbidden_character(user) is None)


@st.composite
def url_lists(draw: st.DrawFn) -> tuple[str, list[ConnectionParams]]:
    """A comma-separated list of 1-4 distinct brokers, one scheme, credentials per URL."""
    tls = draw(st.booleans())
    scheme = draw(st.sampled_from(["mqtts", "MQTTS"] if tls else ["mqtt", "Mqtt"]))
    places = draw(st.lists(st.tuples(hosts, ports), min_size=1, max_size=4, unique=True))
    urls, expected = [], []
    for host, port in places:
        user = draw(st.none() | users)
        password = draw(st.none() | secrets) if user is not None else None
        userinfo = ""
        if user is not None:
            userinfo = quote(user, safe="")
            userinfo += f":{quote(password, safe='')}@" if password is not None else "@"
        urls.append(f"{scheme}://{userinfo}{host}:{port}")
        expected.append(ConnectionParams(host, port, tls, user, password))
    separator = draw(st.sampled_from([",", ", ", ",  "]))
    return separator.join(urls), expected


# --- parsing -------------------------------------------------------------------------------------


@given(url_lists())
def test_every_url_of_a_list_is_parsed_in_order(case: tuple[str, list[ConnectionParams]]) -> None:
    text, expected = case
    assert parse_mqtt_urls(text) == tuple(expected)


@given(url_lists())
def test_a_single_url_parses_as_before(case: tuple[str, list[ConnectionParams]]) -> None:
    text, _ = case
    first = split_mqtt_urls(text)[0]
    assert parse_mqtt_urls(first) == (parse_mqtt_url(first),)


def test_credentials_may_differ_per_url() -> None:
    endpoints = parse_mqtt_urls("mqtt://a:pa@n1:1883, mqtt://b:pb@n2:1884,mqtt://n3")
    assert [(e.host, e.port, e.username, e.password) for e in endpoints] == [
        ("n1", 1883, "a", "pa"),
        ("n2", 1884, "b", "pb"),
        ("n3", 1883, None, None),
    ]


def test_a_bare_comma_in_a_password_still_belongs_to_the_password() -> None:
    """Valid before lists existed: only a comma followed by a scheme starts a new URL."""
    assert parse_mqtt_urls("mqtt://u:pa,ss@h:1") == (ConnectionParams("h", 1, False, "u", "pa,ss"),)
    assert parse_mqtt_urls("mqtt://u:p,mqtt@h") == (
        ConnectionParams("h", 1883, False, "u", "p,mqtt"),
    )


def test_ipv6_hosts_in_a_list() -> None:
    endpoints = parse_mqtt_urls("mqtts://[::1]:8883,mqtts://[fe80::1]")
    assert [(e.host, e.port, e.tls) for e in endpoints] == [
        ("::1", 8883, True),
        ("fe80::1", 8883, True),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mqtt://a:1,mqtts://b:2",
            "all URLs of a list must use TLS (mqtts://, wss://) or none may: mixing them would "
            "let a failover drop TLS",
        ),
        (
            "wss://a:1,ws://b:2",
            "all URLs of a list must use TLS (mqtts://, wss://) or none may",
        ),
        ("ws://a:1/mqtt,ws://A:1", "URL 2 of 2 repeats URL 1 (same host and port)"),
        ("mqtt://a:1,mqtt://A:1", "URL 2 of 2 repeats URL 1 (same host and port)"),
        ("mqtt://a,mqtt://b,mqtt://a:1883", "URL 3 of 3 repeats URL 1 (same host and port)"),
        ("mqtt://u:pw@a:1,http://b", "URL 2 of 2: unknown scheme 'http': use mqtt://, mqtts://"),
        ("mqtt://a:1,mqtt://b:x", "URL 2 of 2: the port must be an integer from 1 to 65535"),
        ("mqtt://a:1,mqtt://", "URL 2 of 2: missing host, e.g. mqtt://localhost:1883"),
        ("mqtt://a:1,b:2", "a comma-separated list needs the scheme on every URL, e.g. "),
        ("mqtt://a,b", "a comma-separated list needs the scheme on every URL, e.g. "),
        ("mqtt://a:1,", "a comma-separated list needs the scheme on every URL, e.g. "),
    ],
)
def test_bad_lists_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mqtt_urls(text)
    assert info.value.field == "mqtt_url"
    assert str(info.value).startswith(f"mqtt_url: {message}")


@given(url_lists(), st.sampled_from(["mqtt://", "mqtt://h:0", "mqtt://h/x", "mqtt://[::1"]))
def test_errors_in_a_list_never_show_a_password(
    case: tuple[str, list[ConnectionParams]], bad: str
) -> None:
    text, _ = case
    with pytest.raises(ConfigError) as info:
        parse_mqtt_urls(f"{text},{bad}")
    assert MARK not in str(info.value)
    assert quote(MARK) not in str(info.value)


# --- redaction -----------------------------------------------------------------------------------


@given(url_lists())
def test_redacted_lists_keep_every_host_and_no_password(
    case: tuple[str, list[ConnectionParams]],
) -> None:
    text, expected = case
    redacted = redact_urls(text)
    assert MARK not in redacted
    assert parse_mqtt_urls(redacted) == tuple(
        ConnectionParams(e.host, e.port, e.tls, e.username, None if e.password is None else "***")
        for e in expected
    )


def test_redact_urls_of_a_single_url_is_redact_url() -> None:
    for url in ["mqtt://u:pw@h:1", "mqtt://u:p@ss@h", "mqtt://u:secret", "not a url"]:
        assert redact_urls(url) == redact_url(url)


def test_a_list_that_does_not_parse_is_masked_whole() -> None:
    # Split naively, the second item would show "S3cr3t-two" as a user name.
    text = "mqtt://u:S3cr3t-one,mqtts://S3cr3t-two@host"
    assert redact_urls(text) == "mqtt://u:***@host"


# --- order ---------------------------------------------------------------------------------------

THREE = parse_mqtt_urls("mqtt://n1,mqtt://n2,mqtt://n3")


def test_in_order_keeps_the_configured_order() -> None:
    assert order_endpoints(THREE, "in_order", random.Random(1)) == THREE


def test_shuffle_is_a_permutation_drawn_from_the_given_rng() -> None:
    first = order_endpoints(THREE, "shuffle", random.Random(7))
    assert sorted(first, key=lambda e: e.host) == list(THREE)
    assert order_endpoints(THREE, "shuffle", random.Random(7)) == first


def test_shuffle_spreads_a_fleet_over_the_nodes() -> None:
    """300 clients with one config: each node is the first choice of about a third of them."""
    firsts = Counter(
        order_endpoints(THREE, "shuffle", random.Random(seed))[0].host for seed in range(300)
    )
    assert set(firsts) == {"n1", "n2", "n3"}
    assert min(firsts.values()) >= 70


def test_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown broker order 'random'"):
        order_endpoints(THREE, "random", None)  # type: ignore[arg-type]


# --- the config's view ---------------------------------------------------------------------------


def test_config_endpoints_and_connection() -> None:
    config = MQTTClientConfig(mqtt_url="mqtt://u:p1@n1:1,mqtt://v:p2@n2:2", client_id="svc")
    assert [e.host for e in config.endpoints] == ["n1", "n2"]
    assert config.connection == config.endpoints[0]  # what single-broker code keeps using
    assert config.endpoints is config.endpoints  # parsed once
    assert config.ordered_endpoints() == config.endpoints  # in_order by default


def test_config_shuffles_per_call_with_the_given_rng() -> None:
    config = MQTTClientConfig(
        mqtt_url=",".join(f"mqtt://n{i}" for i in range(8)), client_id="s", broker_order="shuffle"
    )
    orders = {config.ordered_endpoints(random.Random(seed)) for seed in range(5)}
    assert len(orders) > 1
    assert all(sorted(order, key=lambda e: e.host) == list(config.endpoints) for order in orders)


def test_config_repr_shows_every_host_and_no_password() -> None:
    config = MQTTClientConfig(mqtt_url=f"mqtt://u:{MARK}1@n1,mqtt://v:{MARK}2@n2", client_id="s")
    for text in (repr(config), str(config)):
        assert MARK not in text
        assert "mqtt://u:***@n1:1883,mqtt://v:***@n2:1883" in text or (
            "mqtt://u:***@n1,mqtt://v:***@n2" in text
        )


def test_effective_client_id() -> None:
    assert MQTTClientConfig(mqtt_url="mqtt://h", client_id="stt").effective_client_id == "stt"
    config = MQTTClientConfig(mqtt_url="mqtt://h", client_id="stt", instance="pod-7")
    assert config.effective_client_id == "stt-pod-7"
    assert config.client_id == "stt"
    assert config.source == "stt"  # envelopes name the service, not the instance


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ("", "instance: must not be empty (leave it unset instead)"),
        ("a#", "instance: must not contain '+', '#' or NUL: it is used as a topic level"),
        ("a\0", "instance: must not contain '+', '#' or NUL: it is used as a topic level"),
        ("x" * 65532, "instance: must be at most 65,535 bytes of UTF-8"),  # with "stt-"
    ],
)
def test_bad_instances(instance: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig(mqtt_url="mqtt://h", client_id="stt", instance=instance)
    assert str(info.value) == message


def test_scale_out_options_from_env() -> None:
    config = MQTTClientConfig.from_env(
        {
            "MQTT_URL": f" mqtt://u:{MARK}@n1:1883, mqtt://u:{MARK}@n2:1883 ",
            "MQTT_CLIENT_ID": "stt",
            "MQTT_BROKER_ORDER": "shuffle",
            "MQTT_INSTANCE": "host-a",
        }
    )
    assert [e.host for e in config.endpoints] == ["n1", "n2"]
    assert config.broker_order == "shuffle"
    assert config.effective_client_id == "stt-host-a"
    assert (
        MQTTClientConfig.from_env(
            {"MQTT_URL": "mqtt://h", "MQTT_CLIENT_ID": "s", "MQTT_INSTANCE": ""}
        ).instance
        is None
    )


def test_bad_list_from_env_names_the_variable_and_hides_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env(
            {"MQTT_URL": f"mqtt://u:{MARK}@n1,mqtts://n2", "MQTT_CLIENT_ID": "s"}
        )
    assert info.value.field == "mqtt_url"
    assert str(info.value).endswith("(from MQTT_URL)")
    assert MARK not in str(info.value)


def test_broker_order_from_env_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClientConfig.from_env(
            {"MQTT_URL": "mqtt://h", "MQTT_CLIENT_ID": "s", "MQTT_BROKER_ORDER": "random"}
        )
    assert info.value.field == "broker_order"
    assert "(from MQTT_BROKER_ORDER)" in str(info.value)


# --- MQTT over WebSockets (issue 22) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://h", ConnectionParams("h", 80, False, ws_path="/mqtt")),
        ("WSS://h", ConnectionParams("h", 443, True, ws_path="/mqtt")),
        ("ws://h:9001/", ConnectionParams("h", 9001, False, ws_path="/")),
        ("wss://u:p%2Fw@h:8443/a/b", ConnectionParams("h", 8443, True, "u", "p/w", "/a/b")),
        ("ws://[::1]:9001/mqtt?x=1", ConnectionParams("::1", 9001, False, ws_path="/mqtt?x=1")),
        ("ws://h?token=1", ConnectionParams("h", 80, False, ws_path="/mqtt?token=1")),
    ],
)
def test_websocket_urls_keep_their_path_and_default_to_slash_mqtt(
    url: str, expected: ConnectionParams
) -> None:
    params = parse_mqtt_url(url)
    assert params == expected
    assert params.websocket


def test_a_websocket_query_is_masked_like_a_password() -> None:
    url = f"wss://user:{MARK}@gw.example:443/mqtt?token={MARK}"
    params = parse_mqtt_url(url)
    for shown in (params.redacted_url, repr(params), redact_url(url), redact_urls(url)):
        assert MARK not in shown
    assert params.redacted_url == "wss://user:***@gw.example:443/mqtt?***"


def test_tcp_and_websocket_urls_mix_in_one_list_when_tls_agrees() -> None:
    nodes = parse_mqtt_urls("mqtts://a:8883, wss://b/mqtt, wss://a:443/other")
    assert [(p.host, p.websocket) for p in nodes] == [("a", False), ("b", True), ("a", True)]
    # The same host and port on another path is another endpoint (two apps behind one proxy).
    assert len(parse_mqtt_urls("ws://a:1/x,ws://a:1/y")) == 2


def test_a_redirection_keeps_the_websocket_transport_and_path() -> None:
    from tars.mqtt._url import endpoint_from_reference

    current = parse_mqtt_url("wss://u:pw@a:443/mqtt")
    moved = endpoint_from_reference("b:8443", current)
    assert moved == ConnectionParams("b", 8443, True, "u", "pw", "/mqtt")
    to_url = endpoint_from_reference("wss://c/other", current)
    assert to_url == ConnectionParams("c", 443, True, "u", "pw", "/other")
    assert endpoint_from_reference("ws://c", current) is None  # never from TLS to clear text


# --- ?protocol= (docs/mqtt311.md) ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["5", "3.1.1", "auto"])
def test_a_url_may_name_its_brokers_mqtt_version(value: str) -> None:
    params = parse_mqtt_url(f"mqtt://u:pw@h:1884/?protocol={value}")
    assert params.protocol == value
    assert params.redacted_url == f"mqtt://u:***@h:1884?protocol={value}"
    assert parse_mqtt_url(f"mqtt://h?protocol={value}").protocol == value
    assert parse_mqtt_url("mqtt://h").protocol is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mqtt://h?protocol=3.1", "protocol must be"),
        ("mqtt://h?protocol=5&x=1", "query parameter"),
        ("mqtt://h?version=5", "query parameter"),
        ("mqtt://h/path?protocol=5", "path"),
        ("mqtt://h?protocol=5#frag", "fragment"),
    ],
)
def test_bad_protocol_parameters_are_config_errors(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_mqtt_url(url)
