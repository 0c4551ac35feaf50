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
from typing import Any, Literal, Protocol

import pytest

from support.mosquitto_cli import Captured, Inbox, MosquittoSub, mosquitto_pub, unique
from tars.mqtt import Message, MQTTClient
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker

__all__ = ["BOTH", "Broker", "Watcher"]

Kind = Literal["memory", "mosquitto"]

# For ``@pytest.mark.parametrize("broker", BOTH, indirect=True)``: the test runs on both.
BOTH = ["memory", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


class Watcher(Protocol):
    """An independent subscriber's view: what it received, as ``mosquitto_sub`` prints it."""

    messages: Inbox[Captured]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]: ...


class _PeerWatcher:
    """On the in-memory broker: a client of its own, subscribed to ``topics``."""

    def __init__(self, client: MQTTClient) -> None:
        self.messages: Inbox[Captured] = Inbox()
        self._client = client

    async def keep(self, msg: Message) -> None:
        self.messages.add(Captured(msg.topic, msg.qos, msg.retain, msg.payload, ""))

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]:
        return await self.messages.wait_for(count, timeout)


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

    @asynccontextmanager
    async def watch(
        self, *topics: str, qos: int = 0, count: int | None = None
    ) -> AsyncIterator[Watcher]:
        """An independent subscriber to ``topics`` (``mosquitto_sub`` on Mosquitto, which stops
        after ``count`` messages), subscribed when this returns."""
        if self.mosquitto is not None:
            async with MosquittoSub(self.mosquitto, *topics, qos=qos, count=count) as sub:
                yield sub
            return
        client = self.client(unique("watch"))
        watcher = _PeerWatcher(client)
        await client.connect()
        try:
            for topic in topics:
                await client.subscribe(topic, watcher.keep, qos=qos)
            yield watcher
        finally:
            await client.shutdown()

    async def close(self) -> None:
        """Shut down every client made here (those the test left running)."""
        for client in reversed(self._clients):
            await client.shutdown()
