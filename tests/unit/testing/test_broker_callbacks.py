"""The test broker's protocol callbacks never swallow an error (issue 20).

An exception inside a link's callback (a bug of the broker's, a user's ``auth`` callback that
raises) used to go to the event loop's exception handler and leave that link stuck: its client
waited for a CONNACK or an acknowledgement until its own timeout, with nothing said on the
broker's side. Now the broker logs it, naming the callback and the exception, and drops that
link at once; the client reconnects, and every other link goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import mqtt5
import pytest
from websockets.server import ServerProtocol

from support.monkey import fail_once
from tars.mqtt import ConnectError, MQTTClient
from tars.mqtt.testing import InMemoryBroker
from tars.mqtt.testing._broker_core import BrokerCore
from tars.mqtt.testing._broker_ws import ServerLink
from unit.testing.raw_peer import PeerOpener, RawPeer


def errors_naming(caplog: pytest.LogCaptureFixture, callback: str, what: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
        and f"{callback} callback raised" in r.getMessage()
        and what in r.getMessage()
    ]


async def test_an_auth_callback_that_raises_drops_only_that_link_and_says_why(
    open_peer: PeerOpener, caplog: pytest.LogCaptureFixture
) -> None:
    failures = [RuntimeError("auth backend down")]

    def auth(client_id: str, username: str | None, password: bytes | None) -> bool:
        if client_id == "unlucky" and failures:
            raise failures.pop()
        return True

    async with InMemoryBroker(auth=auth) as broker:
        bystander = await open_peer(broker)
        await bystander.connect("bystander")
        peer = await open_peer(broker)
        peer.send(mqtt5.ConnectPacket("unlucky", clean_start=True))
        await peer.expect_closed()  # at once, not after the client's connect timeout
        assert peer.pending() == []  # no CONNACK: dropped, as a crash would
        assert errors_naming(caplog, "data_received", "auth backend down")
        again = await open_peer(broker)
        connack = await again.connect("unlucky")
        assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        await bystander.ping()  # the other link never noticed
        assert broker.connected_clients == ["bystander", "unlucky"]


async def test_an_error_when_a_link_opens_drops_it_instead_of_leaving_it_untracked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A link whose ``connection_made`` failed used to stay open, unknown to the broker (no
    CONNECT deadline, never closed with the broker)."""
    async with InMemoryBroker() as broker:
        port = await broker.serve_tcp()
        fail_once(monkeypatch, BrokerCore, "link_opened", RuntimeError("bookkeeping bug"))
        peer = await RawPeer.over_tcp(port)
        await peer.expect_closed()
        assert errors_naming(caplog, "connection_made", "bookkeeping bug")
        again = await RawPeer.over_tcp(port)
        assert (await again.connect("next")).reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        again.abort()


async def test_a_client_whose_link_the_broker_dropped_on_a_bug_comes_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A PUBLISH the broker fails on (once) costs its link, not the publish: the client
    reconnects, sends it again, and it is delivered once."""
    async with InMemoryBroker() as broker:
        watcher = await RawPeer.over_memory(broker)
        await watcher.connect("watcher")
        await watcher.subscribe("bug/t", qos=1)
        client = MQTTClient(
            broker.url,
            "publisher",
            connector=broker.connector,
            reconnect_min_delay=0.05,
            reconnect_max_delay=0.1,
        )
        async with client:
            fail_once(monkeypatch, BrokerCore, "_on_publish", RuntimeError("router bug"))
            async with asyncio.timeout(5):
                await client.publish("bug/t", b"x", qos=1)
            assert client.stats.connects == 2
        assert errors_naming(caplog, "data_received", "router bug")
        delivered = await watcher.receive_publish()
        assert delivered.payload == b"x"
        watcher.abort()


async def test_an_error_in_the_brokers_websocket_layer_fails_the_upgrade_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with InMemoryBroker() as broker:
        await broker.serve_ws()
        assert broker.ws_url is not None
        fail_once(monkeypatch, ServerProtocol, "receive_data", RuntimeError("parser bug"))
        client = MQTTClient(broker.ws_url, "ws-unlucky", wait_for_broker=False, connect_timeout=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectError):
            await client.connect()
        assert loop.time() - started < 5
        await client.shutdown()
        assert errors_naming(caplog, "WebSocket link's data_received", "parser bug")
        async with MQTTClient(broker.ws_url, "ws-after", wait_for_broker=False) as after:
            assert after.connected


class NoPeerInfo:
    """A transport whose ``get_extra_info`` raises (a socket gone bad); the rest works."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        raise OSError("the socket is gone")

    def __getattr__(self, name: str) -> Any:  # write, close, abort, is_closing...
        return getattr(self._inner, name)


async def test_a_websocket_link_whose_transport_fails_is_named_and_dropped_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed callback was reported with the transport's peername, read at that moment: when
    the transport was what failed, the report raised in its turn, into the loop's handler;
    the failure went unnamed and the link stayed open for its client to find out later."""
    opened = ServerLink.connection_made
    faulty = [True]  # the first link's transport only

    def connection_made(self: ServerLink, transport: Any) -> None:
        opened(self, NoPeerInfo(transport) if faulty and faulty.pop() else transport)

    monkeypatch.setattr(ServerLink, "connection_made", connection_made)
    fail_once(monkeypatch, ServerLink, "_start", RuntimeError("upgrade bug"))
    async with InMemoryBroker() as broker:
        await broker.serve_ws()
        assert broker.ws_url is not None
        client = MQTTClient(broker.ws_url, "ws-no-peer", wait_for_broker=False, connect_timeout=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectError):
            await client.connect()
        assert loop.time() - started < 5
        await client.shutdown()
        [line] = errors_naming(caplog, "WebSocket link's connection_made", "upgrade bug")
        assert line.startswith("the WebSocket peer: ")  # no peername: still named, said once
        assert not [r for r in caplog.records if r.name == "asyncio"]  # nothing escaped
        async with MQTTClient(broker.ws_url, "ws-after", wait_for_broker=False) as after:
            assert after.connected
