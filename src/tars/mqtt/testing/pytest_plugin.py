"""pytest fixtures for services built on tars-core.

Loaded automatically (the ``pytest11`` entry point ``tars_mqtt``) wherever tars-core is
installed, so a service's tests can ask for a broker by name:

- ``mosquitto_broker``: a fresh Mosquitto for one test, free to stop, kill or restart.
- ``shared_mosquitto``: one Mosquitto for the whole session, for tests that leave it running.
- ``make_tcp_proxy``: ``await make_tcp_proxy(host, port)`` puts a :class:`TcpFaultProxy` in
  front of a broker; every proxy is closed after the test (needs pytest-asyncio).

The Mosquitto fixtures skip the test, with the reason, when Mosquitto is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import pytest

from tars.mqtt.testing._mosquitto import MosquittoBroker
from tars.mqtt.testing._proxy import TcpFaultProxy

__all__ = ["TcpProxyFactory", "make_tcp_proxy", "mosquitto_broker", "shared_mosquitto"]

_NO_MOSQUITTO = (
    "Mosquitto is not installed (apt-get install mosquitto mosquitto-clients, "
    "or brew install mosquitto)"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so suites run with ``--strict-markers`` may use it."""
    config.addinivalue_line(
        "markers", "mosquitto: needs a real Mosquitto binary (started on a free port)"
    )


def _started_broker(*, persistence: bool) -> MosquittoBroker:
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


# pytest-asyncio is how async fixtures run; without it only the async fixtures are missing.
if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def make_tcp_proxy() -> AsyncIterator[TcpProxyFactory]:
        """Start :class:`TcpFaultProxy` instances on free ports; close them after the test."""
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
# Reserved for the in-memory broker (InMemoryBroker) fixtures, added here by their owner.
# --------------------------------------------------------------------------------------------
