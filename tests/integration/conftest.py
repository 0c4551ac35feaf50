"""The ``broker`` fixture of the client's integration files (see :mod:`support.brokers`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support.brokers import Broker
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker


@pytest.fixture
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """The in-memory broker, or the session's Mosquitto where a test is parametrized with
    ``support.brokers.BOTH`` (``indirect=True``)."""
    kind = getattr(request, "param", "memory")
    if kind == "mosquitto":
        shared: MosquittoBroker = request.getfixturevalue("shared_mosquitto")
        under_test = Broker("mosquitto", mosquitto=shared)
        try:
            yield under_test
        finally:
            await under_test.close()
        return
    async with InMemoryBroker(name="integration") as memory:
        under_test = Broker("memory", memory=memory)
        try:
            yield under_test
        finally:
            await under_test.close()
