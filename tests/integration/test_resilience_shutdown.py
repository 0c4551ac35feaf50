"""Fault tests: ``shutdown()`` in every state of the client (issue 4, test 7).

Connecting (sleeping between refused attempts, or waiting for a CONNACK that never comes),
connected, reconnecting (same two cases) and closed: ``shutdown()`` returns promptly, raises
nothing, and leaves no task behind. A ``connector`` that reports each connection attempt lets
the tests act at the right moment without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ClientState, ClientStateError, ExponentialBackoff, MQTTClient
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = pytest.mark.mosquitto

PROMPT = 1.0  # seconds; shutdown()'s own bound is its timeout argument, 5 s by default


class Attempts:
    """A ``connector`` that opens plain TCP to ``host:port`` and records every attempt."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.started: Inbox[None] = Inbox()

    async def __call__(self, protocol_factory: Callable[[], asyncio.Protocol]) -> tuple[Any, Any]:
        self.started.add(None)
        loop = asyncio.get_running_loop()
        return await loop.create_connection(protocol_factory, self.host, self.port)


class SlowBackoff:
    """A long, fixed pause between attempts (so the test acts during it), recording calls."""

    def __init__(self) -> None:
        self.asked: Inbox[bool] = Inbox()

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        self.asked.add(refused)
        return 30.0


def leftover_tasks() -> set[str]:
    """Tasks still alive besides this test's own, and the proxy's (its connect tasks, and the
    event loop's accept task of its listening server)."""
    me = asyncio.current_task()
    return {
        t.get_name()
        for t in asyncio.all_tasks()
        if t is not me
        and not t.get_name().startswith("tars-tcp-proxy")
        and not getattr(t.get_coro(), "__qualname__", "").endswith("._accept_connection2")
    }


async def shut_down(client: MQTTClient, connecting: asyncio.Task[None] | None = None) -> None:
    """Shut down and check: prompt, no exception, closed, nothing left running."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.shutdown()
    took = loop.time() - started
    assert took < PROMPT, f"shutdown() took {took:.2f} s"
    assert client.state is ClientState.CLOSED
    if connecting is not None:
        with pytest.raises(ClientStateError):
            await connecting  # connect() learns the client was shut down under it
    assert leftover_tasks() == set()


async def test_shutdown_while_sleeping_between_refused_attempts(
    mosquitto_broker: MosquittoBroker,
) -> None:
    await mosquitto_broker.astop()
    policy = SlowBackoff()
    client = MQTTClient(mosquitto_broker.url, unique("sd-sleep"), backoff=policy)
    connecting = asyncio.create_task(client.connect())
    assert await policy.asked.wait_for(1) == [True]
    assert client.state is ClientState.CONNECTING
    await shut_down(client, connecting)


async def test_shutdown_while_waiting_for_a_connack(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await make_tcp_proxy(mosquitto_broker.host, mosquitto_broker.port)
    proxy.blackhole()  # accepts the TCP connection, never answers the CONNECT
    attempts = Attempts(proxy.host, proxy.port)
    client = MQTTClient(proxy.url, unique("sd-connack"), connector=attempts, connect_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await attempts.started.wait_for(1)
    await shut_down(client, connecting)


async def test_shutdown_while_connected(mosquitto_broker: MosquittoBroker) -> None:
    client = MQTTClient(mosquitto_broker.url, unique("sd-up"), enable_heartbeat=True)

    async def handler(payload: bytes) -> None:
        pass

    await client.subscribe(unique("resilience/sd"), handler)
    await client.connect()
    await shut_down(client)


async def test_shutdown_while_sleeping_before_a_reconnect(
    mosquitto_broker: MosquittoBroker,
) -> None:
    policy = SlowBackoff()
    client = MQTTClient(mosquitto_broker.url, unique("sd-resleep"), backoff=policy)
    await client.connect()
    await mosquitto_broker.akill()
    assert await policy.asked.wait_for(1) == [False]  # asked right after the loss
    assert client.state is ClientState.RECONNECTING
    await shut_down(client)


async def test_shutdown_while_a_reconnect_waits_for_its_connack(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await make_tcp_proxy(mosquitto_broker.host, mosquitto_broker.port)
    attempts = Attempts(proxy.host, proxy.port)
    client = MQTTClient(
        proxy.url,
        unique("sd-reconnack"),
        connector=attempts,
        connect_timeout=30,
        backoff=ExponentialBackoff(min_delay=0.05, max_delay=0.1),
    )
    await client.connect()
    proxy.blackhole()
    await proxy.drop_connections()
    await attempts.started.wait_for(2)
    assert client.state is ClientState.RECONNECTING
    await shut_down(client)


async def test_shutdown_when_closed_or_never_connected(mosquitto_broker: MosquittoBroker) -> None:
    never = MQTTClient(mosquitto_broker.url, unique("sd-never"))
    await never.shutdown()
    assert never.state is ClientState.CREATED
    client = MQTTClient(mosquitto_broker.url, unique("sd-twice"))
    await client.connect()
    await shut_down(client)
    await shut_down(client)  # idempotent
    # Closed is not final: the client can connect again, and shut down again.
    await client.connect()
    assert client.connected
    await shut_down(client)
