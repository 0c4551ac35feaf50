"""Request/reply over envelopes: ``request()`` on one client, ``reply()`` on another.

On the in-memory broker (``support.brokers``); the round trip also on Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from support.brokers import BOTH, Broker
from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, Message, MQTTClient


@contextlib.asynccontextmanager
async def responder(broker: Broker, topic: str, answered: Inbox[str]) -> AsyncIterator[MQTTClient]:
    """A client that answers every request on ``topic`` with ``{"echo": <request data>}``."""

    async def answer(msg: Message) -> None:
        reply_id = await client.reply(msg, "echo.reply", {"echo": msg.envelope.data})
        answered.add(reply_id)

    async with broker.connected_client("responder") as client:
        await client.subscribe(topic, answer, qos=1)
        yield client


@pytest.mark.parametrize("broker", BOTH, indirect=True)
async def test_request_gets_the_reply(broker: Broker) -> None:
    topic = unique("rpc/echo")
    answered: Inbox[str] = Inbox()
    async with (
        responder(broker, topic, answered),
        broker.connected_client("requester", source_name="asker") as client,
    ):
        reply_topic = unique("rpc/replies")
        first = await client.request(topic, "echo", {"n": 1}, response_topic=reply_topic)
        second = await client.request(topic, "echo", {"n": 2}, response_topic=reply_topic)
    assert isinstance(first, Envelope)
    assert (first.type, first.data) == ("echo.reply", {"echo": {"n": 1}})
    assert second.data == {"echo": {"n": 2}}
    assert [first.id, second.id] == answered.items
    assert first.correlate is not None
    assert first.correlate != second.correlate
    assert first.correlate != first.id


async def test_request_without_an_answer_times_out(broker: Broker) -> None:
    async with broker.connected_client() as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.request(
                unique("rpc/nobody"), "q", {}, response_topic=unique("rpc/r"), timeout=0.3
            )
        assert loop.time() - started < 2
        assert client.connected  # a timeout is the request's failure, not the link's


async def test_a_reply_arriving_with_the_publish_ack_is_not_lost(
    broker: Broker,
) -> None:
    """The answer may be read in the same chunk as the request's PUBACK, before the publish
    call returns: the correlation must be registered before the request leaves."""
    topic = unique("rpc/fast")
    answered: Inbox[str] = Inbox()
    async with (
        responder(broker, topic, answered),
        broker.connected_client("requester") as client,
    ):
        reply_topic = unique("rpc/fast-replies")
        await client.request(topic, "warm-up", {}, response_topic=reply_topic)  # subscribed
        conn = client.client
        assert conn is not None
        conn.pause_reading()  # the PUBACK and the reply pile up in the socket buffer
        request = asyncio.create_task(
            client.request(topic, "echo", {"fast": True}, response_topic=reply_topic, timeout=5)
        )
        await answered.wait_for(2)
        # The responder's QoS 1 reply was acked by the broker, which already routed it to us.
        conn.resume_reading()
        reply = await request
    assert reply.data == {"echo": {"fast": True}}
    assert reply.id == answered.items[1]


async def test_reply_needs_a_response_topic(broker: Broker) -> None:
    topic = unique("rpc/plain")
    answers = unique("rpc/answers")
    requests: Inbox[Message] = Inbox()
    replies: Inbox[Envelope] = Inbox()

    async def on_request(msg: Message) -> None:
        requests.add(msg)

    async def on_reply(env: Envelope) -> None:
        replies.add(env)

    async with broker.connected_client() as client:
        await client.subscribe(topic, on_request)
        await client.subscribe(answers, on_reply)
        request_id = await client.publish_event(topic, "q", {})  # no MQTT 5 response topic
        [request] = await requests.wait_for(1)
        with pytest.raises(ValueError, match="response topic"):
            await client.reply(request, "a", {})
        reply_id = await client.reply(request, "a", {"ok": True}, topic=answers)
        [reply] = await replies.wait_for(1)
    # A request without MQTT 5 correlation data may come from the original client, which
    # correlates by id: the answer reuses the request's id and writes no correlate.
    assert (reply.id, reply.correlate, reply.data) == (request_id, None, {"ok": True})
    assert reply_id == request_id
