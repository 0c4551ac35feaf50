"""Any conforming event loop, and no error swallowed in a protocol callback (issue 20).

Under uvloop the connection's ``connection_made`` once asserted that its transport was an
``asyncio.Transport`` (uvloop's ``TCPTransport`` is not a subclass): the assert failed inside the
callback, the event loop only logged it, and the user saw "no CONNACK within 10 s", retried for
ever. These tests use a real Mosquitto, links opened through a ``connector`` whose transport is
a plain object that only has the methods asyncio promises a protocol (no asyncio class at all),
and which can be told to fail the way a buggy transport or a platform surprise would. The
WebSocket layer under a ``ws://`` link has protocol callbacks of its own: websockets' parser is
made to fail once inside them, on Mosquitto's WebSocket listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop
from websockets.client import ClientProtocol

from support.monkey import fail_once
from support.mosquitto_cli import Inbox, mosquitto_pub, unique, wait_until
from tars.mqtt import ConnectError, Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


class Fault:
    """What the next link's transport does wrong (each fault fires once)."""

    def __init__(self) -> None:
        self.extra_info: Exception | None = None  # raised by get_extra_info()
        self.write: Exception | None = None  # raised by the next write()


class DuckTransport:
    """A stream transport by duck typing: asyncio's methods, none of asyncio's classes."""

    def __init__(self, inner: Any, fault: Fault) -> None:
        self._inner = inner
        self._fault = fault

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._fault.extra_info is not None:
            error, self._fault.extra_info = self._fault.extra_info, None
            raise error
        return self._inner.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        if self._fault.write is not None:
            error, self._fault.write = self._fault.write, None
            raise error
        self._inner.write(data)

    def __getattr__(self, name: str) -> Any:  # close, abort, is_closing, pause_reading...
        return getattr(self._inner, name)


class Relay(asyncio.Protocol):
    """Between the TCP transport and the client's protocol, handing it a :class:`DuckTransport`."""

    def __init__(self, protocol: asyncio.Protocol, fault: Fault) -> None:
        self._protocol = protocol
        self._fault = fault

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._protocol.connection_made(DuckTransport(transport, self._fault))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


def faulty_connector(
    broker: MosquittoBroker, fault: Fault
) -> Callable[[Callable[[], asyncio.Protocol]], Any]:
    async def connect(factory: Callable[[], asyncio.Protocol]) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        protocol = factory()
        return await loop.create_connection(
            lambda: Relay(protocol, fault), broker.host, broker.port
        )

    return connect


def errors_naming(caplog: pytest.LogCaptureFixture, callback: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and f"{callback} callback raised" in r.getMessage()
    ]


async def test_an_error_in_connection_made_fails_the_connect_at_once_naming_it(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fault = Fault()
    fault.extra_info = RuntimeError("no socket information here")
    client = MQTTClient(
        shared_mosquitto.url,
        unique("cb-made"),
        connector=faulty_connector(shared_mosquitto, fault),
        wait_for_broker=False,
        connect_timeout=10,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError) as info:
        await client.connect()
    # At once, not after connect_timeout (10 s) as a "no CONNACK".
    assert loop.time() - started < 5
    text = str(info.value)
    assert "connection_made" in text
    assert "no socket information here" in text
    assert "CONNACK" not in text
    assert isinstance(info.value.__cause__, RuntimeError)
    assert errors_naming(caplog, "connection_made")


async def test_the_connect_is_retried_after_a_failed_callback_and_succeeds(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The error fails one attempt like any other (logged); the next attempt gets a link."""
    caplog.set_level(logging.INFO, logger="tars.mqtt")
    fault = Fault()
    fault.extra_info = RuntimeError("first attempt only")
    client = MQTTClient(
        shared_mosquitto.url,
        unique("cb-retry"),
        connector=faulty_connector(shared_mosquitto, fault),
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.1,
    )
    async with asyncio.timeout(5):
        await client.connect()
    try:
        assert client.connected
        assert errors_naming(caplog, "connection_made")
        assert any("first attempt only" in r.getMessage() for r in caplog.records)
    finally:
        await client.shutdown()


def reconnected(client: MQTTClient) -> asyncio.Event:
    """Set once ``client`` has connected a second time (the link came back by itself)."""
    back = asyncio.Event()

    @client.on_connect
    async def _count() -> None:
        if client.stats.connects >= 2:
            back.set()

    return back


def lost_links(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The client's log lines saying a link was lost, and why."""
    return [r.getMessage() for r in caplog.records if "lost its link" in r.getMessage()]


async def test_an_error_in_data_received_drops_the_link_naming_it_and_the_client_comes_back(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The PUBACK written inside ``data_received`` fails: the link is dropped with an error
    that says so (not left half-alive), and the client reconnects by itself."""
    fault = Fault()
    topic = unique("cb/data")
    client = MQTTClient(
        shared_mosquitto.url,
        unique("cb-data"),
        connector=faulty_connector(shared_mosquitto, fault),
        acknowledge="on_arrival",  # the PUBACK goes out from data_received itself
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.1,
    )
    inbox: Inbox[str] = Inbox()
    back = reconnected(client)

    async def handler(msg: Message) -> None:
        inbox.add(msg.topic)

    await client.subscribe(topic, handler, qos=1)
    await client.connect()
    try:
        fault.write = RuntimeError("socket buffer exploded")
        await mosquitto_pub(shared_mosquitto, topic, b"x", qos=1)
        async with asyncio.timeout(5):
            await back.wait()
        assert errors_naming(caplog, "data_received")
        lost = lost_links(caplog)
        assert any("data_received" in line and "socket buffer exploded" in line for line in lost)
        # The new link works: a message published now arrives.
        await mosquitto_pub(shared_mosquitto, topic, b"y", qos=1)
        await inbox.wait_for(1)
    finally:
        await client.shutdown()


# --- the WebSocket layer (ws://) -----------------------------------------------------------


@pytest.fixture(scope="module")
def ws_mosquitto() -> Iterator[MosquittoBroker]:
    """A Mosquitto with a WebSocket listener (``ws_url``)."""
    broker = MosquittoBroker(persistence=False, websockets=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("callback", "method"),
    [("connection_made", "send_request"), ("data_received", "receive_data")],
)
async def test_an_error_in_the_websocket_upgrade_fails_the_connect_at_once_naming_it(
    ws_mosquitto: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    callback: str,
    method: str,
) -> None:
    """The upgrade request is sent from the WebSocket link's ``connection_made`` and its
    answer read in ``data_received``: an error in either fails the connect at once, naming it
    (in ``connection_made`` it used to leave the connect waiting for ``connect_timeout``)."""
    assert ws_mosquitto.ws_url is not None
    fail_once(monkeypatch, ClientProtocol, method, RuntimeError("websockets exploded"))
    client = MQTTClient(
        ws_mosquitto.ws_url, unique("ws-upgrade"), wait_for_broker=False, connect_timeout=10
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError) as info:
        await client.connect()
    assert loop.time() - started < 5
    text = str(info.value)
    assert f"WebSocket link's {callback} callback raised" in text
    assert "websockets exploded" in text
    assert "CONNACK" not in text
    assert isinstance(info.value.__cause__, RuntimeError)
    assert errors_naming(caplog, callback)
    await client.shutdown()
    # The next attempt gets a link: nothing was left broken.
    async with MQTTClient(ws_mosquitto.ws_url, unique("ws-after"), wait_for_broker=False) as c:
        assert c.connected


async def test_an_error_in_a_websocket_link_drops_it_naming_it_and_the_client_comes_back(
    ws_mosquitto: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once MQTT flows, a failure in the WebSocket layer's ``data_received`` ends the link
    with an error that names it (not a link left half-alive), and the client reconnects."""
    assert ws_mosquitto.ws_url is not None
    topic = unique("cb/ws")
    client = MQTTClient(
        ws_mosquitto.ws_url,
        unique("cb-ws"),
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.1,
    )
    inbox: Inbox[bytes] = Inbox()
    back = reconnected(client)

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    await client.subscribe(topic, handler, qos=1)
    await client.connect()
    try:
        fail_once(monkeypatch, ClientProtocol, "receive_data", RuntimeError("frame soup"))
        await mosquitto_pub(ws_mosquitto, topic, b"lost with the link", qos=1)
        async with asyncio.timeout(5):
            await back.wait()
        assert errors_naming(caplog, "data_received")
        lost = lost_links(caplog)
        assert any("data_received" in line and "frame soup" in line for line in lost), lost
        await mosquitto_pub(ws_mosquitto, topic, b"after", qos=1)
        await wait_until(lambda: b"after" in inbox.items)
    finally:
        await client.shutdown()


def test_the_client_connects_publishes_and_receives_on_uvloop(
    shared_mosquitto: MosquittoBroker,
) -> None:
    """On uvloop whatever TARS_TEST_LOOP says (the second pass of ``make test`` runs the
    contract suite and the integration tests on it too)."""

    async def round_trip() -> tuple[str, bytes]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        topic = unique("uvloop/echo")
        got: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def handler(msg: Message) -> None:
            if not got.done():
                got.set_result(msg)

        async with MQTTClient(shared_mosquitto.url, unique("uv"), wait_for_broker=False) as c:
            await c.subscribe(topic, handler, qos=1)
            await c.publish(topic, b"on uvloop", qos=1)
            async with asyncio.timeout(5):
                msg = await got
        return msg.topic, msg.payload

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        topic, payload = runner.run(round_trip())
    assert topic.startswith("uvloop/echo")
    assert payload == b"on uvloop"
