"""Issue 19: a string property that a broker may call malformed (MQTT 5 section 1.5.4) is
refused at the call, like a topic. ``response_topic`` follows the topic-name rule
(:class:`~tars.mqtt.InvalidTopicError`); ``content_type`` and the user properties' names and
values raise :class:`~tars.mqtt.InvalidArgumentError` naming the property, never its value (a
user property may carry a token). No broker: the checks come before anything is queued (the
same calls against Mosquitto are in tests/integration/test_client_topic_rules.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tars.mqtt import (
    ClientState,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidTopicError,
    MQTTClient,
    NotConnectedError,
)

SECRET = "tok3n"
# Each kind the rule names: C0, DEL, C1, BMP non-characters, an astral non-character.
BAD = ["\x00", "\x01", "\x1f", "\x7f", "\x85", "\x9f", "\ufdd0", "\ufffe", "\uffff", "\U0010fffe"]


@pytest.fixture
def client() -> MQTTClient:
    """Never connected: a publish that passes its checks raises NotConnectedError."""
    return MQTTClient("mqtt://127.0.0.1:1", "props-test")


def _properties(kind: str, char: str) -> dict[str, Any]:
    text = f"{SECRET}{char}{SECRET}"
    return {
        "content_type": {"content_type": text},
        "user property name": {"user_properties": [("ok", "fine"), (text, "v")]},
        "user property value": {"user_properties": [("ok", "fine"), ("k", text)]},
    }[kind]


@pytest.mark.parametrize("char", BAD, ids=ascii)
@pytest.mark.parametrize("kind", ["content_type", "user property name", "user property value"])
async def test_a_bad_string_property_is_refused_naming_it_without_its_value(
    client: MQTTClient, kind: str, char: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.publish("a/b", b"x", qos=1, properties=_properties(kind, char))
    message = str(info.value)
    assert SECRET not in message
    assert f"U+{ord(char):04X}" in message
    assert kind.split()[-1] in message  # "content_type", "name" or "value"
    if kind != "content_type":
        assert "user property 1" in message  # the second pair: the first one is fine


@pytest.mark.parametrize("char", BAD, ids=ascii)
async def test_a_bad_response_topic_is_an_invalid_topic(client: MQTTClient, char: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        await client.publish("a/b", b"x", qos=1, properties={"response_topic": f"r/{char}"})
    assert "response_topic" in str(info.value)
    with pytest.raises(InvalidTopicError):
        await client.request("a/b", "t.x", {}, response_topic=f"r/{char}", timeout=1)


@pytest.mark.parametrize("response_topic", ["", "r/+", "r/#"])
async def test_a_response_topic_follows_every_topic_name_rule(
    client: MQTTClient, response_topic: str
) -> None:
    with pytest.raises(InvalidTopicError):
        await client.publish("a/b", b"x", properties={"response_topic": response_topic})


async def test_a_bad_topic_is_named_as_such_even_with_properties(client: MQTTClient) -> None:
    # The codec would say "Invalid topic" as a property error: the topic is checked first.
    with pytest.raises(InvalidTopicError):
        await client.publish("a/+", b"x", properties={"content_type": "text/plain"})


@pytest.mark.parametrize(
    "properties",
    [
        {"user_properties": {"k": "v"}},
        {"user_properties": [("k", 1)]},
        {"user_properties": [["k", "v"]]},
        {"content_type": 5},
        {"response_topic": 5},
        {"no_such_property": "x"},
        {5: "x"},
    ],
    ids=str,
)
async def test_a_property_of_the_wrong_type_is_an_invalid_argument_type(
    client: MQTTClient, properties: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="properties"):
        await client.publish("a/b", b"x", properties=properties)


@pytest.mark.parametrize(
    "properties",
    [
        {"content_type": "application/json; charset=utf-8"},
        {"content_type": "text/é✓😀"},
        {"content_type": ""},
        {"response_topic": "r/é/😀", "correlation_data": b"\x00\x01\xff\xfe"},
        {"user_properties": [("traceparent", "00-0af7-01"), ("", ""), ("ключ", "значение")]},
    ],
    ids=ascii,
)
async def test_printable_text_and_binary_correlation_data_pass_the_checks(
    client: MQTTClient, properties: dict[str, Any]
) -> None:
    # correlation_data is binary data: MQTT 5 has no character rule for it.
    with pytest.raises(NotConnectedError):  # the checks passed; only then the missing link
        await client.publish("a/b", b"x", qos=1, properties=properties)


# Keywords of the codec's PublishPacket that are not properties a caller may set (MQTT 5
# section 3.3.2.3): publish's own arguments, the session's fields, and the subscription
# identifiers a client must never send (3.3.4). Each was accepted by the codec's dry run; then
# sending the queued message raised a bare TypeError inside the link's callback ("multiple
# values for keyword argument 'retain'"), or put the session's or the broker's field on the wire.
NOT_THE_CALLERS = [
    ("retain", True),
    ("qos", 1),
    ("duplicate", True),
    ("packet_id", 31337),
    ("topic_alias", 31337),
    ("subscription_ids", [31337]),
]


@pytest.mark.parametrize(("key", "value"), NOT_THE_CALLERS, ids=[k for k, _ in NOT_THE_CALLERS])
async def test_a_key_a_caller_may_not_set_is_refused_naming_it_without_its_value(
    client: MQTTClient, key: str, value: object
) -> None:
    for properties in ({key: value}, {"content_type": "text/plain", key: value}):
        with pytest.raises(InvalidArgumentTypeError) as info:
            await client.publish("a/b", b"x", qos=1, properties=properties)
        message = str(info.value)
        assert repr(key) in message
        assert "31337" not in message


@pytest.mark.parametrize(
    "properties", [{"message_expiry_interval": -1}, {"payload_format_indicator": 256}], ids=str
)
async def test_an_int_property_out_of_range_is_an_invalid_argument(
    client: MQTTClient, properties: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError, match="out of the range"):  # not a bare OverflowError
        await client.publish("a/b", b"x", qos=1, properties=properties)


@pytest.mark.parametrize("value", [2, 7, 255])
async def test_a_payload_format_indicator_other_than_0_or_1_is_refused(
    client: MQTTClient, value: int
) -> None:
    """MQTT 5 defines 0 (bytes) and 1 (UTF-8) only; Mosquitto's newer property checks end the
    link on another value."""
    with pytest.raises(InvalidArgumentError, match=r"must be 0 \(bytes\) or 1"):
        await client.publish("a/b", b"x", qos=1, properties={"payload_format_indicator": value})
    with pytest.raises(NotConnectedError):  # 1 passes the checks
        await client.publish("a/b", b"x", qos=1, properties={"payload_format_indicator": 1})


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_retain_as_a_property_is_refused_at_once_and_queues_nothing_offline(qos: int) -> None:
    """Offline, the message used to be queued: the TypeError came on the next CONNACK, inside
    the link's callback, which dropped the link, lost the message and left publish() waiting
    (and with a durable outbox, every later start met it again)."""
    client = MQTTClient("mqtt://127.0.0.1:1", "props-offline", queue_qos0_offline=True)
    connecting = asyncio.create_task(client.connect())
    try:
        while client.state is ClientState.CREATED:  # connecting: publishes go to the outbox
            await asyncio.sleep(0)
        async with asyncio.timeout(1):  # at once: nothing waits for a link
            with pytest.raises(InvalidArgumentTypeError, match="'retain'"):
                await client.publish("a/b", b"x", qos=qos, properties={"retain": True})
            with pytest.raises(InvalidArgumentTypeError, match="'topic_alias'"):
                await client.publish(
                    "a/b", b"x", qos=qos, wait=False, properties={"topic_alias": 1}
                )
        stats = client.stats
        assert stats.outbox_depth == 0
        assert stats.outbox_dropped == 0
        assert stats.inflight == 0
        await client.publish("a/b", b"x", qos=1, wait=False, properties={"content_type": "t"})
        assert client.stats.outbox_depth == 1  # a good one is still queued
    finally:
        await client.shutdown()
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
