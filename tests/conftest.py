"""What tars-core's own suite needs beyond the public pytest plugin (tars.mqtt.testing).

The plugin skips Mosquitto tests when Mosquitto is missing, which suits a service's suite.
Ours must not skip: a missing broker fails those tests with the command that fixes it.

The ejabberd cluster (tests/support/ejabberd.py) is started once per session (about 8 s) and
shared: ``ejabberd_cluster`` hands it to a test with every node running, starting again (in
parallel) any node an earlier test left dead, so tests that kill nodes need not clean up after
themselves. The RabbitMQ cluster (tests/support/rabbitmq.py, MQTT 3.1.1) is the same, once per
session (about 50 s: RabbitMQ boots slowly) and only when a test asks for ``rabbitmq_cluster``;
a test that kills two of its three nodes gets it replaced by a new one.

``TARS_TEST_LOOP=uvloop`` runs every async test and fixture on uvloop instead of the stock
asyncio loop (a loop factory handed to pytest-asyncio through its ``pytest_asyncio_loop_factories``
hook; overriding its ``event_loop_policy`` fixture is deprecated). ``make test`` runs the
contract suite and the core integration tests a second time so: a service under uvicorn runs
on uvloop, whose transports are not asyncio's classes (issue 20).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator, Mapping

import pytest

from support import rabbitmq
from support.ejabberd import INSTALL_HINT, EjabberdCluster, ejabberd_available
from support.rabbitmq import RabbitMQCluster
from tars.mqtt.testing._mosquitto import MosquittoBroker

_LOOP = os.environ.get("TARS_TEST_LOOP", "asyncio")
_LOOPS = ("asyncio", "uvloop")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an unknown loop, or uvloop missing: a run said to be on uvloop must be on it."""
    if _LOOP not in _LOOPS:
        raise pytest.UsageError(f"TARS_TEST_LOOP={_LOOP!r}: expected one of {', '.join(_LOOPS)}")
    if _LOOP == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise pytest.UsageError(
                "TARS_TEST_LOOP=uvloop but uvloop is not installed (pip install -e '.[dev]')"
            ) from None


if _LOOP == "uvloop":

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """pytest-asyncio: every async test (and its fixtures) on a new uvloop loop."""
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


_MOSQUITTO_FIXTURES = {"mosquitto_broker", "shared_mosquitto"}
_CLIENTS = ("mosquitto_pub", "mosquitto_sub")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, before the plugin's fixtures would skip, tests that need Mosquitto without it."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if "ejabberd_cluster" in fixtures and not ejabberd_available():
        pytest.fail(
            f"ejabberd not found: tars-core's tests need it ({INSTALL_HINT})", pytrace=False
        )
    if "rabbitmq_cluster" in fixtures and not rabbitmq.rabbitmq_available():
        pytest.fail(
            f"RabbitMQ not found: tars-core's tests need it ({rabbitmq.INSTALL_HINT})",
            pytrace=False,
        )
    if not (fixtures & _MOSQUITTO_FIXTURES or item.get_closest_marker("mosquitto")):
        return
    missing = [] if MosquittoBroker.available() else ["mosquitto"]
    missing += [name for name in _CLIENTS if shutil.which(name) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: tars-core's tests need them "
            "(apt-get install mosquitto mosquitto-clients)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def _ejabberd_session() -> Iterator[EjabberdCluster]:
    with EjabberdCluster(3) as cluster:
        yield cluster


@pytest.fixture
def ejabberd_cluster(_ejabberd_session: EjabberdCluster) -> EjabberdCluster:
    """A 3-node ejabberd cluster on 127.0.0.1, every node running (see the module docstring)."""
    _ejabberd_session.revive()
    return _ejabberd_session


class _RabbitMQHolder:
    """The session's RabbitMQ cluster, started on first use and replaced after a test that
    killed most of its nodes (RabbitMQ cannot be relied on to recover from that: see
    ``RabbitMQCluster.majority_lost``)."""

    def __init__(self) -> None:
        self.cluster: RabbitMQCluster | None = None

    def get(self) -> RabbitMQCluster:
        if self.cluster is not None and self.cluster.majority_lost:
            self.cluster.close()
            self.cluster = None
        if self.cluster is None:
            cluster = RabbitMQCluster(3)
            cluster.start()
            print(
                f"\nRabbitMQ cluster: 3 nodes booted in {cluster.start_seconds:.1f} s, "
                f"joined in {cluster.join_seconds:.1f} s"
            )
            self.cluster = cluster
        self.cluster.revive()
        return self.cluster

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()


@pytest.fixture(scope="session")
def _rabbitmq_session() -> Iterator[_RabbitMQHolder]:
    holder = _RabbitMQHolder()
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def rabbitmq_cluster(_rabbitmq_session: _RabbitMQHolder) -> RabbitMQCluster:
    """A 3-node RabbitMQ cluster on 127.0.0.1 (MQTT 3.1.1, TCP and WebSockets), every node
    running: a node an earlier test killed is started again first (a new cluster when an
    earlier test killed most of them)."""
    return _rabbitmq_session.get()
