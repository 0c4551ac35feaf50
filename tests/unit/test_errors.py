"""One rule for bad arguments: an ``MQTTError`` *and* the builtin a Python user expects.

Each call below is a mistake a service could make; each must be refused before anything is sent,
with an error that ``except MQTTError`` catches and that is also the ``ValueError`` (a refused
value) or ``TypeError`` (a wrong type) generic code catches. No broker: every check comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tars.mqtt import (
    ExponentialBackoff,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MQTTClient,
    MQTTClientConfig,
    MQTTError,
    validate_topic_filter,
    validate_topic_name,
)
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker

Call = Callable[[MQTTClient], Any]


async def on_bytes(payload: bytes) -> None:
    """A valid handler."""


async def takes_nothing() -> None:
    """Not a handler: no argument for the message."""


async def takes_str(text: str) -> None:
    """Not a handler: ``str`` is not one of the types a handler may ask for."""


class Unencodable:
    """Not JSON."""


BAD_CALLS: list[tuple[str, type[Exception], Call]] = [
    # construction
    ("config and options", TypeError, lambda c: MQTTClient(config=c._config, keepalive=5)),
    ("keepalive 0", ValueError, lambda c: MQTTClient("mqtt://h", "id", keepalive=0)),
    ("bad url", ValueError, lambda c: MQTTClient("http://h", "id")),
    ("missing CA file", ValueError, lambda c: MQTTClient("mqtts://h", "id", tls_ca_file="/no.pem")),
    ("cert without key", ValueError, lambda c: MQTTClient("mqtts://h", "id", tls_cert_file="/c")),
    (
        "outbox_path file",
        ValueError,
        lambda c: MQTTClientConfig(mqtt_url="mqtt://h", client_id="i", outbox_path=__file__),
    ),
    # publish
    ("publish wildcard", ValueError, lambda c: c.publish("a/+", b"x")),
    ("publish payload int", TypeError, lambda c: c.publish("a", 123)),
    ("publish qos 3", ValueError, lambda c: c.publish("a", b"x", qos=3)),
    ("publish bad property", TypeError, lambda c: c.publish("a", b"", properties={"nope": 1})),
    ("publish too large", ValueError, lambda c: c.publish("a", b"x" * 2_000_000)),
    # publish_event (D8: checked before sending)
    ("event type None", TypeError, lambda c: c.publish_event("a", None, {})),
    ("event type int", TypeError, lambda c: c.publish_event("a", 7, {})),
    ("correlation_id int", TypeError, lambda c: c.publish_event("a", "x", {}, correlation_id=123)),
    ("data a list", TypeError, lambda c: c.publish_event("a", "x", [1, 2])),
    ("data unencodable", TypeError, lambda c: c.publish_event("a", "x", {"v": Unencodable()})),
    (
        "request bad reply topic",
        ValueError,
        lambda c: c.request("a", "x", {}, response_topic="r/#"),
    ),
    # subscribe
    ("subscribe bad filter", ValueError, lambda c: c.subscribe("a/#/b", on_bytes)),
    ("subscribe qos 3", ValueError, lambda c: c.subscribe("a", on_bytes, qos=3)),
    ("handler without argument", TypeError, lambda c: c.subscribe("a", takes_nothing)),
    ("handler wants str", TypeError, lambda c: c.subscribe("a", takes_str)),
    ("queue_size 0", ValueError, lambda c: c.subscribe("a", on_bytes, queue_size=0)),
    ("concurrency 0", ValueError, lambda c: c.subscribe("a", on_bytes, concurrency=0)),
    ("timeout negative", ValueError, lambda c: c.subscribe("a", on_bytes, timeout=-1)),
    # functions and policies
    ("validate empty topic", ValueError, lambda c: validate_topic_name("")),
    ("validate bad filter", ValueError, lambda c: validate_topic_filter("a#")),
    ("backoff min 0", ValueError, lambda c: ExponentialBackoff(min_delay=0)),
    ("backoff jitter 2", ValueError, lambda c: ExponentialBackoff(jitter=2)),
    ("backoff max < min", ValueError, lambda c: ExponentialBackoff(min_delay=5, max_delay=1)),
    # the testing kit
    ("memory broker receive_maximum", ValueError, lambda c: InMemoryBroker(receive_maximum=0)),
    ("mosquitto workdir blank", ValueError, lambda c: MosquittoBroker(workdir="/tmp/a b")),
]


@pytest.fixture
def client() -> MQTTClient:
    """A client that is never connected: argument checks must not need a broker."""
    return MQTTClient("mqtt://127.0.0.1:1", "errors-test", max_payload_size=1_000_000)


async def attempt(call: Call, client: MQTTClient) -> None:
    result = call(client)
    if isinstance(result, Awaitable):
        await asyncio.wait_for(result, timeout=5)


@pytest.mark.parametrize(("what", "builtin", "call"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
async def test_each_bad_call_raises_an_mqtt_error_and_the_builtin(
    client: MQTTClient, what: str, builtin: type[Exception], call: Call
) -> None:
    with pytest.raises(MQTTError) as info:
        await attempt(call, client)
    assert isinstance(info.value, builtin), f"{what}: {type(info.value).__mro__}"
    rule = InvalidArgumentError if builtin is ValueError else InvalidArgumentTypeError
    assert isinstance(info.value, rule), what
    assert str(info.value), what


def test_the_two_argument_errors_are_what_they_say() -> None:
    assert issubclass(InvalidArgumentError, MQTTError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidArgumentTypeError, MQTTError)
    assert issubclass(InvalidArgumentTypeError, TypeError)


async def test_a_bad_event_is_refused_before_anything_is_sent() -> None:
    """D8: before, a non-str event type or correlation id went out and receivers refused it."""
    async with InMemoryBroker() as broker:
        got: list[bytes] = []
        arrived = asyncio.Event()

        async def on_msg(payload: bytes) -> None:
            got.append(payload)
            arrived.set()

        def client(name: str) -> MQTTClient:
            return MQTTClient(broker.url, name, connector=broker.connector)

        async with client("listener") as listener, client("sender") as sender:
            await listener.subscribe("ev", on_msg, qos=1)
            with pytest.raises(TypeError, match="correlation_id must be a str, not int"):
                await sender.publish_event("ev", "x", {}, correlation_id=123, qos=1)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="event_type must be a str, not NoneType"):
                await sender.publish_event("ev", None, {}, qos=1)  # type: ignore[arg-type]
            await sender.publish_event("ev", "ok", {}, qos=1)
            await sender.flush(timeout=5)
            async with asyncio.timeout(5):
                await arrived.wait()
        assert len(got) == 1
        assert b'"type":"ok"' in got[0]
