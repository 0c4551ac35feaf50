"""``ws://`` and ``wss://`` clients on real listeners: Mosquitto's WebSocket listener (TLS with
the throwaway CA of the TLS tests) and the test broker's, failover between WebSocket and TCP
URLs, and a WebSocket URL pointed at a plain MQTT port."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import mqtt5
import pytest
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from support.mosquitto_cli import Inbox, unique
from support.tls import make_certs
from tars.mqtt import ConnectError, MQTTClient
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    return make_certs(tmp_path_factory.mktemp("wss"))


@pytest.fixture(scope="module")
def wss_mosquitto(certs: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto whose WebSocket listener speaks TLS (the TLS lines follow that listener)."""
    broker = MosquittoBroker(
        persistence=False,
        websockets=True,
        extra_config=(
            f"cafile {certs / 'ca.pem'}\n"
            f"certfile {certs / 'server.pem'}\n"
            f"keyfile {certs / 'server.key'}\n"
        ),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
async def wss_broker(certs: Path) -> AsyncIterator[InMemoryBroker]:
    """The test broker with a ``wss://`` listener signed by the throwaway CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    async with InMemoryBroker(name="wss") as broker:
        await broker.serve_ws(ssl_context=context)
        yield broker


async def roundtrip(client: MQTTClient) -> bytes:
    got: Inbox[bytes] = Inbox()

    async def on_msg(payload: bytes) -> None:
        got.add(payload)

    topic = unique("ws/t")
    await client.subscribe(topic, on_msg, qos=1)
    await client.publish(topic, b"over websockets", qos=1)
    [payload] = await got.wait_for(1)
    return payload


def wss_url(port: int | None) -> str:
    return f"wss://127.0.0.1:{port}/mqtt"


@pytest.mark.mosquitto
async def test_wss_to_mosquitto_verifies_the_broker_and_works(
    wss_mosquitto: MosquittoBroker, certs: Path
) -> None:
    url = wss_url(wss_mosquitto.ws_port)
    async with MQTTClient(url, unique("wss"), tls_ca_file=str(certs / "ca.pem")) as client:
        assert client.connected
        assert client.broker == url
        assert await roundtrip(client) == b"over websockets"


@pytest.mark.mosquitto
async def test_wss_refuses_a_broker_it_cannot_verify_at_once(
    wss_mosquitto: MosquittoBroker,
) -> None:
    # wait_for_broker is on: only a final (fatal) error ends connect() quickly.
    client = MQTTClient(wss_url(wss_mosquitto.ws_port), unique("wss-untrusted"))
    with pytest.raises(ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify") as e:
        await asyncio.wait_for(client.connect(), timeout=10)
    assert e.value.fatal
    await client.shutdown()


@pytest.mark.mosquitto
async def test_wss_insecure_skips_verification(wss_mosquitto: MosquittoBroker) -> None:
    url = wss_url(wss_mosquitto.ws_port)
    async with MQTTClient(url, unique("wss-insecure"), tls_insecure=True) as client:
        assert await roundtrip(client) == b"over websockets"


async def test_wss_to_the_test_broker(wss_broker: InMemoryBroker, certs: Path) -> None:
    url = wss_broker.ws_url
    assert url is not None
    assert url.startswith("wss://")
    async with MQTTClient(url, unique("wss-kit"), tls_ca_file=str(certs / "ca.pem")) as client:
        assert await roundtrip(client) == b"over websockets"


async def test_failover_between_a_websocket_and_a_tcp_broker() -> None:
    """One list, two transports: the client on the first broker's WebSocket listener moves to
    the second broker's TCP listener when the first goes away, with its subscription."""
    async with InMemoryBroker(name="first") as first, InMemoryBroker(name="second") as second:
        await first.serve_ws()
        await second.serve_tcp()
        urls = f"{first.ws_url},{second.tcp_url}"
        client = MQTTClient(
            urls, unique("ws-failover"), reconnect_min_delay=0.05, reconnect_max_delay=0.2
        )
        brokers: Inbox[str] = Inbox()

        @client.on_connect
        async def up() -> None:
            brokers.add(client.broker)

        async with client:
            [on_first] = await brokers.wait_for(1)
            assert on_first.startswith("ws://")
            await first.close()
            [_, on_second] = await brokers.wait_for(2, timeout=10)
            assert on_second.startswith("mqtt://")
            assert await roundtrip(client) == b"over websockets"


async def test_a_websocket_url_on_a_plain_mqtt_port_fails_without_hanging() -> None:
    async with InMemoryBroker() as broker:
        port = await broker.serve_tcp()
        client = MQTTClient(
            f"ws://127.0.0.1:{port}/mqtt",
            unique("ws-to-tcp"),
            wait_for_broker=False,
            connect_timeout=3,
        )
        with pytest.raises(ConnectError) as info:
            await asyncio.wait_for(client.connect(), timeout=10)
        assert "WebSocket" in str(info.value)
        await client.shutdown()


class _ScriptedBroker(asyncio.Protocol):
    """A WebSocket MQTT peer that records the upgrade request and answers CONNECT with
    ``connack`` (websockets' server protocol and the mqtt5 codec, no broker)."""

    def __init__(self, requests: list[Request], connack: mqtt5.ConnAckPacket) -> None:
        self.ws = ServerProtocol(subprotocols=["mqtt"])
        self.requests = requests
        self.connack = connack
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # What asyncio promises a protocol, not a class check: uvloop's transports are no
        # asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.requests.append(event)
                self.ws.send_response(self.ws.accept(event))
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                packet, _ = mqtt5.read(memoryview(event.data))
                if isinstance(packet, mqtt5.ConnectPacket):
                    self.ws.send_binary(self.connack.write())
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()


async def test_ws_headers_go_only_to_the_brokers_listed() -> None:
    """A server redirection to a broker not in ``mqtt_url``, followed because the user said so
    (``redirects="any"``; the default follows only listed brokers), gets no extra headers (a
    token) all the same."""
    loop = asyncio.get_running_loop()
    listed: list[Request] = []
    elsewhere: list[Request] = []
    target = await loop.create_server(
        lambda: _ScriptedBroker(elsewhere, mqtt5.ConnAckPacket()), "127.0.0.1", 0
    )
    target_port = target.sockets[0].getsockname()[1]
    redirect = mqtt5.ConnAckPacket(
        reason_code=mqtt5.ConnAckReasonCode.USE_ANOTHER_SERVER,
        server_reference=f"127.0.0.1:{target_port}",
    )
    first = await loop.create_server(lambda: _ScriptedBroker(listed, redirect), "127.0.0.1", 0)
    first_port = first.sockets[0].getsockname()[1]
    client = MQTTClient(
        f"ws://127.0.0.1:{first_port}/mqtt",
        unique("ws-token"),
        wait_for_broker=False,
        ws_headers={"Authorization": "Bearer S3cr3t"},
        redirects="any",
    )
    try:
        await asyncio.wait_for(client.connect(), timeout=10)
        assert client.broker == f"ws://127.0.0.1:{target_port}/mqtt"
        assert listed[0].headers["Authorization"] == "Bearer S3cr3t"
        assert elsewhere[0].path == "/mqtt"  # the transport and the path were kept
        assert "Authorization" not in elsewhere[0].headers
    finally:
        await client.shutdown()
        for server in (first, target):
            server.close()
            await server.wait_closed()
