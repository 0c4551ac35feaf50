"""Fixtures of the in-memory broker's tests: a broker, and raw peers over the memory transport.

``open_peer`` is the one thing the TCP run overrides (tests/integration/testing/conftest.py),
so the same semantic tests check the broker over both transports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    async with InMemoryBroker(name="test") as started:
        yield started


@pytest.fixture
async def open_peer() -> AsyncIterator[PeerOpener]:
    """``await open_peer(broker)``: a new raw connection; every one is aborted afterwards."""
    peers: list[RawPeer] = []

    async def open_(broker: InMemoryBroker) -> RawPeer:
        peer = await RawPeer.over_memory(broker)
        peers.append(peer)
        return peer

    yield open_
    for peer in peers:
        if peer.transport is not None:
            peer.transport.abort()
            await peer.expect_closed()
