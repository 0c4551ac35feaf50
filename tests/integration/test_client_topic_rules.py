"""Issue 19 §1: a topic or a string property that Mosquitto calls malformed (MQTT 5 section
1.5.4) is refused at the call, against the real broker: it never reaches the wire, so it costs
no link, and a valid message published afterwards is delivered. (That Mosquitto does end the
link on each of them is checked in tests/integration/testing/test_broker_mosquitto_parity.py.)"""

from __future__ import annotations

import asyncio

import pytest

from support.mosquitto_cli import MosquittoSub, connected_client, unique
from tars.mqtt import InvalidArgumentError, InvalidArgumentTypeError, InvalidTopicError, Message
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

BAD_TOPICS = [
    "a/\x01b",  # the one of the issue
    "a/\x1f",
    "a/\x7f",
    "a/\x9f",
    "a/\ufdd0",
    "a/\uffff",
    "a/\U0010fffe",
]


async def _nothing(message: Message) -> None:
    del message


async def test_each_bad_topic_is_refused_at_once_and_costs_no_link(
    shared_mosquitto: MosquittoBroker,
) -> None:
    good = unique("rules/good")
    async with (
        connected_client(shared_mosquitto) as client,
        MosquittoSub(shared_mosquitto, good, count=1) as sub,
    ):
        async with asyncio.timeout(1):  # "at once": no round trip to the broker, no resend
            for topic in BAD_TOPICS:
                with pytest.raises(InvalidTopicError):
                    await client.publish(topic, b"x", qos=1)
                with pytest.raises(InvalidTopicError):
                    await client.publish(topic, b"x", qos=2, wait=False)
                with pytest.raises(InvalidTopicError):
                    await client.publish_event(topic, "t.x", {}, qos=1)
                with pytest.raises(InvalidTopicError):
                    await client.subscribe(topic.replace("a/", "x/", 1) + "/#", _nothing, qos=1)
                with pytest.raises(InvalidTopicError):
                    await client.unsubscribe(topic)
                with pytest.raises(InvalidTopicError):
                    await client.request(good, "t.x", {}, response_topic=topic, timeout=1)
        await client.publish(good, b"after", qos=1)
        [captured] = await sub.wait_for(1)
        assert captured.payload == b"after"
        stats = client.stats
        assert stats.connects == 1  # the link never dropped
        assert stats.inflight == 0  # nothing left to resend
        assert stats.outbox_depth == 0


# The characters of the rule once each kind: C0, DEL, C1, BMP and astral non-characters.
BAD_CHARS = ["\x00", "\x01", "\x7f", "\x85", "\ufdd0", "\uffff", "\U0010fffe"]


async def test_each_bad_string_property_is_refused_at_once_and_costs_no_link(
    shared_mosquitto: MosquittoBroker,
) -> None:
    good = unique("rules/props")
    async with (
        connected_client(shared_mosquitto) as client,
        MosquittoSub(shared_mosquitto, good, count=1) as sub,
    ):
        view = client.client
        assert view is not None
        async with asyncio.timeout(1):  # "at once": no round trip to the broker, no resend
            for char in BAD_CHARS:
                text = f"x{char}y"
                with pytest.raises(InvalidTopicError):
                    await client.publish(good, b"x", qos=1, properties={"response_topic": text})
                with pytest.raises(InvalidTopicError):
                    await view.publish(good, b"x", qos=1, response_topic=text)
                for properties in (
                    {"content_type": text},
                    {"user_properties": [(text, "v")]},
                    {"user_properties": [("k", text)]},
                ):
                    with pytest.raises(InvalidArgumentError):
                        await client.publish(good, b"x", qos=1, properties=properties)
                    with pytest.raises(InvalidArgumentError):
                        await client.publish(good, b"x", qos=2, wait=False, properties=properties)
                    with pytest.raises(InvalidArgumentError):
                        await view.publish(good, b"x", qos=1, **properties)
                with pytest.raises(InvalidArgumentError):
                    await view.subscribe(unique("rules/sub"), user_properties=[("k", text)])
                with pytest.raises(InvalidArgumentError):
                    await view.unsubscribe(good, user_properties=[(text, "v")])
        # Printable text of any script and binary correlation data (no character rule) pass.
        await client.publish(
            good,
            b"after",
            qos=1,
            properties={
                "content_type": "text/é",
                "correlation_data": b"\x00\x01\xff",
                "user_properties": [("clé", "✓")],
            },
        )
        [captured] = await sub.wait_for(1)  # the first message the broker delivered
        assert captured.payload == b"after"
        assert "clé:✓" in captured.user_properties
        stats = client.stats
        assert stats.connects == 1  # the link never dropped
        assert stats.inflight == 0  # nothing left to resend
        assert stats.outbox_depth == 0


async def test_a_codec_keyword_that_is_no_callers_property_is_refused_at_once(
    shared_mosquitto: MosquittoBroker,
) -> None:
    """``retain`` given as a property used to be queued, then raise a bare TypeError inside the
    link's callback when its PUBLISH was written ("multiple values for keyword argument"): the
    link dropped and the message was lost. The session's fields and the broker's subscription
    identifiers (MQTT 5 section 3.3.4) are refused the same way, on both doors."""
    good = unique("rules/keys")
    async with (
        connected_client(shared_mosquitto) as client,
        MosquittoSub(shared_mosquitto, good, count=1) as sub,
    ):
        view = client.client
        assert view is not None
        async with asyncio.timeout(1):  # "at once": no round trip to the broker, no resend
            for properties in (
                {"retain": True},
                {"duplicate": True},
                {"topic_alias": 3},
                {"subscription_ids": [1]},
            ):
                with pytest.raises(InvalidArgumentTypeError):
                    await client.publish(good, b"x", qos=1, properties=properties)
                with pytest.raises(InvalidArgumentTypeError):
                    await client.publish(good, b"x", qos=2, wait=False, properties=properties)
                with pytest.raises(InvalidArgumentTypeError):
                    await client.publish(good, b"x", qos=0, properties=properties)
                if "retain" not in properties:  # the view's own keyword
                    with pytest.raises(InvalidArgumentTypeError):
                        await view.publish(good, b"x", qos=1, **properties)
        await client.publish(good, b"after", qos=1)
        [captured] = await sub.wait_for(1)  # the first message the broker delivered
        assert captured.payload == b"after"
        stats = client.stats
        assert stats.connects == 1  # the link never dropped
        assert stats.inflight == 0  # nothing left to resend
        assert stats.outbox_depth == 0
