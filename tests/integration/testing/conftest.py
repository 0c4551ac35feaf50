"""The broker's TCP run: the same raw peers, over a real socket to ``serve_tcp``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer


def tcp_port(broker: InMemoryBroker) -> int:
    assert broker.tcp_url is not None
    return int(broker.tcp_url.rsplit(":", 1)[1])


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    async with InMemoryBroker(name="test") as started:
        await started.serve_tcp()
        yield started


@pytest.fixture
async def open_peer() -> AsyncIterator[PeerOpener]:
    """``await open_peer(broker)``: a new TCP connection to the broker (served on demand)."""
    peers: list[RawPeer] = []

    async def open_(broker: InMemoryBroker) -> RawPeer:
        if broker.tcp_url is None:
            await broker.serve_tcp()
        peer = await RawPeer.over_tcp(tcp_port(broker))
        peers.append(peer)
        return peer

    yield open_
    for peer in peers:
        if peer.transport is not None:
            peer.transport.abort()
            await peer.expect_closed()
