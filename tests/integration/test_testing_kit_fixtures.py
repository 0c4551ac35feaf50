"""The pytest plugin's client fixtures, as a service's test suite uses them.

``in_memory_broker``, ``mqtt_client`` and ``mqtt_client_factory`` come from the tars-core
plugin (the ``pytest11`` entry point), not from a conftest: these tests would not even collect
if the plugin were not registered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from support.subpytest import run_pytest
from tars.mqtt import ClientState, ConnectError, Message, MQTTClient
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory


async def round_trip(publisher: MQTTClient, subscriber: MQTTClient, topic: str) -> Message:
    """Publish one message from ``publisher`` and return it as ``subscriber`` received it."""
    received: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def handle(message: Message) -> None:
        if not received.done():
            received.set_result(message)

    await subscriber.subscribe(topic, handle, qos=1)
    await publisher.publish(topic, b"ping", qos=1)
    return await asyncio.wait_for(received, timeout=5)


async def test_mqtt_client_is_connected_to_the_in_memory_broker(
    in_memory_broker: InMemoryBroker, mqtt_client: MQTTClient
) -> None:
    assert mqtt_client.connected
    assert mqtt_client.client_id == "test-client"
    assert in_memory_broker.connected_clients == ["test-client"]


async def test_the_factory_makes_clients_with_options_and_fresh_ids(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    first = await mqtt_client_factory(enable_health=True)
    second = await mqtt_client_factory()

    assert (first.client_id, second.client_id) == ("client-1", "client-2")
    assert first.config.enable_health
    assert in_memory_broker.retained("system/health/client-1") is not None
    message = await round_trip(first, second, "kit/ping")
    assert message.payload == b"ping"


async def test_the_factory_can_leave_a_client_unconnected(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    client = await mqtt_client_factory("later", connect=False)
    assert client.state is ClientState.CREATED
    assert in_memory_broker.connected_clients == []
    await client.connect()
    assert in_memory_broker.connected_clients == ["later"]


async def test_the_factory_reaches_the_in_memory_broker_over_tcp(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    await in_memory_broker.serve_tcp()
    assert in_memory_broker.tcp_url is not None
    over_tcp = await mqtt_client_factory("over-tcp", broker=in_memory_broker.tcp_url)
    in_memory = await mqtt_client_factory("in-memory")
    assert over_tcp.config.mqtt_url == in_memory_broker.tcp_url

    message = await round_trip(in_memory, over_tcp, "kit/tcp")
    assert message.payload == b"ping"


async def test_the_factory_reaches_mosquitto(
    shared_mosquitto: MosquittoBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    publisher = await mqtt_client_factory("kit-fixtures-pub", broker=shared_mosquitto)
    subscriber = await mqtt_client_factory("kit-fixtures-sub", broker=shared_mosquitto)
    assert publisher.config.mqtt_url == shared_mosquitto.url

    message = await round_trip(publisher, subscriber, "kit-fixtures/mosquitto")
    assert message.payload == b"ping"


async def test_the_factory_fails_fast_when_the_broker_is_not_there(
    mqtt_client_factory: MQTTClientFactory,
) -> None:
    never_started = InMemoryBroker()
    with pytest.raises(ConnectError):
        await asyncio.wait_for(mqtt_client_factory("lost", broker=never_started), timeout=5)


_TEARDOWN_CHECK = """
from tars.mqtt import ClientState

made = []


async def test_make(mqtt_client_factory, in_memory_broker):
    made.append(await mqtt_client_factory("svc"))
    made.append(in_memory_broker)
    assert made[0].connected


def test_after():
    client, broker = made
    assert client.state is ClientState.CLOSED
    assert repr(broker).endswith("closed>")
"""


async def test_every_client_and_the_broker_are_closed_after_the_test(tmp_path: Path) -> None:
    """Run a tiny suite in a fresh pytest process, as a service's own suite would be run."""
    (tmp_path / "test_teardown.py").write_text(_TEARDOWN_CHECK)
    returncode, text = await run_pytest(tmp_path, timeout=30)
    assert returncode == 0, text
    assert "2 passed" in text
