"""The drop-in at the original import path behaves as the fleet's services expect it to.

Everything is checked by what a service (or another client) sees on a real broker.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import orjson
import pytest

from support.mosquitto_cli import Inbox, unique
from tars.adapters.mqtt_client import (
    ConnectionParams,
    Envelope,
    HealthPing,
    HeartbeatPayload,
    MessageDeduplicator,
    MQTTClient,
    MQTTClientConfig,
    parse_mqtt_url,
)
from tars.mqtt import InvalidArgumentTypeError
from tars.mqtt import MQTTClient as NativeClient
from tars.mqtt.testing import MosquittoBroker

mosquitto = pytest.mark.mosquitto


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- models and configuration --------------------------------------------------------------------


def test_models_keep_the_original_names_defaults_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = parse_mqtt_url("mqtt://user:s3cret@broker.local")
    assert (params.hostname, params.port, params.username) == ("broker.local", 1883, "user")
    assert "s3cret" not in repr(params)
    assert "s3cret" not in str(params)
    assert parse_mqtt_url("mqtt://").hostname == "localhost"
    with pytest.raises(ValueError, match="Invalid MQTT URL scheme"):
        parse_mqtt_url("http://broker")
    assert ConnectionParams(hostname="h").port == 1883
    assert HeartbeatPayload(timestamp=1.5).model_dump() == {
        "ok": True,
        "event": "heartbeat",
        "timestamp": 1.5,
    }
    env = Envelope.new(event_type="llm.response", data={"x": 1}, correlate="req-1")
    assert (env.id, env.source) == ("req-1", "router")
    with pytest.raises(ValueError, match="correlate"):
        Envelope.model_validate({**env.model_dump(), "correlate": None})  # extra="forbid"
    assert set(HealthPing(ok=True).model_dump()) == {
        "message_id",
        "ok",
        "event",
        "err",
        "timestamp",
    }
    monkeypatch.delenv("MQTT_URL", raising=False)
    monkeypatch.setenv("MQTT_CLIENT_ID", "svc")
    with pytest.raises(KeyError, match="MQTT_URL"):
        MQTTClientConfig.from_env()
    monkeypatch.setenv("MQTT_URL", "mqtt://h")
    monkeypatch.setenv("MQTT_ENABLE_HEALTH", "1")  # only "true" is true, as in the original
    assert MQTTClientConfig.from_env().enable_health is False
    with pytest.raises(ValueError, match="reconnect_max_delay"):
        MQTTClient("mqtt://h", "svc", reconnect_min_delay=5.0, reconnect_max_delay=1.0)


def test_from_env_names_a_misspelt_variable_with_the_closest_it_reads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fleet service on the drop-in with ``MQTT_KEEP_ALIVE=30`` is told, not ignored."""
    for name in [n for n in os.environ if n.startswith("MQTT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MQTT_URL", "mqtt://h")
    monkeypatch.setenv("MQTT_CLIENT_ID", "svc")
    monkeypatch.setenv("MQTT_KEEP_ALIVE", "30")
    monkeypatch.setenv("MQTT_DEDUPE_TTL", "5")
    monkeypatch.setenv("MQTT_DEDUPE_MAX_ENTRIES", "10")
    config = MQTTClientConfig.from_env()
    assert config.keepalive == 60  # not read: the warning says why
    assert config.dedupe_ttl == 5.0
    said = [r.getMessage() for r in caplog.records if "MQTT_" in r.getMessage()]
    assert said == [
        "environment variable MQTT_KEEP_ALIVE is not a drop-in option: ignored "
        "(did you mean MQTT_KEEPALIVE?)"
    ]


def test_deduplicator_keeps_chunks_that_share_an_id_apart() -> None:
    dedup = MessageDeduplicator(ttl=30.0, max_entries=100)
    chunks = [
        orjson.dumps(Envelope.new(event_type="s", data={"seq": n}, correlate="r").model_dump())
        for n in (1, 2)
    ]
    assert [dedup.is_duplicate(c) for c in chunks] == [False, False]
    assert dedup.is_duplicate(chunks[0]) is True
    assert dedup.is_duplicate(b"not json") is False


async def test_calls_before_connect_are_runtime_errors() -> None:
    client = MQTTClient("mqtt://127.0.0.1:1", unique("idle"))
    assert client.client is None
    assert client.connected is False

    async def handler(payload: bytes) -> None: ...

    with pytest.raises(RuntimeError):
        await client.subscribe("a/b", handler)
    with pytest.raises(RuntimeError):
        await client.publish_event("a/b", "t", {})
    with pytest.raises(RuntimeError):
        await client.wait_for_disconnect()


async def test_connect_fails_fast_with_a_connection_error_while_the_broker_is_down() -> None:
    client = MQTTClient(f"mqtt://127.0.0.1:{free_port()}", unique("down"))
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionError):
            await client.connect()
    assert client.client is None


# --- against Mosquitto ---------------------------------------------------------------------------


@mosquitto
async def test_connect_is_idempotent_and_client_is_one_object(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("idem"))
    await asyncio.gather(client.connect(), client.connect())
    view = client.client
    await client.connect()
    try:
        assert view is not None
        assert client.client is view
        assert client.connected
        # A payload it cannot send: a TypeError as before, now also an MQTTError, that names
        # the type and not the value (which may be anything the service holds).
        with pytest.raises(InvalidArgumentTypeError, match=r"payload must be .* not dict") as info:
            await view.publish(unique("t"), {"token": "s3cret"})
        assert isinstance(info.value, TypeError)
        assert "s3cret" not in str(info.value)
    finally:
        await client.shutdown()
    assert client.client is None


@mosquitto
async def test_publish_health_has_the_original_payload_and_is_off_by_default(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client_id = unique("health")
    seen: Inbox[dict[str, Any]] = Inbox()

    async def on_health(payload: bytes) -> None:
        seen.add(orjson.loads(payload))

    async with NativeClient(shared_mosquitto.url, unique("obs")) as observer:
        await observer.subscribe(f"system/health/{client_id}", on_health, qos=1)
        async with MQTTClient(shared_mosquitto.url, client_id) as quiet:
            await quiet.publish_health(ok=False, err="ignored")  # enable_health=False: no-op
        async with MQTTClient(shared_mosquitto.url, client_id, enable_health=True) as loud:
            await loud.publish_health(ok=False, event="degraded", err="disk full")
            items = await seen.wait_for(2)
    ready, mine = items
    assert set(ready) == {"id", "type", "ts", "source", "data"}
    assert HealthPing.model_validate(ready["data"]).event == "ready"  # extra="forbid" accepts it
    assert (mine["type"], mine["data"]["ok"], mine["data"]["event"], mine["data"]["err"]) == (
        "health.status",
        False,
        "degraded",
        "disk full",
    )
    assert set(mine["data"]) == {"message_id", "ok", "event", "err", "timestamp"}


@mosquitto
async def test_wait_for_disconnect_returns_after_shutdown_elsewhere(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("wait"))
    await client.connect()
    waiter = asyncio.ensure_future(client.wait_for_disconnect())
    await asyncio.sleep(0)
    assert not waiter.done()
    await client.shutdown()
    async with asyncio.timeout(5):
        await waiter


async def reconnect_loop_rounds(
    client: Any, topic: str, rounds: int, make_handler: Any
) -> list[bytes]:
    """connect -> subscribe -> publish -> shutdown, ``rounds`` times on one client object."""
    got: Inbox[bytes] = Inbox()
    for n in range(rounds):
        await client.connect()
        await client.subscribe(topic, make_handler(got), qos=1)
        await client.subscribe(topic, make_handler(got), qos=1)  # and once more, for good measure
        marker = f"round-{n}".encode()
        await client.client.publish(topic, marker, qos=1) if isinstance(
            client, MQTTClient
        ) else await client.publish(topic, marker, qos=1)
        await got.wait_for(n + 1)
        await client.shutdown()
    return got.items


@mosquitto
async def test_reconnect_loop_delivers_each_message_once_on_the_drop_in(
    shared_mosquitto: MosquittoBroker,
) -> None:
    def new_closure(got: Inbox[bytes]) -> Any:  # a new handler each round, as the apps do
        async def handle(payload: bytes) -> None:
            got.add(payload)

        return handle

    topic = unique("loop/dropin")
    client = MQTTClient(shared_mosquitto.url, unique("loop"))
    items = await reconnect_loop_rounds(client, topic, 3, new_closure)
    assert items == [b"round-0", b"round-1", b"round-2"]


@mosquitto
async def test_reconnect_loop_delivers_each_message_once_natively(
    shared_mosquitto: MosquittoBroker,
) -> None:
    got_box: list[Inbox[bytes]] = []

    async def handle(payload: bytes) -> None:  # one handler, subscribed again every round
        got_box[0].add(payload)

    def same_handler(got: Inbox[bytes]) -> Any:
        if not got_box:
            got_box.append(got)
        return handle

    topic = unique("loop/native")
    client = NativeClient(shared_mosquitto.url, unique("loop"))
    items = await reconnect_loop_rounds(client, topic, 3, same_handler)
    assert items == [b"round-0", b"round-1", b"round-2"]


@mosquitto
async def test_subscribe_again_replaces_the_handler(shared_mosquitto: MosquittoBroker) -> None:
    topic = unique("replace")
    first: Inbox[bytes] = Inbox()
    second: Inbox[bytes] = Inbox()

    async def one(payload: bytes) -> None:
        first.add(payload)

    async def two(payload: bytes) -> None:
        second.add(payload)

    async with MQTTClient(shared_mosquitto.url, unique("repl")) as client:
        await client.subscribe(topic, one, qos=0)
        await client.publish_event(topic, "t", {"n": 1}, qos=1)
        await first.wait_for(1)
        await client.subscribe(topic, two, qos=1)  # higher QoS: a new broker subscription
        await client.publish_event(topic, "t", {"n": 2}, qos=1)
        await client.publish_event(topic, "t", {"n": 3}, qos=1)
        got = await second.wait_for(2)
    assert [orjson.loads(p)["data"]["n"] for p in got] == [2, 3]
    assert len(first.items) == 1
