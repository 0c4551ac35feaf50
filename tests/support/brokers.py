"""One broker under test for the client's integration files, in memory by default.

The ``broker`` fixture (``tests/integration/conftest.py``) hands a test a :class:`Broker`: the
testing kit's :class:`~tars.mqtt.testing.InMemoryBroker` (no socket, no process: fast), or,
for the tests of a file parametrized to run there too, the session's real Mosquitto. A test
reaches either the same way: clients from :meth:`Broker.client` /
:meth:`Broker.connected_client`, and messages from an independent peer with
:meth:`Broker.publish` (``mosquitto_pub`` on Mosquitto; on the in-memory broker a plain client
of its own, not the client under test). Each file keeps one test on both brokers, in the
contract suite's style (``tests/contract/``): the in-memory broker is checked against the real
one where the file's subject meets the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest

from support.mosquitto_cli import mosquitto_pub, unique
from tars.mqtt import MQTTClient
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker

__all__ = ["BOTH", "Broker"]

Kind = Literal["memory", "mosquitto"]

# For ``@pytest.mark.parametrize("broker", BOTH, indirect=True)``: the test runs on both.
BOTH = ["memory", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


class Broker:
    """The broker of one test and how its clients reach it (see the module docstring)."""

    def __init__(
        self,
        kind: Kind,
        *,
        memory: InMemoryBroker | None = None,
        mosquitto: MosquittoBroker | None = None,
    ) -> None:
        self.kind = kind
        self.memory = memory
        self.mosquitto = mosquitto
        self._clients: list[MQTTClient] = []
        self._peer: MQTTClient | None = None

    def client(self, client_id: str, **options: Any) -> MQTTClient:
        """An unconnected client of this broker (shut down after the test if still running)."""
        if self.memory is not None:
            client = MQTTClient(
                self.memory.url, client_id, connector=self.memory.connector, **options
            )
        else:
            assert self.mosquitto is not None
            client = MQTTClient(self.mosquitto.url, client_id, **options)
        self._clients.append(client)
        return client

    @asynccontextmanager
    async def connected_client(
        self, prefix: str = "client", **options: Any
    ) -> AsyncIterator[MQTTClient]:
        """A connected client with a fresh client id, shut down afterwards."""
        client = self.client(unique(prefix), **options)
        await client.connect()
        try:
            yield client
        finally:
            await client.shutdown()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> None:
        """Publish from a peer that is not the client under test; returns once the broker has
        it (QoS 1/2 acknowledged)."""
        if self.mosquitto is not None:
            await mosquitto_pub(self.mosquitto, topic, payload, qos=qos, retain=retain)
            return
        if self._peer is None:
            self._peer = self.client(unique("peer"))
            await self._peer.connect()
        await self._peer.publish(topic, payload, qos=qos, retain=retain)

    async def close(self) -> None:
        """Shut down every client made here (those the test left running)."""
        for client in reversed(self._clients):
            await client.shutdown()
