"""The one fixture of the contract suite: ``target``, the broker under test, nine times over.

Every contract test takes ``target`` and so runs against the in-memory broker (``memory``), the
same broker over TCP (``tcp``) and over WebSockets (``ws``), and a real Mosquitto over TCP
(``mosquitto``, the session's shared one) and over WebSockets (``mosquitto-ws``, a session-wide
one with a WebSocket listener); ``memory-311`` and ``mosquitto-311`` run it again with every
client on MQTT 3.1.1. ``ejabberd-ws`` (MQTT 5) and ``rabbitmq-ws`` (MQTT 3.1.1) run it over
WebSockets on the first node of the session's ejabberd and RabbitMQ clusters (started once,
shared with the integration tests; RabbitMQ boots in about 40 s, so a run that selects neither
never starts it). A test marked ``needs(feature)`` is skipped on a target whose broker lacks
the feature, with the reason ``contract.harness.LACKS`` gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import get_args

import pytest

from contract.harness import LACKS, Feature, Target, Upstream
from support.ejabberd import EjabberdCluster
from support.rabbitmq import RabbitMQCluster
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory, TcpProxyFactory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*features): the broker features (contract.harness.Feature) a contract test "
        "needs; skipped on a target that lacks one (contract.harness.LACKS says why)",
    )


def skip_what_the_broker_lacks(request: pytest.FixtureRequest, name: str) -> None:
    """Skip the test, before any broker is started, when ``name`` lacks a feature it needs."""
    lacks = LACKS.get(name, {})
    for marker in request.node.iter_markers("needs"):
        for feature in marker.args:
            if feature not in get_args(Feature):
                raise pytest.UsageError(f"needs({feature!r}): not a contract.harness.Feature")
            if feature in lacks:
                pytest.skip(f"{name}: {lacks[feature]}")


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
        "memory-311",
        pytest.param("mosquitto-311", marks=pytest.mark.mosquitto),
        pytest.param("ejabberd-ws", marks=pytest.mark.ejabberd),
        pytest.param("rabbitmq-ws", marks=pytest.mark.rabbitmq),
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
    name = request.param
    skip_what_the_broker_lacks(request, name)
    protocol = "3.1.1" if name.endswith("-311") else None  # every client on MQTT 3.1.1
    kind = name.removesuffix("-311")
    if kind == "memory":
        yield Target("memory", mqtt_client_factory, memory=in_memory_broker, protocol=protocol)
    elif kind == "tcp":
        await in_memory_broker.serve_tcp()
        yield Target("tcp", mqtt_client_factory, memory=in_memory_broker)
    elif kind == "ws":
        await in_memory_broker.serve_ws()
        yield Target("ws", mqtt_client_factory, memory=in_memory_broker)
    elif kind == "mosquitto":  # mosquitto, mosquitto-311
        shared: MosquittoBroker = request.getfixturevalue("shared_mosquitto")
        upstream = Upstream(shared.host, shared.port)
        yield Target(
            "mosquitto",
            mqtt_client_factory,
            upstream=upstream,
            make_proxy=make_tcp_proxy,
            protocol=protocol,
        )
    elif kind == "mosquitto-ws":
        ws: MosquittoBroker = request.getfixturevalue("mosquitto_ws")
        assert ws.ws_port is not None
        upstream = Upstream(ws.host, ws.ws_port, "ws", "/mqtt")
        yield Target(
            "mosquitto-ws", mqtt_client_factory, upstream=upstream, make_proxy=make_tcp_proxy
        )
    elif kind == "ejabberd-ws":
        ejabberd: EjabberdCluster = request.getfixturevalue("ejabberd_cluster")
        node = ejabberd.nodes[0]
        login = f"{ejabberd.username}:{ejabberd.password}@"
        upstream = Upstream(ejabberd.host, node.ws_port, "ws", "/mqtt", login)
        yield Target(
            "ejabberd-ws",
            mqtt_client_factory,
            upstream=upstream,
            make_proxy=make_tcp_proxy,
            queues_qos0=True,
        )
    else:
        rabbitmq: RabbitMQCluster = request.getfixturevalue("rabbitmq_cluster")
        login = f"{rabbitmq.username}:{rabbitmq.password}@"
        upstream = Upstream(rabbitmq.host, rabbitmq.nodes[0].ws_port, "ws", "/ws", login)
        yield Target(
            "rabbitmq-ws",
            mqtt_client_factory,
            upstream=upstream,
            make_proxy=make_tcp_proxy,
            protocol="3.1.1",
            queues_qos0=True,
        )
