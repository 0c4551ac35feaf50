"""Publishing through MQTTClient, checked at an independent peer (``broker.watch``).

Issue 3 §3 (the envelope on the wire) and §4 (publish, publish_event, refusals, concurrency).
On the in-memory broker, the watcher a client of its own; the envelope on the wire also on
Mosquitto, read by ``mosquitto_sub``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel

from support.brokers import BOTH, Broker
from support.mosquitto_cli import unique
from tars.mqtt import (
    ClientStateError,
    InvalidTopicError,
    NotConnectedError,
    PayloadTooLarge,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def envelope_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / "envelope.schema.json").read_text())
    return schema


class Reading(BaseModel):
    """A data model with the types a plain ``json.dumps`` of ``model_dump()`` chokes on."""

    by_channel: dict[int, str]
    tags: set[str]
    at: dt.datetime


# --- the envelope on the wire (§3) ---------------------------------------------------------------


@pytest.mark.parametrize("broker", BOTH, indirect=True)
async def test_publish_event_dict_is_a_valid_envelope_on_the_wire(
    broker: Broker,
) -> None:
    topic = unique("pub/envelope")
    async with (
        broker.connected_client() as client,
        broker.watch(topic, count=1) as sub,
    ):
        before = client.config.source
        msg_id = await client.publish_event(topic, "stt.final", {"text": "hi", "n": 2})
        [captured] = await sub.wait_for(1)
    wire = json.loads(captured.payload)
    jsonschema.validate(wire, envelope_schema())
    assert wire["id"] == msg_id
    assert wire["type"] == "stt.final"
    assert wire["data"] == {"text": "hi", "n": 2}
    assert wire["source"] == before == client.client_id
    # No correlation: no key, so services still on the original client (extra="forbid") read it.
    assert "correlate" not in wire
    assert set(wire) == {"id", "type", "ts", "source", "data"}
    assert isinstance(wire["ts"], float)


async def test_publish_event_pydantic_model_with_awkward_types(
    broker: Broker,
) -> None:
    topic = unique("pub/model")
    reading = Reading(
        by_channel={1: "left", 2: "right"},
        tags={"a"},
        at=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
    )
    async with (
        broker.connected_client(source_name="sensor-svc") as client,
        broker.watch(topic, count=1) as sub,
    ):
        msg_id = await client.publish_event(topic, "sensor.reading", reading)
        [captured] = await sub.wait_for(1)
    wire = json.loads(captured.payload)
    jsonschema.validate(wire, envelope_schema())
    assert wire["id"] == msg_id
    assert wire["source"] == "sensor-svc"
    assert wire["data"] == {
        "by_channel": {"1": "left", "2": "right"},
        "tags": ["a"],
        "at": "2024-05-01T12:30:00Z",
    }
    assert Reading.model_validate(wire["data"]) == reading


async def test_ids_are_unique_and_never_the_correlation_id(
    broker: Broker,
) -> None:
    topic = unique("pub/ids")
    async with (
        broker.connected_client() as client,
        broker.watch(topic, count=3) as sub,
    ):
        first = await client.publish_event(topic, "a.request", {})
        second = await client.publish_event(topic, "a.reply", {}, correlation_id=first)
        third = await client.publish_event(topic, "a.reply", {}, correlation_id=first)
        captured = await sub.wait_for(3)
    wires = [json.loads(c.payload) for c in captured]
    assert [w["id"] for w in wires] == [first, second, third]
    assert len({first, second, third}) == 3
    assert [w.get("correlate", None) for w in wires] == [None, first, first]
    assert "correlate" not in wires[0]
    for wire in wires[1:]:
        assert wire["id"] != wire["correlate"]


# --- raw publish (§4) ----------------------------------------------------------------------------


async def test_publish_raw_bytes_and_str(broker: Broker) -> None:
    topic = unique("pub/raw")
    firmware = bytes(range(256)) + b"\x00\xff"
    async with (
        broker.connected_client() as client,
        broker.watch(topic, qos=1, count=2) as sub,
    ):
        await client.publish(topic, firmware, qos=1)
        await client.publish(topic, "héllo wörld")
        captured = await sub.wait_for(2)
    assert captured[0].payload == firmware
    assert captured[1].payload == "héllo wörld".encode()


@pytest.mark.parametrize("qos", [-1, 3])
async def test_qos_outside_0_to_2_is_a_value_error(broker: Broker, qos: int) -> None:
    async with broker.connected_client() as client:
        with pytest.raises(ValueError, match="qos"):
            await client.publish(unique("pub/qos"), b"x", qos=qos)
        with pytest.raises(ValueError, match="qos"):
            await client.publish_event(unique("pub/qos"), "t", {}, qos=qos)


_BAD_TOPICS = ["", "a/+/b", "a/#", "+", "#", "nul\0here"]


async def test_bad_topics_and_large_payloads_never_reach_the_wire(
    broker: Broker,
) -> None:
    """A '#' observer on a broker of our own sees only the sentinel sent after the refusals."""
    async with (
        broker.connected_client(max_payload_size=100) as client,
        broker.watch("#", qos=1) as everything,
    ):
        for topic in _BAD_TOPICS:
            with pytest.raises(InvalidTopicError) as info:
                await client.publish(topic, b"x", qos=1)
            assert info.value.topic == topic
            with pytest.raises(InvalidTopicError):
                await client.publish_event(topic, "t", {"a": 1}, qos=1)
        with pytest.raises(PayloadTooLarge) as too_large:
            await client.publish("ok/topic", b"x" * 101, qos=1)
        assert (too_large.value.size, too_large.value.limit) == (101, 100)
        with pytest.raises(PayloadTooLarge):
            await client.publish_event("ok/topic", "t", {"blob": "y" * 200}, qos=1)
        await client.publish("ok/sentinel", b"x" * 100, qos=1)  # at the limit: allowed
        [first] = await everything.wait_for(1)
    assert first.topic == "ok/sentinel"
    assert len(everything.messages.items) == 1


async def test_publish_before_connect_and_after_shutdown(
    broker: Broker,
) -> None:
    client = broker.client(unique("pub-state"))
    with pytest.raises(NotConnectedError):
        await client.publish("a/b", b"x")
    with pytest.raises(NotConnectedError):
        await client.publish_event("a/b", "t", {}, qos=1)
    await client.connect()
    await client.shutdown()
    with pytest.raises(ClientStateError):
        await client.publish("a/b", b"x")
    with pytest.raises(ClientStateError):
        await client.publish_event("a/b", "t", {}, qos=1)


# --- concurrency and delivery guarantees ----------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_fifty_tasks_publishing_at_once_all_arrive(broker: Broker, qos: int) -> None:
    topic = unique("pub/many")
    async with (
        broker.connected_client() as client,
        # The observer subscribes at QoS 1: mosquitto_sub 2.0.11 stalls on bursts of QoS 2
        # deliveries (seen with mosquitto_pub as the publisher too). What is under test is the
        # client's side: 50 concurrent publishes at each QoS, all accepted by the broker.
        broker.watch(topic, qos=1) as sub,
    ):
        ids = await asyncio.gather(
            *(client.publish_event(topic, "n", {"i": i}, qos=qos) for i in range(50))
        )
        captured = await sub.wait_for(50)
    wires = [json.loads(c.payload) for c in captured]
    assert sorted(w["data"]["i"] for w in wires) == list(range(50))
    assert {w["id"] for w in wires} == set(ids)


async def test_qos2_arrives_exactly_once(broker: Broker) -> None:
    topic = unique("pub/qos2")
    async with (
        broker.connected_client() as client,
        broker.watch(topic, qos=2) as sub,
    ):
        await client.publish(topic, b"once", qos=2)
        # Same topic, same QoS: the broker delivers in order, so once the sentinel is here
        # any duplicate of the first message would be too.
        await client.publish(topic, b"sentinel", qos=2)
        captured = await sub.wait_for(2)
    assert [(c.payload, c.qos) for c in captured] == [(b"once", 2), (b"sentinel", 2)]
    assert len(sub.messages.items) == 2


async def test_publish_event_data_must_be_a_mapping_or_a_model(
    broker: Broker,
) -> None:
    async with broker.connected_client() as client:
        with pytest.raises(TypeError):
            await client.publish_event(unique("pub/type"), "t", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await client.publish_event(unique("pub/type"), "t", {"when": object()})
        assert client.connected
