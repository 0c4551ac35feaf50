"""The one fixture of the contract suite: ``target``, the broker under test, three times over.

Every contract test takes ``target`` and so runs against the in-memory broker (``memory``), the
same broker over TCP (``tcp``) and a real Mosquitto (``mosquitto``, the session's shared one);
``memory-311`` and ``mosquitto-311`` run it again with every client on MQTT 3.1.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contract.harness import Target
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory, TcpProxyFactory


@pytest.fixture(
    params=[
        "memory",
        "tcp",
        pytest.param("mosquitto", marks=pytest.mark.mosquitto),
        "memory-311",
        pytest.param("mosquitto-311", marks=pytest.mark.mosquitto),
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
    kind, _, version = request.param.partition("-")
    protocol = "3.1.1" if version == "311" else None  # every client on MQTT 3.1.1
    if kind == "memory":
        yield Target("memory", mqtt_client_factory, memory=in_memory_broker, protocol=protocol)
    elif kind == "tcp":
        await in_memory_broker.serve_tcp()
        yield Target("tcp", mqtt_client_factory, memory=in_memory_broker)
    else:
        shared: MosquittoBroker = request.getfixturevalue("shared_mosquitto")
        yield Target(
            "mosquitto",
            mqtt_client_factory,
            mosquitto=shared,
            make_proxy=make_tcp_proxy,
            protocol=protocol,
        )
