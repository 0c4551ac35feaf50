"""Issue 19 §1: a topic that Mosquitto calls malformed (MQTT 5 section 1.5.4) is refused at the
call, against the real broker: it never reaches the wire, so it costs no link, and a valid
message published afterwards is delivered."""

from __future__ import annotations

import asyncio

import pytest

from support.mosquitto_cli import MosquittoSub, connected_client, unique
from tars.mqtt import InvalidTopicError, Message
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
