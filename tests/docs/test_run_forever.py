"""``MQTTClient.run_forever()``: the last line of a service's ``main()``.

It exists so the 10-line service of the README can handle SIGINT/SIGTERM without five lines of
signal plumbing; these tests hold it to what the docs promise: it connects, it ends on a signal
(or when the client is shut down elsewhere, or when cancelled), it always shuts the client down
gracefully (health ``shutdown`` on the wire), and it puts the process's signal handlers back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable

import pytest

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import ClientState, ConnectError, Envelope, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling the loop, not the clock) until ``condition()`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_shuts_down_gracefully_and_restores_the_handler(
    shared_mosquitto: MosquittoBroker, signum: signal.Signals
) -> None:
    client_id = unique("forever")
    async with connected_client(shared_mosquitto, "observer") as observer:
        seen: Inbox[str] = Inbox()

        async def on_health(status: Envelope) -> None:
            seen.add(str(status.data["event"]))

        await observer.subscribe(f"system/health/{client_id}", on_health, qos=1)
        before = signal.getsignal(signum)
        client = MQTTClient(shared_mosquitto.url, client_id, enable_health=True)
        task = asyncio.create_task(client.run_forever())
        await wait_until(lambda: signal.getsignal(signum) is not before)
        await wait_until(lambda: client.connected)  # the handlers go in before it connects
        assert await seen.wait_for(1) == ["ready"]

        os.kill(os.getpid(), signum)
        await asyncio.wait_for(task, 5)

        assert client.state is ClientState.CLOSED
        assert await seen.wait_for(2) == ["ready", "shutdown"]
        assert signal.getsignal(signum) is before


async def test_it_returns_when_the_client_is_shut_down_elsewhere(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("forever"))
    before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(client.run_forever())
    await wait_until(lambda: client.connected)
    await client.shutdown()
    await asyncio.wait_for(task, 5)
    assert task.result() is None
    assert signal.getsignal(signal.SIGTERM) is before


async def test_cancelling_it_still_shuts_the_client_down(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("forever"))
    before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(client.run_forever())
    await wait_until(lambda: signal.getsignal(signal.SIGTERM) is not before)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert client.state is ClientState.CLOSED
    assert signal.getsignal(signal.SIGTERM) is before


async def test_it_uses_an_existing_connection_and_the_signals_given(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("forever"))
    await client.connect()
    term_before = signal.getsignal(signal.SIGTERM)
    usr_before = signal.getsignal(signal.SIGUSR1)
    task = asyncio.create_task(client.run_forever(signals=[signal.SIGUSR1]))
    await wait_until(lambda: signal.getsignal(signal.SIGUSR1) is not usr_before)
    assert signal.getsignal(signal.SIGTERM) is term_before  # only the signals asked for
    assert client.stats.connects == 1  # no second connection
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(task, 5)
    assert client.state is ClientState.CLOSED
    assert signal.getsignal(signal.SIGUSR1) is usr_before


async def test_a_signal_while_still_connecting_ends_it_cleanly() -> None:
    """The handlers are in place before connecting: a service told to stop while the broker is
    still unreachable stops gracefully instead of dying of the signal's default action."""
    client = MQTTClient(
        f"mqtt://127.0.0.1:{free_port()}", unique("forever"), reconnect_min_delay=0.1
    )
    before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(client.run_forever())
    await wait_until(lambda: signal.getsignal(signal.SIGTERM) is not before)
    assert not client.connected  # still trying to reach the broker
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert client.state is ClientState.CLOSED
    assert signal.getsignal(signal.SIGTERM) is before


def free_port() -> int:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port: int = placeholder.getsockname()[1]
        return port


async def test_it_raises_what_connect_raises_and_restores_the_handlers() -> None:
    client = MQTTClient(f"mqtt://127.0.0.1:{free_port()}", unique("forever"), wait_for_broker=False)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ConnectError):
        await asyncio.wait_for(client.run_forever(), 5)
    assert client.state is ClientState.CLOSED
    assert signal.getsignal(signal.SIGTERM) is before


async def test_cancelling_it_while_connecting_closes_the_client() -> None:
    client = MQTTClient(f"mqtt://127.0.0.1:{free_port()}", unique("forever"))
    before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(client.run_forever())
    await wait_until(lambda: client.state is ClientState.CONNECTING)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert client.state is ClientState.CLOSED
    assert signal.getsignal(signal.SIGTERM) is before
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("tars-mqtt")]
