"""Every JSON example of the README and docs/ is what a real client publishes.

A JSON block marked ``<!-- docs-test: schema NAME -->`` must validate against the exact schema
``schemas/NAME.schema.json`` (no keys beyond the wire's) and have the shape of a payload
captured from a real client on Mosquitto: the same keys in the same order, the same JSON types,
and the same values where those are fixed (``type``, ``event``, ``err``). The capture covers a
health status (``ready``), a heartbeat, a correlated and an uncorrelated event, and the will
(``offline``), published by the broker after the service process is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from docs_tools import ROOT, run_script
from test_docs import json_blocks

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import Message
from tars.mqtt.testing import MosquittoBroker

SERVICE = """
import asyncio
from tars.mqtt import MQTTClient

async def main() -> None:
    client = MQTTClient.from_env(enable_health=True, enable_heartbeat=True, heartbeat_interval=1)
    async with client:
        first = await client.publish_event("docs/wire", "order.created", {"id": 7}, qos=1)
        await client.publish_event("docs/wire", "order.done", {}, qos=1, correlation_id=first)
        await asyncio.Event().wait()

asyncio.run(main())
"""

FIXED = ("type", "event", "err")
"""Keys whose value is part of the example's meaning, not just its type."""


def _shape(value: Any) -> Any:
    """Keys in order and JSON types, recursively; the values of :data:`FIXED` keys kept."""
    if isinstance(value, dict):
        return [
            (k, v if k in FIXED and isinstance(v, str) else _shape(v)) for k, v in value.items()
        ]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@pytest.fixture(scope="module")
def captured(shared_mosquitto: MosquittoBroker) -> dict[str, list[Any]]:
    """Payloads a real client published, by schema name: ``envelope``, ``health_status``
    (an envelope's data), ``heartbeat``."""
    return asyncio.run(_capture(shared_mosquitto))


async def _capture(broker: MosquittoBroker) -> dict[str, list[Any]]:
    client_id = unique("docs-wire")
    health: Inbox[bytes] = Inbox()
    beats: Inbox[bytes] = Inbox()
    events: Inbox[bytes] = Inbox()

    async def on_health(msg: Message) -> None:
        health.add(msg.payload)

    async def on_beat(msg: Message) -> None:
        beats.add(msg.payload)

    async def on_event(msg: Message) -> None:
        events.add(msg.payload)

    async with connected_client(broker, "observer") as observer:
        await observer.subscribe(f"system/health/{client_id}", on_health, qos=1)
        await observer.subscribe(f"system/keepalive/{client_id}", on_beat, qos=0)
        await observer.subscribe("docs/wire", on_event, qos=1)
        env = {"MQTT_URL": broker.url, "MQTT_CLIENT_ID": client_id}
        async with run_script("-c", env, SERVICE) as process:
            await health.wait_for(1, timeout=15)
            await events.wait_for(2, timeout=15)
            await beats.wait_for(1, timeout=15)
            process.terminate(signal.SIGKILL)
            await process.wait(timeout=15)
            statuses = await health.wait_for(2, timeout=15)  # the will: "offline"
    envelopes = [orjson.loads(p) for p in [*statuses, *await events.wait_for(2)]]
    return {
        "envelope": envelopes,
        "health_status": [e["data"] for e in envelopes if e["type"] == "health.status"],
        "heartbeat": [orjson.loads(p) for p in await beats.wait_for(1)],
    }


@pytest.mark.mosquitto
def test_the_capture_has_every_kind(captured: dict[str, list[Any]]) -> None:
    events = [d.get("event") for d in captured["health_status"]]
    assert events == ["ready", "offline"]
    assert any("correlate" in e for e in captured["envelope"])
    assert any("correlate" not in e for e in captured["envelope"])


@pytest.mark.mosquitto
@pytest.mark.parametrize(("where", "schema", "text"), json_blocks())
def test_documented_payload_is_one_the_client_publishes(
    captured: dict[str, list[Any]], where: str, schema: str, text: str
) -> None:
    document = json.loads((ROOT / "schemas" / f"{schema}.schema.json").read_text())
    example = json.loads(text)
    jsonschema.validate(example, document)
    shapes = [_shape(payload) for payload in captured[schema]]
    assert _shape(example) in shapes, (
        f"{where}: no captured {schema} payload has this shape; the client wrote:\n"
        + "\n".join(json.dumps(p) for p in captured[schema])
    )


@pytest.mark.mosquitto
def test_captured_payloads_validate_against_the_exact_schemas(
    captured: dict[str, list[Any]],
) -> None:
    for schema, payloads in captured.items():
        document = json.loads((ROOT / "schemas" / f"{schema}.schema.json").read_text())
        for payload in payloads:
            jsonschema.validate(payload, document)
