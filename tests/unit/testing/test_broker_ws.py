"""The test broker's WebSocket listener (``serve_ws``): URL, path, restart, and refusals."""

from __future__ import annotations

import asyncio

import pytest

from tars.mqtt import ClientStateError, ConnectError, InvalidArgumentError, MQTTClient
from tars.mqtt.testing import InMemoryBroker


async def test_serve_ws_gives_a_ws_url_beside_the_tcp_one() -> None:
    async with InMemoryBroker() as broker:
        assert broker.ws_url is None
        port = await broker.serve_ws(path="/broker/mqtt")
        assert broker.ws_url == f"ws://127.0.0.1:{port}/broker/mqtt"
        assert broker.tcp_url is None  # a WebSocket listener is not a TCP one
        tcp = await broker.serve_tcp()
        assert broker.tcp_url == f"mqtt://127.0.0.1:{tcp}"


async def test_a_client_on_another_path_gets_404() -> None:
    async with InMemoryBroker() as broker:
        port = await broker.serve_ws()
        client = MQTTClient(f"ws://127.0.0.1:{port}/other", "lost", wait_for_broker=False)
        with pytest.raises(ConnectError) as info:
            await asyncio.wait_for(client.connect(), 10)
        assert info.value.http_status == 404
        await client.shutdown()


async def test_the_websocket_listener_comes_back_after_a_restart() -> None:
    async with InMemoryBroker() as broker:
        await broker.serve_ws()
        assert broker.ws_url is not None
        client = MQTTClient(
            broker.ws_url, "back", reconnect_min_delay=0.05, reconnect_max_delay=0.2
        )
        ups: asyncio.Queue[None] = asyncio.Queue()

        @client.on_connect
        async def up() -> None:
            ups.put_nowait(None)

        async with client:
            await asyncio.wait_for(ups.get(), 10)
            await broker.restart(downtime=0.2)
            await asyncio.wait_for(ups.get(), 10)
            assert broker.connected_clients == ["back"]


async def test_bad_arguments_and_states_are_refused() -> None:
    broker = InMemoryBroker()
    with pytest.raises(ClientStateError):
        await broker.serve_ws()
    async with broker:
        with pytest.raises(InvalidArgumentError):
            await broker.serve_ws(path="mqtt")
