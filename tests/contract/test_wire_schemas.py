"""Contract: what the client really puts on the wire matches the committed JSON Schemas.

The schemas under ``schemas/`` are generated from the pydantic models (``python -m
tars.mqtt._schemas``) and are what services in other languages code against. Here the payloads
are captured by ``mosquitto_sub`` from a real Mosquitto (an observer independent of tars-core)
and validated against those files, and every field on the wire must be one the schema names.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from support.mosquitto_cli import Captured, MosquittoSub, connected_client, unique
from tars.mqtt import MQTTClient, health_topic, keepalive_topic
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = pytest.mark.mosquitto

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def check(instance: Any, schema_file: str) -> None:
    """Validate against a committed schema; also refuse fields the schema does not describe."""
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema).validate(instance)
    assert set(instance) <= set(schema["properties"]), set(instance) - set(schema["properties"])


def check_health(captured: Captured) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(captured.payload)
    check(envelope, "envelope.schema.json")
    check(envelope["data"], "health_status.schema.json")
    assert envelope["type"] == "health.status"
    return envelope


async def retained(broker: MosquittoBroker, topic: str) -> Captured:
    async with MosquittoSub(broker, topic, qos=1, count=1) as sub:
        [captured] = await sub.wait_for(1)
    return captured


async def test_published_event(shared_mosquitto: MosquittoBroker) -> None:
    topic = unique("contract/event")
    async with (
        connected_client(shared_mosquitto) as client,
        MosquittoSub(shared_mosquitto, topic, qos=1) as sub,
    ):
        await client.publish_event(topic, "contract.test", {"nested": {"list": [1, 2.5, None]}})
        await client.publish_event(topic, "contract.test", {}, correlation_id="abc", qos=1)
        captured = await sub.wait_for(2)
    for message in captured:
        check(json.loads(message.payload), "envelope.schema.json")


async def test_health_status_retained_at_qos_1(shared_mosquitto: MosquittoBroker) -> None:
    client_id = unique("contract-health")
    async with MQTTClient(shared_mosquitto.url, client_id, enable_health=True):
        ready = await retained(shared_mosquitto, health_topic(client_id))
    assert (ready.retain, ready.qos) == (True, 1)
    assert check_health(ready)["data"]["ok"] is True
    shutdown = await retained(shared_mosquitto, health_topic(client_id))
    assert (shutdown.retain, shutdown.qos) == (True, 1)
    assert check_health(shutdown)["data"]["ok"] is False


async def test_heartbeat(shared_mosquitto: MosquittoBroker) -> None:
    client_id = unique("contract-beat")
    client = MQTTClient(
        shared_mosquitto.url, client_id, enable_heartbeat=True, heartbeat_interval=1
    )
    async with MosquittoSub(shared_mosquitto, keepalive_topic(client_id)) as sub, client:
        [beat] = await sub.wait_for(1)
    assert (beat.qos, beat.retain) == (0, False)
    check(json.loads(beat.payload), "heartbeat.schema.json")


async def test_will(shared_mosquitto: MosquittoBroker, make_tcp_proxy: TcpProxyFactory) -> None:
    proxy = await make_tcp_proxy(shared_mosquitto.host, shared_mosquitto.port)
    client_id = unique("contract-will")
    client = MQTTClient(proxy.url, client_id, enable_health=True)
    async with MosquittoSub(shared_mosquitto, health_topic(client_id), qos=1) as live:
        await client.connect()
        try:
            await live.wait_for(1)  # ready
            proxy.refuse()
            await proxy.drop_connections()
            await live.wait_for(2)  # the will
        finally:
            await asyncio.wait_for(client.shutdown(), 10)
    will = await retained(shared_mosquitto, health_topic(client_id))
    assert (will.retain, will.qos) == (True, 1)
    envelope = check_health(will)
    assert (envelope["data"]["ok"], envelope["data"]["event"]) == (False, "offline")
