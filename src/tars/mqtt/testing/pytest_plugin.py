"""pytest fixtures for services built on tars-core.

Loaded automatically (the ``pytest11`` entry point ``tars_mqtt``) wherever tars-core is
installed, so a service's tests can ask for a broker by name:

- ``mosquitto_broker``: a fresh Mosquitto for one test, free to stop, kill or restart.
- ``shared_mosquitto``: one Mosquitto for the whole session, for tests that leave it running.
- ``make_tcp_proxy``: ``await make_tcp_proxy(host, port)`` puts a :class:`TcpFaultProxy` in
  front of a broker; every proxy is closed after the test (needs pytest-asyncio).
- ``in_memory_broker``: a started :class:`InMemoryBroker` (no socket), closed after the test.
- ``mqtt_client_factory``: ``await mqtt_client_factory("svc", **options)`` returns a connected
  :class:`~tars.mqtt.MQTTClient` on the in-memory broker (or on ``broker=`` any other one);
  every client it made is shut down after the test.
- ``mqtt_client``: one connected client (``"test-client"``) on the in-memory broker.

The async fixtures need pytest-asyncio (the ``testing`` extra): without it, asking for one
fails the test with "install tars-core[testing]" instead of a bare "fixture not found". The
Mosquitto fixtures skip the test, with the reason, when Mosquitto is not installed.

This module is imported by every pytest run in an environment that has tars-core, so it imports
nothing of tars-core at module level: the broker, the proxy and the client are imported by the
fixtures that use them (tests/packaging/test_startup_imports.py keeps it so).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, Unpack

import pytest

if TYPE_CHECKING:
    from tars.mqtt import ClientOptions, MQTTClient
    from tars.mqtt.testing._broker import InMemoryBroker
    from tars.mqtt.testing._mosquitto import MosquittoBroker
    from tars.mqtt.testing._proxy import TcpFaultProxy

__all__ = [
    "BrokerTarget",
    "HasURL",
    "MQTTClientFactory",
    "TcpProxyFactory",
    "in_memory_broker",
    "make_tcp_proxy",
    "mosquitto_broker",
    "mqtt_client",
    "mqtt_client_factory",
    "shared_mosquitto",
]

_NO_MOSQUITTO = (
    "Mosquitto is not installed (apt-get install mosquitto mosquitto-clients, "
    "or brew install mosquitto)"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so suites run with ``--strict-markers`` may use it."""
    config.addinivalue_line(
        "markers", "mosquitto: needs a real Mosquitto binary (started on a free port)"
    )


_NO_ASYNCIO = (
    "the {name!r} fixture of tars-core's testing kit is async and needs pytest-asyncio: "
    "install tars-core[testing] (its testing extra), e.g. pip install './tars-core[testing]'"
)


def _needs_pytest_asyncio(name: str) -> Any:
    """A stand-in for an async fixture when pytest-asyncio is missing: using it fails the test
    with what to install, instead of pytest's "fixture not found"."""

    def missing() -> None:
        pytest.fail(_NO_ASYNCIO.format(name=name), pytrace=False)

    missing.__name__ = name
    missing.__doc__ = f"{name}: needs pytest-asyncio (install tars-core[testing])."
    return pytest.fixture(name=name)(missing)


try:  # free when installed: pytest loads it as a plugin of its own
    import pytest_asyncio
except ImportError:
    _HAS_PYTEST_ASYNCIO = False
else:
    _HAS_PYTEST_ASYNCIO = True


def _started_broker(*, persistence: bool) -> MosquittoBroker:
    from tars.mqtt.testing._mosquitto import MosquittoBroker

    if not MosquittoBroker.available():
        pytest.skip(_NO_MOSQUITTO)
    broker = MosquittoBroker(persistence=persistence)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


@pytest.fixture
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A started Mosquitto on a free port, stopped (and its files removed) after the test.

    Persistence is on, so sessions and retained messages survive ``restart()``.
    """
    broker = _started_broker(persistence=True)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def shared_mosquitto() -> Iterator[MosquittoBroker]:
    """One Mosquitto for the whole session: use topics of your own, and never stop it.

    Persistence is off: nothing restarts it, and saving after every message would slow it down.
    """
    broker = _started_broker(persistence=False)
    try:
        yield broker
    finally:
        broker.close()


class TcpProxyFactory(Protocol):
    """The type of the ``make_tcp_proxy`` fixture: start a proxy in front of a target."""

    async def __call__(self, target_host: str, target_port: int) -> TcpFaultProxy: ...


# pytest-asyncio is how async fixtures run; without it they fail with what to install.
if _HAS_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def make_tcp_proxy() -> AsyncIterator[TcpProxyFactory]:
        """Start :class:`TcpFaultProxy` instances on free ports; close them after the test."""
        from tars.mqtt.testing._proxy import TcpFaultProxy

        proxies: list[TcpFaultProxy] = []

        async def make(target_host: str, target_port: int) -> TcpFaultProxy:
            proxy = TcpFaultProxy(target_host, target_port)
            await proxy.start()
            proxies.append(proxy)
            return proxy

        try:
            yield make
        finally:
            for proxy in reversed(proxies):
                await proxy.close()


# --- In-memory broker fixtures ------------------------------------------------------------


class HasURL(Protocol):
    """A broker reached over TCP at ``url``: :class:`MosquittoBroker`, :class:`TcpFaultProxy`."""

    @property
    def url(self) -> str: ...


BrokerTarget: TypeAlias = "InMemoryBroker | HasURL | str"
"""Where ``mqtt_client_factory`` connects a client: an :class:`InMemoryBroker` (through its
``connector``, no socket), anything with an ``mqtt://`` :attr:`~HasURL.url`, or a URL itself
(e.g. ``in_memory_broker.tcp_url`` after ``serve_tcp()``)."""


class MQTTClientFactory(Protocol):
    """The type of the ``mqtt_client_factory`` fixture.

    ``await factory("svc", enable_health=True)`` builds an :class:`~tars.mqtt.MQTTClient` with
    those options (every keyword is a :class:`~tars.mqtt.MQTTClientConfig` field), connects it
    and returns it; the fixture shuts it down after the test. ``client_id`` defaults to a fresh
    ``client-{n}``. ``broker`` defaults to the test's ``in_memory_broker``. ``connect=False``
    returns it unconnected, to subscribe before connecting (a resumed session delivers what was
    queued right after CONNACK).

    Unless told otherwise the client does not wait for a broker that is not there
    (``wait_for_broker=False``): a test pointed at the wrong broker fails at once with
    :class:`~tars.mqtt.ConnectError` instead of retrying until the test times out.
    """

    async def __call__(
        self,
        client_id: str | None = None,
        *,
        broker: BrokerTarget | None = None,
        connect: bool = True,
        **options: Unpack[ClientOptions],
    ) -> MQTTClient: ...


def _client_on(target: BrokerTarget, client_id: str, options: ClientOptions) -> MQTTClient:
    from tars.mqtt import MQTTClient
    from tars.mqtt.testing._broker import InMemoryBroker

    if isinstance(target, InMemoryBroker):
        return MQTTClient(target.url, client_id, connector=target.connector, **options)
    url = target if isinstance(target, str) else target.url
    return MQTTClient(url, client_id, **options)


if _HAS_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def in_memory_broker() -> AsyncIterator[InMemoryBroker]:
        """A started :class:`InMemoryBroker` of the test's own, closed after it.

        Clients reach it without a socket (``connector=in_memory_broker.connector``); call
        ``await in_memory_broker.serve_tcp()`` to let other processes in too.
        """
        from tars.mqtt.testing._broker import InMemoryBroker

        async with InMemoryBroker() as broker:
            yield broker

    @pytest_asyncio.fixture
    async def mqtt_client_factory(
        in_memory_broker: InMemoryBroker,
    ) -> AsyncIterator[MQTTClientFactory]:
        """Make connected :class:`~tars.mqtt.MQTTClient` objects (see :class:`MQTTClientFactory`);
        each one is shut down after the test, before the broker closes."""
        clients: list[MQTTClient] = []
        numbers = itertools.count(1)

        async def make(
            client_id: str | None = None,
            *,
            broker: BrokerTarget | None = None,
            connect: bool = True,
            **options: Unpack[ClientOptions],
        ) -> MQTTClient:
            options.setdefault("wait_for_broker", False)
            target = in_memory_broker if broker is None else broker
            client = _client_on(target, client_id or f"client-{next(numbers)}", options)
            clients.append(client)
            if connect:
                await client.connect()
            return client

        try:
            yield make
        finally:
            for client in reversed(clients):
                await client.shutdown()

    @pytest_asyncio.fixture
    async def mqtt_client(mqtt_client_factory: MQTTClientFactory) -> MQTTClient:
        """One :class:`~tars.mqtt.MQTTClient` (``"test-client"``) connected to
        ``in_memory_broker``, shut down after the test."""
        return await mqtt_client_factory("test-client")

else:
    make_tcp_proxy = _needs_pytest_asyncio("make_tcp_proxy")
    in_memory_broker = _needs_pytest_asyncio("in_memory_broker")
    mqtt_client_factory = _needs_pytest_asyncio("mqtt_client_factory")
    mqtt_client = _needs_pytest_asyncio("mqtt_client")
