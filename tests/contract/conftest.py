"""The one fixture of the contract suite: ``target``, the broker under test, five times over.

Every contract test takes ``target`` and so runs against the in-memory broker (``memory``), the
same broker over TCP (``tcp``) and over WebSockets (``ws``), and a real Mosquitto over TCP
(``mosquitto``, the session's shared one) and over WebSockets (``mosquitto-ws``, a session-wide
one with a WebSocket listener).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from contract.harness import Target
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory, TcpProxyFactory


@pytest.fixture(scope="session")
def mosquitto_ws() -> Iterator[MosquittoBroker]:
    """One Mosquitto with a WebSocket listener (``ws_url``) for the whole session."""
    if not MosquittoBroker.available():
        pytest.fail("Mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    broker = MosquittoBroker(persistence=False, websockets=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(
    params=[
        "memory",
        "tcp",
        "ws",
        pytest.param("mosquitto", marks=pytest.mark.mosquitto),
        pytest.param("mosquitto-ws", marks=pytest.mark.mosquitto),
    ]
)
async def target(
    request: pytest.FixtureRequest,
    in_memory_broker: InMemoryBroker,
    make_tcp_proxy: TcpProxyFactory,
    mqtt_client_factory: MQTTClientFactory,
) -> AsyncIterator[Target]:
    """The broker of this run of the test, with clients made through the plugin's factory.

    (Fixture order matters: clients are shut down before their proxies close.)
    """
    kind = request.param
    if kind == "memory":
        yield Target("memory", mqtt_client_factory, memory=in_memory_broker)
    elif kind == "tcp":
        await in_memory_broker.serve_tcp()
        yield Target("tcp", mqtt_client_factory, memory=in_memory_broker)
    elif kind == "ws":
        await in_memory_broker.serve_ws()
        yield Target("ws", mqtt_client_factory, memory=in_memory_broker)
    elif kind == "mosquitto":
        shared: MosquittoBroker = request.getfixturevalue("shared_mosquitto")
        yield Target("mosquitto", mqtt_client_factory, mosquitto=shared, make_proxy=make_tcp_proxy)
    else:
        ws: MosquittoBroker = request.getfixturevalue("mosquitto_ws")
        yield Target("mosquitto-ws", mqtt_client_factory, mosquitto=ws, make_proxy=make_tcp_proxy)
