"""A mixed fleet on one real Mosquitto: services on the original client (our strict stand-in),
on the drop-in, and on tars.mqtt, talking to each other in every direction.

Plain events, 5-chunk streams that share one id, and correlated request/reply: every message
arrives exactly once where it should, and the original's ``extra="forbid"`` parser rejects
nothing. "Exactly once" is checked by a sentinel sent after the messages: once it is in, anything
extra would have arrived before it (one publisher, one topic, QoS 1: in order).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from support.mosquitto_cli import Inbox, unique
from support.original_peer import OriginalPeer, StrictEnvelope
from tars.adapters import mqtt_client as dropin
from tars.mqtt import Envelope, Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

KINDS = ["original", "drop-in", "native"]
DEDUP = {"dedupe_ttl": 30.0, "dedupe_max_entries": 1000}


@dataclass
class Service:
    """One service of a given kind; ``publish`` and ``listen`` speak in (id, type, data)."""

    kind: str
    publish: Callable[..., Awaitable[str]]
    listen: Callable[[str], Awaitable[Inbox[tuple[str, str, dict[str, Any]]]]]
    rejected: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def service(broker: MosquittoBroker, kind: str) -> AsyncIterator[Service]:
    """A connected service; subscribers de-duplicate (it must not merge shared-id messages)."""
    if kind == "original":
        async with MQTTClient(broker.url, unique("orig")) as transport:
            peer = OriginalPeer(transport, "orig")

            async def publish_original(
                topic: str, etype: str, data: Any, msg_id: Any = None
            ) -> str:
                payload = await peer.publish(topic, etype, data, msg_id=msg_id)
                return StrictEnvelope.model_validate_json(payload).id

            async def listen_original(topic: str) -> Inbox[tuple[str, str, dict[str, Any]]]:
                strict = await peer.listen(topic)
                out: Inbox[tuple[str, str, dict[str, Any]]] = Inbox()
                strict.add = lambda e: out.add((e.id, e.type, e.data))  # type: ignore[method-assign]
                return out

            svc = Service(kind, publish_original, listen_original)
            svc.rejected = peer.rejected
            yield svc
    elif kind == "drop-in":
        async with dropin.MQTTClient(broker.url, unique("dropin"), **DEDUP) as client:
            rejected: list[bytes] = []

            async def publish_dropin(topic: str, etype: str, data: Any, msg_id: Any = None) -> str:
                return await client.publish_event(topic, etype, data, correlation_id=msg_id, qos=1)

            async def listen_dropin(topic: str) -> Inbox[tuple[str, str, dict[str, Any]]]:
                out: Inbox[tuple[str, str, dict[str, Any]]] = Inbox()

                async def handler(payload: bytes) -> None:
                    try:
                        env = dropin.Envelope.model_validate_json(payload)  # extra="forbid"
                    except ValueError:
                        rejected.append(payload)
                        return
                    out.add((env.id, env.type, env.data))

                await client.subscribe(topic, handler, qos=1)
                return out

            yield Service(kind, publish_dropin, listen_dropin, rejected)
    else:
        # Rollout setting: correlated events in the original format (id = correlation id).
        options: dict[str, Any] = {**DEDUP, "correlation_format": "original"}
        async with MQTTClient(broker.url, unique("native"), **options) as native:

            async def publish_native(topic: str, etype: str, data: Any, msg_id: Any = None) -> str:
                return await native.publish_event(topic, etype, data, correlation_id=msg_id, qos=1)

            async def listen_native(topic: str) -> Inbox[tuple[str, str, dict[str, Any]]]:
                out: Inbox[tuple[str, str, dict[str, Any]]] = Inbox()

                async def handler(env: Envelope) -> None:
                    out.add((env.id, env.type, env.data))

                await native.subscribe(topic, handler, qos=1)
                return out

            yield Service(kind, publish_native, listen_native)


async def exactly(
    inbox: Inbox[Any], count: int, sentinel: Callable[[], Awaitable[Any]]
) -> list[Any]:
    """The ``count`` items, after a sentinel proved nothing more is on its way."""
    await inbox.wait_for(count)
    await sentinel()
    items = await inbox.wait_for(count + 1)
    assert items[-1][1] == "test.sentinel"
    assert len(inbox.items) == count + 1, inbox.items
    return items[:count]


@pytest.mark.parametrize("sub_kind", KINDS)
@pytest.mark.parametrize("pub_kind", KINDS)
async def test_plain_events_and_a_shared_id_stream_arrive_exactly_once(
    shared_mosquitto: MosquittoBroker, pub_kind: str, sub_kind: str
) -> None:
    topic = unique("fleet/events")
    async with (
        service(shared_mosquitto, pub_kind) as pub,
        service(shared_mosquitto, sub_kind) as sub,
    ):
        inbox = await sub.listen(topic)
        first = await pub.publish(topic, "stt.final", {"text": "hello"})
        second = await pub.publish(topic, "stt.final", {"text": "hello"})  # same data, new event
        stream_id = "req-" + unique("s")
        for seq in range(1, 6):
            sent = await pub.publish(
                topic, "llm.stream", {"seq": seq, "delta": f"d{seq}"}, stream_id
            )
            assert sent == stream_id
        got = await exactly(inbox, 7, lambda: pub.publish(topic, "test.sentinel", {}))
    assert got[:2] == [
        (first, "stt.final", {"text": "hello"}),
        (second, "stt.final", {"text": "hello"}),
    ]
    assert got[2:] == [
        (stream_id, "llm.stream", {"seq": seq, "delta": f"d{seq}"}) for seq in range(1, 6)
    ]
    assert sub.rejected == []


@pytest.mark.parametrize("sub_kind", ["drop-in", "native"])
async def test_a_byte_identical_redelivery_is_still_removed(
    shared_mosquitto: MosquittoBroker, sub_kind: str
) -> None:
    topic = unique("fleet/redelivery")
    async with (
        MQTTClient(shared_mosquitto.url, unique("orig")) as transport,
        service(shared_mosquitto, sub_kind) as sub,
    ):
        peer = OriginalPeer(transport, "orig")
        inbox = await sub.listen(topic)
        chunk = await peer.publish(topic, "llm.stream", {"seq": 3}, msg_id="r-1")
        await transport.publish(topic, chunk, qos=1)  # the same bytes again: a redelivery
        await peer.publish(topic, "llm.stream", {"seq": 4}, msg_id="r-1")
        got = await exactly(inbox, 2, lambda: peer.publish(topic, "test.sentinel", {}))
    assert [data["seq"] for _, _, data in got] == [3, 4]


# --- request / reply across generations -----------------------------------------------------------


@contextlib.asynccontextmanager
async def responder(
    broker: MosquittoBroker, kind: str, requests: str, answers: str
) -> AsyncIterator[None]:
    """Answers each request on ``answers`` the way a service of ``kind`` does."""
    if kind == "native":
        async with MQTTClient(broker.url, unique("resp")) as native:

            async def on_request(msg: Message) -> None:
                await native.reply(
                    msg, "q.answer", {"n": msg.envelope.data["n"] * 2}, topic=answers
                )

            await native.subscribe(requests, on_request, qos=1)
            yield
    elif kind == "drop-in":
        async with dropin.MQTTClient(broker.url, unique("resp")) as client:

            async def on_payload(payload: bytes) -> None:
                env = dropin.Envelope.model_validate_json(payload)
                await client.publish_event(
                    answers, "q.answer", {"n": env.data["n"] * 2}, correlation_id=env.id, qos=1
                )

            await client.subscribe(requests, on_payload, qos=1)
            yield
    else:
        async with MQTTClient(broker.url, unique("resp")) as transport:
            peer = OriginalPeer(transport, "orig-resp")
            inbox = await peer.listen(requests)

            def on_request(env: StrictEnvelope) -> None:
                transport_tasks.append(
                    asyncio.ensure_future(
                        peer.publish(answers, "q.answer", {"n": env.data["n"] * 2}, msg_id=env.id)
                    )
                )

            transport_tasks: list[Any] = []
            inbox.add = on_request  # type: ignore[method-assign]
            try:
                yield
            finally:
                for task in transport_tasks:
                    await task
                assert peer.rejected == []


async def ask(broker: MosquittoBroker, kind: str, requests: str, answers: str) -> list[Any]:
    """Send three requests as a service of ``kind`` and return the answers' data in order."""
    if kind == "native":
        async with MQTTClient(broker.url, unique("ask")) as native:
            results = []
            for n in (1, 2, 3):
                env = await native.request(
                    requests, "q.ask", {"n": n}, response_topic=answers, timeout=5
                )
                results.append(env.data)
            return results
    # Original-style requesters match an answer by its id, which is the request's id.
    transport_cm: Any
    if kind == "drop-in":
        transport_cm = dropin.MQTTClient(broker.url, unique("ask"))
    else:
        transport_cm = MQTTClient(broker.url, unique("ask"))
    async with transport_cm as client:
        got: Inbox[StrictEnvelope] = Inbox()

        async def on_answer(payload: bytes) -> None:
            got.add(StrictEnvelope.model_validate_json(payload))  # forbid: must parse

        await client.subscribe(answers, on_answer, qos=1)
        ids = []
        for n in (1, 2, 3):
            if kind == "drop-in":
                ids.append(await client.publish_event(requests, "q.ask", {"n": n}, qos=1))
            else:
                payload = await OriginalPeer(client, "orig-ask").publish(
                    requests, "q.ask", {"n": n}
                )
                ids.append(StrictEnvelope.model_validate_json(payload).id)
        answers_got = await got.wait_for(3)
        assert [a.id for a in answers_got] == ids
        return [a.data for a in answers_got]


@pytest.mark.parametrize("responder_kind", KINDS)
@pytest.mark.parametrize("requester_kind", KINDS)
async def test_request_reply_across_generations(
    shared_mosquitto: MosquittoBroker, requester_kind: str, responder_kind: str
) -> None:
    requests, answers = unique("fleet/ask"), unique("fleet/answers")
    async with responder(shared_mosquitto, responder_kind, requests, answers):
        results = await ask(shared_mosquitto, requester_kind, requests, answers)
    assert results == [{"n": 2}, {"n": 4}, {"n": 6}]
