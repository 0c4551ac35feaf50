"""The original client's extension example, its three patterns rewritten by us, on the drop-in.

1. A domain wrapper that publishes through ``publish_event`` (with a correlation id).
2. A batching wrapper that flushes a list of items as one event.
3. Direct access through ``.client``: subscribe on it and iterate ``messages()`` with a filter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from support.mosquitto_cli import Inbox, unique
from support.original_peer import StrictEnvelope
from tars.adapters.mqtt_client import MQTTClient
from tars.mqtt import MQTTClient as NativeClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


async def observe(
    broker: MosquittoBroker, topic: str
) -> tuple[NativeClient, Inbox[StrictEnvelope]]:
    observer = NativeClient(broker.url, unique("observer"))
    await observer.connect()
    inbox: Inbox[StrictEnvelope] = Inbox()

    async def on_payload(payload: bytes) -> None:
        inbox.add(StrictEnvelope.model_validate_json(payload))  # the original's strict parse

    await observer.subscribe(topic, on_payload, qos=1)
    return observer, inbox


async def test_pattern_1_domain_wrapper(shared_mosquitto: MosquittoBroker) -> None:
    prefix = unique("ex1")
    observer, inbox = await observe(shared_mosquitto, f"{prefix}/#")
    client = MQTTClient(shared_mosquitto.url, unique("domain"))
    await client.connect()
    try:
        await client.publish_event(
            f"{prefix}/stt/final", "stt.final", {"text": "hi", "is_final": True}, qos=1
        )
        await client.publish_event(
            f"{prefix}/llm/response",
            "llm.response",
            {"reply": "hello"},
            correlation_id="r-9",
            qos=1,
        )
        stt, llm = await inbox.wait_for(2)
    finally:
        await client.shutdown()
        await observer.shutdown()
    assert (stt.type, stt.data["text"]) == ("stt.final", "hi")
    assert (llm.id, llm.type) == ("r-9", "llm.response")  # the original's correlation


async def test_pattern_2_batching(shared_mosquitto: MosquittoBroker) -> None:
    topic = unique("ex2")
    observer, inbox = await observe(shared_mosquitto, f"{topic}/batch")
    client = MQTTClient(shared_mosquitto.url, unique("batch"))
    await client.connect()
    batch: list[dict[str, Any]] = []
    try:
        for value in range(12):
            batch.append({"value": value})
            if len(batch) == 5:
                await client.publish_event(
                    f"{topic}/batch", "x.batch", {"items": batch, "count": 5}, qos=1
                )
                batch = []
        await client.publish_event(
            f"{topic}/batch", "x.batch", {"items": batch, "count": len(batch)}, qos=1
        )
        got = await inbox.wait_for(3)
    finally:
        await client.shutdown()
        await observer.shutdown()
    assert [e.data["count"] for e in got] == [5, 5, 2]
    assert [i["value"] for e in got for i in e.data["items"]] == list(range(12))


async def test_pattern_3_direct_client_access_iterates_messages(
    shared_mosquitto: MosquittoBroker,
) -> None:
    prefix = unique("ex3")
    client = MQTTClient(shared_mosquitto.url, unique("advanced"))
    await client.connect()
    handled: Inbox[bytes] = Inbox()

    async def subscribe_with_filter(
        topic: str, keep: Callable[[Any], bool], handler: Callable[[bytes], Awaitable[None]]
    ) -> asyncio.Task[None]:
        underlying = client.client
        if not underlying:
            raise RuntimeError("Not connected")
        await underlying.subscribe(topic)

        async def filtered_dispatch() -> None:
            async with underlying.messages() as messages:
                async for msg in messages:
                    if keep(msg):
                        await handler(msg.payload)

        return asyncio.ensure_future(filtered_dispatch())

    async def handler(payload: bytes) -> None:
        handled.add(payload)

    task = await subscribe_with_filter(
        f"{prefix}/sensors/#", lambda msg: "temperature" in msg.topic, handler
    )
    try:
        view = client.client
        assert view is not None
        async with view.filtered_messages(f"{prefix}/sensors/+/humidity") as humidity:
            await view.publish(f"{prefix}/sensors/a/temperature", b"21.5", qos=1)
            await view.publish(f"{prefix}/sensors/a/humidity", 40, qos=1)
            await client.publish_event(f"{prefix}/sensors/b/temperature", "t", {"c": 19}, qos=1)
            first_humidity = await anext(aiter(humidity))
        got = await handled.wait_for(2)
        assert got[0] == b"21.5"
        assert orjson.loads(got[1])["data"] == {"c": 19}
        assert (str(first_humidity.topic), first_humidity.payload) == (
            f"{prefix}/sensors/a/humidity",
            b"40",
        )
        assert first_humidity.topic.matches(f"{prefix}/sensors/#")
    finally:
        await client.shutdown()  # ends the iteration: the background task finishes by itself
        async with asyncio.timeout(5):
            await task
