"""InMemoryBroker over TCP: the transport-agnostic suites again, plus what only TCP shows.

The imported tests are the unit suites: this directory's conftest.py makes ``broker`` serve TCP
and ``open_peer`` open real sockets, so every semantic is checked over both transports.
"""

from __future__ import annotations

import mqtt5
import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer, connected
from unit.testing.test_broker_connect import *  # noqa: F403
from unit.testing.test_broker_faults import *  # noqa: F403
from unit.testing.test_broker_publish import *  # noqa: F403
from unit.testing.test_broker_sessions import *  # noqa: F403
from unit.testing.test_broker_subscribe import *  # noqa: F403


async def test_tcp_and_memory_clients_share_one_broker() -> None:
    async with InMemoryBroker() as broker:
        port = await broker.serve_tcp()
        over_memory = await RawPeer.over_memory(broker)
        await over_memory.connect("memory")
        await over_memory.subscribe("mixed/#", qos=1)
        over_tcp = await RawPeer.over_tcp(port)
        await over_tcp.connect("tcp")
        await over_tcp.publish("mixed/1", b"across", qos=1)
        assert (await over_memory.receive_publish()).payload == b"across"
        assert sorted(broker.connected_clients) == ["memory", "tcp"]
        await over_memory.disconnect()
        await over_tcp.disconnect()


async def test_serve_tcp_on_a_taken_port_raises(broker: InMemoryBroker) -> None:
    port = int((broker.tcp_url or "").rsplit(":", 1)[1])
    with pytest.raises(OSError, match="address already in use"):
        await broker.serve_tcp(port=port)


async def test_listener_stays_usable_after_restart_with_downtime(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    port_before = broker.tcp_url
    await broker.restart(downtime=0.05)
    assert broker.tcp_url == port_before
    peer = await connected(open_peer, broker, "after")
    pubrec = await peer.publish("t", b"x", qos=1)
    assert isinstance(pubrec, mqtt5.PubAckPacket)
