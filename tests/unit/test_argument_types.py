"""Issue 19: an argument of the wrong type is refused at the public call with
:class:`~tars.mqtt.InvalidArgumentTypeError` (an ``MQTTError`` and a ``TypeError``) naming the
argument, never a bare ``TypeError`` from deep inside (``argument of type 'int' is not
iterable``). One table of bad calls, one per argument of every public entry point; no broker:
every check comes before anything is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import tars.adapters.mqtt_client as drop_in
from tars.adapters._view import ClientView
from tars.mqtt import (
    ExponentialBackoff,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidTopicError,
    Message,
    MQTTClient,
    MQTTClientConfig,
    decode_envelope,
    health_topic,
    keepalive_topic,
    parse_mqtt_url,
    redact_url,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker, TcpFaultProxy

Call = Callable[[Any], Any]  # wrong types on purpose: the client is typed Any here


async def on_bytes(payload: bytes) -> None:
    """A valid handler."""


URL = "mqtt://127.0.0.1:1"

# (what, the argument the message must name, the call)
BAD_CALLS: list[tuple[str, str, Call]] = [
    # construction
    ("url int", "mqtt_url", lambda c: MQTTClient(123, "id")),
    ("client_id int", "client_id", lambda c: MQTTClient(URL, 5)),
    ("keepalive list", "keepalive", lambda c: MQTTClient(URL, "id", keepalive=[5])),
    ("config not a config", "config", lambda c: MQTTClient(config={"mqtt_url": URL})),
    ("backoff int", "backoff", lambda c: MQTTClient(URL, "id", backoff=3)),
    ("ssl_context str", "ssl_context", lambda c: MQTTClient(URL, "id", ssl_context="tls")),
    ("from_env env list", "env", lambda c: MQTTClient.from_env(["MQTT_URL"])),
    ("config url list", "mqtt_url", lambda c: MQTTClientConfig(mqtt_url=[URL], client_id="i")),
    ("config from_env env list", "env", lambda c: MQTTClientConfig.from_env(["MQTT_URL"])),
    ("config model_validate int", "config", lambda c: MQTTClientConfig.model_validate(1)),
    ("config model_validate_json int", "config", lambda c: MQTTClientConfig.model_validate_json(1)),
    ("parse_mqtt_url int", "mqtt_url", lambda c: parse_mqtt_url(1883)),
    ("redact_url int", "url", lambda c: redact_url(1)),
    ("redact_url None", "url", lambda c: redact_url(None)),
    # the reconnect policy
    ("backoff min_delay str", "min_delay", lambda c: ExponentialBackoff("1")),
    ("backoff max_delay str", "max_delay", lambda c: ExponentialBackoff(max_delay="5")),
    ("backoff multiplier str", "multiplier", lambda c: ExponentialBackoff(multiplier="2")),
    ("backoff jitter str", "jitter", lambda c: ExponentialBackoff(jitter="0")),
    ("backoff max_attempts str", "max_attempts", lambda c: ExponentialBackoff(max_attempts="3")),
    ("backoff refused_delay str", "refused_delay", lambda c: ExponentialBackoff(refused_delay="1")),
    ("backoff rng int", "rng", lambda c: ExponentialBackoff(rng=1)),
    (
        "backoff attempt str",
        "attempt",
        lambda c: ExponentialBackoff().next_delay("1", refused=False),
    ),
    # publish
    ("publish topic int", "topic", lambda c: c.publish(123, b"x")),
    ("publish topic None", "topic", lambda c: c.publish(None, b"x")),
    ("publish topic list", "topic", lambda c: c.publish(["a"], b"x")),
    ("publish payload int", "payload", lambda c: c.publish("a", 123)),
    ("publish qos str", "qos", lambda c: c.publish("a", b"x", qos="1")),
    ("publish qos float", "qos", lambda c: c.publish("a", b"x", qos=1.0)),
    ("publish retain str", "retain", lambda c: c.publish("a", b"x", retain="yes")),
    ("publish wait int", "wait", lambda c: c.publish("a", b"x", wait=2)),
    ("publish properties list", "properties", lambda c: c.publish("a", b"", properties=[1])),
    (
        "publish user_properties dict",
        "properties",
        lambda c: c.publish("a", b"", properties={"user_properties": {"k": "v"}}),
    ),
    (
        "publish content_type int",
        "properties",
        lambda c: c.publish("a", b"", properties={"content_type": 5}),
    ),
    # publish_event
    ("event topic int", "topic", lambda c: c.publish_event(1, "x", {})),
    ("event type int", "event_type", lambda c: c.publish_event("a", 7, {})),
    ("event data list", "data", lambda c: c.publish_event("a", "x", [1])),
    ("event qos str", "qos", lambda c: c.publish_event("a", "x", {}, qos="0")),
    ("event retain int", "retain", lambda c: c.publish_event("a", "x", {}, retain=1)),
    # request / reply
    ("request topic int", "topic", lambda c: c.request(1, "x", {}, response_topic="r")),
    (
        "request response_topic int",
        "response_topic",
        lambda c: c.request("a", "x", {}, response_topic=5),
    ),
    (
        "request timeout str",
        "timeout",
        lambda c: c.request("a", "x", {}, response_topic="r", timeout="1"),
    ),
    ("request qos str", "qos", lambda c: c.request("a", "x", {}, response_topic="r", qos="1")),
    ("reply request str", "request", lambda c: c.reply("not a message", "x", {})),
    # publish_health
    ("health ok str", "ok", lambda c: c.publish_health("yes")),
    ("health event int", "event", lambda c: c.publish_health(True, event=3)),
    ("health error int", "error", lambda c: c.publish_health(False, error=3)),
    # subscribe / unsubscribe
    ("subscribe topic int", "topic", lambda c: c.subscribe(5, on_bytes)),
    ("subscribe handler str", "handler", lambda c: c.subscribe("a", "on_bytes")),
    ("subscribe qos str", "qos", lambda c: c.subscribe("a", on_bytes, qos="1")),
    (
        "subscribe queue_size str",
        "queue_size",
        lambda c: c.subscribe("a", on_bytes, queue_size="9"),
    ),
    ("subscribe overflow int", "overflow", lambda c: c.subscribe("a", on_bytes, overflow=1)),
    (
        "subscribe concurrency str",
        "concurrency",
        lambda c: c.subscribe("a", on_bytes, concurrency="2"),
    ),
    ("subscribe timeout str", "timeout", lambda c: c.subscribe("a", on_bytes, timeout="2")),
    ("unsubscribe topic int", "topic", lambda c: c.unsubscribe(5)),
    ("unsubscribe handler str", "handler", lambda c: c.unsubscribe("a", "on_bytes")),
    # flush / shutdown / hooks
    ("flush timeout str", "timeout", lambda c: c.flush("1")),
    ("shutdown timeout str", "timeout", lambda c: c.shutdown("1")),
    ("on_connect not callable", "hook", lambda c: c.on_connect(3)),
    ("listener not callable", "listener", lambda c: c.add_message_listener(3)),
    ("instrument int", "instrument", lambda c: c.add_instrument(3)),
    ("run_forever signals int", "signals", lambda c: c.run_forever(5)),
    ("run_forever signals str", "signals", lambda c: c.run_forever("SIGTERM")),
    ("run_forever signal name", "signals", lambda c: c.run_forever(["SIGTERM"])),
    # the topic functions
    ("validate name int", "topic", lambda c: validate_topic_name(1)),
    ("validate filter bytes", "topic_filter", lambda c: validate_topic_filter(b"a")),
    ("topic_matches filter int", "topic_filter", lambda c: topic_matches(1, "a")),
    ("topic_matches topic None", "topic", lambda c: topic_matches("a", None)),
    # health topics, envelopes and messages
    ("health_topic int", "client_id", lambda c: health_topic(1)),
    ("keepalive_topic int", "client_id", lambda c: keepalive_topic(1)),
    ("decode_envelope int", "payload", lambda c: decode_envelope(1)),
    ("message not a packet", "packet", lambda c: Message("a/b")),
    # the testing kit
    ("memory broker name int", "name", lambda c: InMemoryBroker(name=1)),
    (
        "memory broker receive_maximum str",
        "receive_maximum",
        lambda c: InMemoryBroker(receive_maximum="5"),
    ),
    ("memory broker protocols int", "protocols", lambda c: InMemoryBroker(protocols=5)),
    ("mosquitto port str", "port", lambda c: MosquittoBroker(port="x")),
    ("mosquitto host int", "host", lambda c: MosquittoBroker(host=1)),
    ("mosquitto persistence str", "persistence", lambda c: MosquittoBroker(persistence="no")),
    ("mosquitto workdir int", "workdir", lambda c: MosquittoBroker(workdir=1)),
    ("mosquitto extra_config list", "extra_config", lambda c: MosquittoBroker(extra_config=[])),
    ("mosquitto binary int", "binary", lambda c: MosquittoBroker(binary=1)),
    ("mosquitto websockets int", "websockets", lambda c: MosquittoBroker(websockets=1)),
    ("mosquitto ws_port str", "ws_port", lambda c: MosquittoBroker(ws_port="x")),
    ("proxy target_host int", "target_host", lambda c: TcpFaultProxy(1, 1883)),
    ("proxy target_port str", "target_port", lambda c: TcpFaultProxy("h", "1883")),
    ("proxy host int", "host", lambda c: TcpFaultProxy("h", 1, host=1)),
    ("proxy port str", "port", lambda c: TcpFaultProxy("h", 1, port="0")),
    # the drop-in for the original client (its constructor keeps the original's pydantic errors)
    ("drop-in parse_mqtt_url int", "url", lambda c: drop_in.parse_mqtt_url(1)),
    (
        "drop-in deduplicator ttl str",
        "ttl",
        lambda c: drop_in.MessageDeduplicator(ttl="1", max_entries=1),
    ),
    (
        "drop-in deduplicator max_entries float",
        "max_entries",
        lambda c: drop_in.MessageDeduplicator(ttl=1, max_entries=1.5),
    ),
    (
        "drop-in view publish retain as a property",
        "'retain'",
        lambda c: ClientView(c).publish("a", b"x", qos=1, properties={"retain": True}),
    ),
]


@pytest.fixture
def client() -> MQTTClient:
    """A client that is never connected: argument checks must not need a broker."""
    return MQTTClient(URL, "types-test")


async def attempt(call: Call, client: MQTTClient) -> None:
    result = call(client)
    if isinstance(result, Awaitable):
        await asyncio.wait_for(result, timeout=5)


@pytest.mark.parametrize(("what", "name", "call"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
async def test_each_wrong_type_is_an_invalid_argument_type_error_naming_the_argument(
    client: MQTTClient, what: str, name: str, call: Call
) -> None:
    with pytest.raises(InvalidArgumentTypeError) as info:
        await attempt(call, client)
    assert name in str(info.value), f"{what}: {info.value}"


# The link view (``client.client``): a side door to the same session, so the same rules.
VIEW_CALLS: list[tuple[str, type[Exception], Callable[[Any], Any]]] = [
    ("publish topic int", InvalidArgumentTypeError, lambda v: v.publish(1, b"x")),
    ("publish payload str", InvalidArgumentTypeError, lambda v: v.publish("a", "x")),
    ("publish qos str", InvalidArgumentTypeError, lambda v: v.publish("a", b"x", qos="1")),
    ("publish retain int", InvalidArgumentTypeError, lambda v: v.publish("a", b"x", retain=1)),
    ("publish bad topic", InvalidTopicError, lambda v: v.publish("a/\x01", b"x", qos=1)),
    ("subscribe filter int", InvalidArgumentTypeError, lambda v: v.subscribe(3)),
    ("subscribe bad filter", InvalidTopicError, lambda v: v.subscribe("x/\x02/#")),
    ("subscribe id str", InvalidArgumentTypeError, lambda v: v.subscribe("a", subscription_id="1")),
    ("unsubscribe int", InvalidArgumentTypeError, lambda v: v.unsubscribe(3)),
    ("unsubscribe bad filter", InvalidTopicError, lambda v: v.unsubscribe("x/\x7f")),
    (
        "publish property int",
        InvalidArgumentTypeError,
        lambda v: v.publish("a", b"x", content_type=5),
    ),
    # Keywords of the codec that are no caller's: the session's, or the broker's (MQTT 5 3.3.4).
    (
        "publish topic_alias",
        InvalidArgumentTypeError,
        lambda v: v.publish("a", b"x", topic_alias=1),
    ),
    ("publish packet_id", InvalidArgumentTypeError, lambda v: v.publish("a", b"x", packet_id=7)),
    ("publish duplicate", InvalidArgumentTypeError, lambda v: v.publish("a", b"x", duplicate=True)),
    (
        "publish subscription_ids",
        InvalidArgumentTypeError,
        lambda v: v.publish("a", b"x", qos=1, subscription_ids=[1]),
    ),
    (
        "publish bad response topic",
        InvalidTopicError,
        lambda v: v.publish("a", b"x", qos=1, response_topic="r/\x01"),
    ),
    (
        "publish bad content type",
        InvalidArgumentError,
        lambda v: v.publish("a", b"x", qos=1, content_type="t/\x01"),
    ),
    (
        "publish bad user property",
        InvalidArgumentError,
        lambda v: v.publish("a", b"x", qos=1, user_properties=[("k", "\ufdd0")]),
    ),
    (
        "subscribe user properties dict",
        InvalidArgumentTypeError,
        lambda v: v.subscribe("a", user_properties={"k": "v"}),
    ),
    (
        "subscribe user property pair of 3",
        InvalidArgumentTypeError,
        lambda v: v.subscribe("a", user_properties=[("k", "v", "w")]),
    ),
    (
        "subscribe bad user property",
        InvalidArgumentError,
        lambda v: v.subscribe("a", user_properties=[("k\x7f", "v")]),
    ),
    (
        "unsubscribe bad user property",
        InvalidArgumentError,
        lambda v: v.unsubscribe("a", user_properties=[("k", "v\x85")]),
    ),
]


async def test_the_link_view_checks_its_arguments_as_the_client_does() -> None:
    async with (
        InMemoryBroker() as broker,
        MQTTClient(broker.url, "view-types", connector=broker.connector) as client,
    ):
        view = client.client
        assert view is not None
        for what, error, call in VIEW_CALLS:
            with pytest.raises(error):
                await asyncio.wait_for(call(view), timeout=5)
            assert view.is_connected, what  # refused at the call: the link is untouched
        assert await view.publish("a", b"ok", qos=1) == 0x10  # nobody subscribed: still alive
        assert client.stats.connects == 1
