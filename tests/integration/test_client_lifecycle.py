"""The client's lifecycle (issue 3 §2 and §6): construction, state, connect/shutdown, tasks.

Configuration errors are checked through the two ways a service builds a client,
``MQTTClient(...)`` and ``MQTTClient.from_env(env={...})``; the rest runs on the in-memory
broker (``support.brokers``), but for MQTT 5 properties checked by an independent peer and a
broker killed under a client, which run against Mosquitto.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from support.brokers import Broker
from support.mosquitto_cli import Inbox, MosquittoSub, connected_client, unique
from tars.mqtt import (
    ClientState,
    ClientStateError,
    ConfigError,
    LinkView,
    MQTTClient,
    MQTTError,
)
from tars.mqtt.testing import MosquittoBroker

# --- configuration at construction (§2) ---------------------------------------------------------

GOOD_URL = "mqtt://localhost:1883"

# (field named by the error, keyword options) for MQTTClient(url, client_id, **options)
_BAD_OPTIONS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("mqtt_url", "http://localhost:1883", "svc", {}),
    ("mqtt_url", "mqtt://", "svc", {}),
    ("mqtt_url", "mqtt://:1883", "svc", {}),
    ("mqtt_url", "mqtt://localhost:0", "svc", {}),
    ("mqtt_url", "mqtt://localhost:65536", "svc", {}),
    ("client_id", GOOD_URL, "", {}),
    ("keepalive", GOOD_URL, "svc", {"keepalive": 0}),
    ("keepalive", GOOD_URL, "svc", {"keepalive": 3601}),
    ("heartbeat_interval", GOOD_URL, "svc", {"heartbeat_interval": 0.5}),
    (
        "reconnect_max_delay",
        GOOD_URL,
        "svc",
        {"reconnect_min_delay": 2.0, "reconnect_max_delay": 1.0},
    ),
    ("reconnect_max_delay", GOOD_URL, "svc", {"reconnect_min_delay": 10.0}),
    ("dedupe_max_entries", GOOD_URL, "svc", {"dedupe_ttl": 5.0}),
    ("dedupe_max_entries", GOOD_URL, "svc", {"dedupe_ttl": 5.0, "dedupe_max_entries": 0}),
    ("keepalive_s", GOOD_URL, "svc", {"keepalive_s": 30}),  # a typo is not silently ignored
]


@pytest.mark.parametrize(("field", "url", "client_id", "options"), _BAD_OPTIONS)
def test_bad_values_fail_at_construction_naming_the_field(
    field: str, url: str, client_id: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClient(url, client_id, **options)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MQTTError)


# (field named by the error, environment variable the message points at, environment) for
# MQTTClient.from_env(env=...)
_BASE_ENV = {"MQTT_URL": GOOD_URL, "MQTT_CLIENT_ID": "svc"}
_BAD_ENV: list[tuple[str, str, dict[str, str]]] = [
    ("MQTT_URL", "MQTT_URL", {"MQTT_CLIENT_ID": "svc"}),  # missing
    ("MQTT_CLIENT_ID", "MQTT_CLIENT_ID", {"MQTT_URL": GOOD_URL, "MQTT_CLIENT_ID": ""}),
    ("mqtt_url", "MQTT_URL", {**_BASE_ENV, "MQTT_URL": "http://localhost"}),
    ("mqtt_url", "MQTT_URL", {**_BASE_ENV, "MQTT_URL": "mqtt://localhost:99999"}),
    ("mqtt_url", "MQTT_URL", {**_BASE_ENV, "MQTT_URL": "mqtt://:1883"}),
    ("MQTT_KEEPALIVE", "MQTT_KEEPALIVE", {**_BASE_ENV, "MQTT_KEEPALIVE": "sixty"}),
    ("keepalive", "MQTT_KEEPALIVE", {**_BASE_ENV, "MQTT_KEEPALIVE": "0"}),
    ("keepalive", "MQTT_KEEPALIVE", {**_BASE_ENV, "MQTT_KEEPALIVE": "3601"}),
    (
        "heartbeat_interval",
        "MQTT_HEARTBEAT_INTERVAL",
        {**_BASE_ENV, "MQTT_HEARTBEAT_INTERVAL": "0.1"},
    ),
    ("MQTT_ENABLE_HEALTH", "MQTT_ENABLE_HEALTH", {**_BASE_ENV, "MQTT_ENABLE_HEALTH": "maybe"}),
    ("MQTT_ENABLE_HEARTBEAT", "MQTT_ENABLE_HEARTBEAT", {**_BASE_ENV, "MQTT_ENABLE_HEARTBEAT": "2"}),
    (
        "reconnect_max_delay",
        "MQTT_RECONNECT_MAX_DELAY",
        {**_BASE_ENV, "MQTT_RECONNECT_MIN_DELAY": "3", "MQTT_RECONNECT_MAX_DELAY": "1"},
    ),
    ("dedupe_max_entries", "dedupe_max_entries", {**_BASE_ENV, "MQTT_DEDUPE_TTL": "2"}),
]


@pytest.mark.parametrize(("field", "variable", "env"), _BAD_ENV)
def test_bad_environment_fails_at_construction_naming_the_field(
    field: str, variable: str, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClient.from_env(env=env)
    assert info.value.field == field
    assert field in str(info.value)
    assert variable in str(info.value)


def test_empty_client_id_from_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        MQTTClient.from_env(env=_BASE_ENV, client_id="")
    assert info.value.field == "client_id"


def test_from_env_reads_every_documented_variable() -> None:
    env = {
        "MQTT_URL": "mqtt://broker.local:1884",
        "MQTT_CLIENT_ID": "stt-worker",
        "MQTT_SOURCE_NAME": "stt",
        "MQTT_KEEPALIVE": "30",
        "MQTT_ENABLE_HEALTH": "YES",
        "MQTT_ENABLE_HEARTBEAT": "On",
        "MQTT_HEARTBEAT_INTERVAL": "2.5",
        "MQTT_DEDUPE_TTL": "10",
        "MQTT_DEDUPE_MAX_ENTRIES": "500",
        "MQTT_RECONNECT_MIN_DELAY": "0.25",
        "MQTT_RECONNECT_MAX_DELAY": "8",
    }
    client = MQTTClient.from_env(env=env, keepalive=45)
    cfg = client.config
    assert (cfg.mqtt_url, cfg.client_id, cfg.source_name) == (env["MQTT_URL"], "stt-worker", "stt")
    assert cfg.keepalive == 45  # the override wins
    assert (cfg.enable_health, cfg.enable_heartbeat) == (True, True)
    assert (cfg.heartbeat_interval, cfg.dedupe_ttl, cfg.dedupe_max_entries) == (2.5, 10.0, 500)
    assert (cfg.reconnect_min_delay, cfg.reconnect_max_delay) == (0.25, 8.0)
    assert client.state is ClientState.CREATED


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("Yes", True), ("off", False)],
)
def test_from_env_booleans(text: str, value: bool) -> None:
    client = MQTTClient.from_env(env={**_BASE_ENV, "MQTT_ENABLE_HEALTH": text})
    assert client.config.enable_health is value


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_URL", "mqtt://from-environ:1999")
    monkeypatch.setenv("MQTT_CLIENT_ID", "environ-svc")
    client = MQTTClient.from_env()
    assert (client.config.connection.host, client.client_id) == ("from-environ", "environ-svc")


# --- state, connect, shutdown -------------------------------------------------------------------

needs_mosquitto = pytest.mark.mosquitto


def state_of(client: MQTTClient) -> ClientState:
    """The state, read through a call so that type checkers do not keep an earlier narrowing."""
    return client.state


async def test_state_connected_and_client_property_through_the_lifecycle(
    broker: Broker,
) -> None:
    client = broker.client(unique("life"))
    assert (client.state, client.connected, client.client) == (ClientState.CREATED, False, None)
    await client.connect()
    assert (client.state, client.connected) == (ClientState.CONNECTED, True)
    assert isinstance(client.client, LinkView)
    with pytest.raises(AttributeError):
        client.client = None  # type: ignore[misc]
    await client.shutdown()
    assert (client.state, client.connected, client.client) == (ClientState.CLOSED, False, None)


@needs_mosquitto
async def test_client_property_publishes_with_mqtt5_properties(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topic = unique("life/props")
    async with (
        connected_client(shared_mosquitto) as client,
        MosquittoSub(shared_mosquitto, topic, qos=1) as sub,
    ):
        conn = client.client
        assert conn is not None
        code = await conn.publish(
            topic, b"with props", qos=1, user_properties=[("trace-id", "abc123")]
        )
        [captured] = await sub.wait_for(1)
    assert code == 0
    assert captured.payload == b"with props"
    assert captured.user_properties == "trace-id:abc123"


async def test_connect_twice_is_a_state_error(broker: Broker) -> None:
    async with broker.connected_client() as client:
        with pytest.raises(ClientStateError):
            await client.connect()
        assert client.connected  # the refused call changed nothing


async def test_shutdown_is_idempotent_and_never_raises(broker: Broker) -> None:
    client = broker.client(unique("idem"))
    await client.shutdown()  # before connect: nothing to do
    assert client.state is ClientState.CREATED
    await client.connect()
    await asyncio.gather(client.shutdown(), client.shutdown())  # concurrent calls
    await client.shutdown()
    await client.disconnect()
    assert state_of(client) is ClientState.CLOSED


@needs_mosquitto
async def test_shutdown_does_not_raise_when_the_broker_is_gone(
    mosquitto_broker: MosquittoBroker,
) -> None:
    client = MQTTClient(mosquitto_broker.url, unique("gone"), enable_health=True)
    await client.connect()
    await mosquitto_broker.akill()
    async with asyncio.timeout(10):
        await client.shutdown(timeout=2)
    assert client.state is ClientState.CLOSED


async def test_connect_again_after_shutdown(broker: Broker) -> None:
    topic = unique("life/again")
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    client = broker.client(unique("again"))
    await client.connect()
    await client.subscribe(topic, handler)
    await client.publish(topic, b"first", qos=1)
    await inbox.wait_for(1)
    await client.shutdown()

    await client.connect()
    try:
        assert client.connected
        await client.publish(topic, b"second", qos=1)  # the subscription came back with it
        assert await inbox.wait_for(2) == [b"first", b"second"]
    finally:
        await client.shutdown()


async def test_async_with(broker: Broker) -> None:
    client = broker.client(unique("with"))
    async with client as entered:
        assert entered is client
        assert client.connected
    assert client.state is ClientState.CLOSED
    assert not client.connected


async def test_no_task_is_left_after_shutdown(broker: Broker) -> None:
    before = asyncio.all_tasks()
    client = broker.client(
        unique("tasks"),
        enable_health=True,
        enable_heartbeat=True,
        heartbeat_interval=1,
    )
    hooked = asyncio.Event()

    @client.on_connect
    async def on_connect() -> None:
        hooked.set()
        await asyncio.sleep(3600)  # a hook still running at shutdown

    async def slow(payload: bytes) -> None:
        await asyncio.sleep(3600)  # a handler still running at shutdown

    topic = unique("life/tasks")
    await client.connect()
    await client.subscribe(topic, slow)
    await client.subscribe(f"{topic}/many", slow, concurrency=4)
    await client.publish(topic, b"x", qos=1)
    for _ in range(3):
        await client.publish(f"{topic}/many", b"x", qos=1)
    await asyncio.wait_for(hooked.wait(), 5)
    ours = {t for t in asyncio.all_tasks() - before if t.get_name().startswith("tars-mqtt")}
    assert ours  # the check below can see them
    await client.shutdown()
    await asyncio.sleep(0)  # let cancelled tasks finish their last step
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), [t.get_name() for t in left]
