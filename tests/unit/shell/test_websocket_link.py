"""The WebSocket link (``_asyncio/websocket.py``) against a scripted peer on a real socket.

The peer is websockets' own sans-I/O server protocol behind a plain asyncio server, driven by
the test: it answers the upgrade with the status the test asks for, records every frame the
client sends, and sends the frames the test writes (fragments, several packets in one frame,
pings, text, close codes). The client side is the library's: ``websocket_connector`` and, where
the session matters, ``open_connection`` with a real :class:`Session`.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import cast

import mqtt5
import pytest
from mqtt5 import ConnAckPacket, ConnectPacket, PublishPacket
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from tars.mqtt import ConnectError, ConnectionLostError
from tars.mqtt._asyncio.connection import open_connection
from tars.mqtt._asyncio.websocket import websocket_connector
from tars.mqtt._core.session import Session
from tars.mqtt._url import parse_mqtt_url

SECRET = "S3cr3tT0ken"


class Peer(asyncio.Protocol):
    """The far end of one WebSocket link, scripted by the test."""

    def __init__(self, status: int) -> None:
        # Its own logger: what the test's peer logs is not the library's to keep secret.
        self.ws = ServerProtocol(subprotocols=["mqtt"], logger=logging.getLogger("test.peer"))
        self.status = status
        self.request: Request | None = None
        self.frames: list[Frame] = []
        self.binary = bytearray()
        self.changed = asyncio.Event()
        self.lost = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # What asyncio promises a protocol, not a class check: uvloop's transports are no
        # asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.request = event
                if self.status == 101:
                    response = self.ws.accept(event)
                else:
                    response = self.ws.reject(self.status, "refused by the test\n")
                self.ws.send_response(response)
            else:
                assert isinstance(event, Frame)
                self.frames.append(event)
                if event.opcode in (Opcode.BINARY, Opcode.CONT):
                    self.binary += event.data
        self.flush()
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    def flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            else:
                self.transport.close()

    def send(self, *frames: Frame) -> None:
        for frame in frames:
            self.ws.send_frame(frame)
        self.flush()

    async def wait_for(self, predicate: object, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


class Inner(asyncio.Protocol):
    """What the connection sees: records the transport, the bytes and the end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.chunks = 0
        self.arrived = asyncio.Event()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # What asyncio promises a protocol, not a class check: uvloop's transports are no
        # asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks += 1
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class Server:
    def __init__(self) -> None:
        self.status = 101
        self.peers: list[Peer] = []
        self.port = 0

    def make(self) -> Peer:
        peer = Peer(self.status)
        self.peers.append(peer)
        return peer


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    scripted = Server()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(scripted.make, "127.0.0.1", 0)
    scripted.port = listener.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        for peer in scripted.peers:
            if peer.transport is not None:
                peer.transport.abort()
        listener.close()
        await listener.wait_closed()


async def open_link(
    server: Server, path: str = "", headers: dict[str, str] | None = None
) -> tuple[asyncio.Transport, Inner, Peer]:
    params = parse_mqtt_url(f"ws://user:{SECRET}@127.0.0.1:{server.port}{path}")
    inner = Inner()
    connect = websocket_connector(params, None, headers)
    async with asyncio.timeout(5):
        transport, _ = await connect(lambda: inner)
    assert inner.transport is transport
    return transport, inner, server.peers[-1]


async def test_the_upgrade_asks_for_mqtt_on_the_path_with_the_extra_headers(
    server: Server,
) -> None:
    transport, _, peer = await open_link(server, headers={"Authorization": f"Bearer {SECRET}"})
    request = peer.request
    assert request is not None
    assert request.path == "/mqtt"  # the default path
    assert request.headers["Sec-WebSocket-Protocol"] == "mqtt"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert "Basic" not in request.headers.get("Authorization", "")  # MQTT credentials: CONNECT
    assert transport.get_extra_info("websocket_subprotocol") == "mqtt"
    assert transport.get_extra_info("peername")[1] == server.port


async def test_writes_go_out_as_one_binary_frame_each(server: Server) -> None:
    transport, _, peer = await open_link(server, path="/custom/path?x=1")
    assert peer.request is not None
    assert peer.request.path == "/custom/path?x=1"
    transport.write(b"\x10abc")
    transport.write(b"\xe0\x00")
    await peer.wait_for(lambda: len(peer.frames) == 2)
    assert [f.opcode for f in peer.frames] == [Opcode.BINARY, Opcode.BINARY]
    assert bytes(peer.binary) == b"\x10abc\xe0\x00"


async def test_frames_are_only_a_transport_for_the_byte_stream(server: Server) -> None:
    _transport, inner, peer = await open_link(server)
    # A packet cut across a fragmented message, then several packets in one frame.
    peer.send(
        Frame(Opcode.BINARY, b"\x30\x05", fin=False),
        Frame(Opcode.CONT, b"\x00\x01t", fin=False),
        Frame(Opcode.CONT, b"xy", fin=True),
        Frame(Opcode.BINARY, b"\xd0\x00\xd0\x00"),
    )
    async with asyncio.timeout(5):
        while len(inner.data) < 11:
            inner.arrived.clear()
            await inner.arrived.wait()
    assert bytes(inner.data) == b"\x30\x05\x00\x01txy\xd0\x00\xd0\x00"


async def test_a_frame_of_many_megabytes_is_taken_whole(server: Server) -> None:
    """Brokers batch packets: Mosquitto and the test broker sent 4 MB frames of 64 KiB
    PUBLISH packets. No frame size limit may cut such a link."""
    _, inner, peer = await open_link(server)
    big = PublishPacket("big", b"x" * 65536).write() * 64
    peer.send(Frame(Opcode.BINARY, big))
    async with asyncio.timeout(10):
        while len(inner.data) < len(big):
            inner.arrived.clear()
            await inner.arrived.wait()
    assert bytes(inner.data) == big
    assert not inner.lost.done()


async def test_the_session_reassembles_packets_across_frames(server: Server) -> None:
    """End to end through open_connection: a CONNACK split over two frames, then two PUBLISH
    packets in one frame, reach the session as two messages on a connected link."""
    session = Session("ws-unit")
    received: list[PublishPacket] = []
    params = parse_mqtt_url(f"ws://127.0.0.1:{server.port}")
    opening = asyncio.ensure_future(
        open_connection(
            session,
            params.host,
            params.port,
            listeners=[received.append],
            connector=websocket_connector(params, None),
            timeout=5,
        )
    )
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        while not server.peers or not server.peers[-1].binary:
            await asyncio.sleep(0.01)
    peer = server.peers[-1]
    connect, _ = mqtt5.read(memoryview(bytes(peer.binary)))
    assert isinstance(connect, ConnectPacket)
    assert connect.client_id == "ws-unit"
    connack = ConnAckPacket().write()
    peer.send(Frame(Opcode.BINARY, connack[:2]), Frame(Opcode.BINARY, connack[2:]))
    conn = await opening
    assert conn.is_connected
    two = PublishPacket("a/b", b"one").write() + PublishPacket("a/c", b"two").write()
    peer.send(Frame(Opcode.BINARY, two))
    async with asyncio.timeout(5):
        while len(received) < 2:
            await asyncio.sleep(0.01)
    assert [(p.topic, p.payload) for p in received] == [("a/b", b"one"), ("a/c", b"two")]
    await conn.disconnect(timeout=2)
    assert any(f.opcode is Opcode.CLOSE for f in peer.frames) or peer.lost.is_set()


async def test_a_ping_is_answered_with_its_pong(server: Server) -> None:
    _, _, peer = await open_link(server)
    peer.send(Frame(Opcode.PING, b"are-you-there"))
    await peer.wait_for(lambda: any(f.opcode is Opcode.PONG for f in peer.frames))
    pong = next(f for f in peer.frames if f.opcode is Opcode.PONG)
    assert pong.data == b"are-you-there"


async def test_a_close_frame_ends_the_link_with_its_code(server: Server) -> None:
    _, inner, peer = await open_link(server)
    peer.ws.send_close(CloseCode.INTERNAL_ERROR, "broker trouble")
    peer.flush()
    async with asyncio.timeout(5):
        reason = await inner.lost
    assert isinstance(reason, ConnectionLostError)
    assert "1011" in str(reason)
    assert "broker trouble" in str(reason)
    # The close was answered (the closing handshake), and the TCP link is gone.
    await peer.wait_for(lambda: any(f.opcode is Opcode.CLOSE for f in peer.frames))
    async with asyncio.timeout(5):
        await peer.lost.wait()


async def test_a_normal_close_is_no_error(server: Server) -> None:
    _, inner, peer = await open_link(server)
    peer.ws.send_close(CloseCode.NORMAL_CLOSURE)
    peer.flush()
    async with asyncio.timeout(5):
        assert await inner.lost is None


async def test_a_text_frame_closes_the_link(server: Server) -> None:
    """MQTT 5, 6.0: a data frame other than binary closes the network connection."""
    _, inner, peer = await open_link(server)
    peer.send(Frame(Opcode.TEXT, b"hello"))
    async with asyncio.timeout(5):
        reason = await inner.lost
    assert isinstance(reason, ConnectionLostError)
    assert "text frame" in str(reason)
    assert not inner.data
    await peer.wait_for(lambda: any(f.opcode is Opcode.CLOSE for f in peer.frames))
    close = Close.parse(next(f for f in peer.frames if f.opcode is Opcode.CLOSE).data)
    assert close.code == CloseCode.UNSUPPORTED_DATA


async def test_close_sends_a_normal_close_frame(server: Server) -> None:
    transport, inner, peer = await open_link(server)
    transport.close()
    assert transport.is_closing()
    await peer.wait_for(lambda: any(f.opcode is Opcode.CLOSE for f in peer.frames))
    close = Close.parse(next(f for f in peer.frames if f.opcode is Opcode.CLOSE).data)
    assert close.code == CloseCode.NORMAL_CLOSURE
    async with asyncio.timeout(5):
        assert await inner.lost is None
    transport.write(b"after close")  # dropped, as a closing socket drops it: no error


@pytest.mark.parametrize(
    ("status", "fatal", "says"),
    [
        (401, True, "ws_headers"),
        (403, True, "ws_headers"),
        (404, True, "the path '/mqtt'"),
        (400, True, "HTTP 400"),
        (429, False, "HTTP 429"),
        (502, False, "HTTP 502 Bad Gateway"),
        (503, False, "HTTP 503"),
    ],
)
async def test_a_refused_upgrade_is_a_connect_error_naming_the_status(
    server: Server, status: int, fatal: bool, says: str
) -> None:
    server.status = status
    with pytest.raises(ConnectError) as info:
        await open_link(server)
    error = info.value
    assert error.http_status == status
    assert error.fatal is fatal
    assert says in str(error)
    assert SECRET not in str(error)
    peer = server.peers[-1]
    async with asyncio.timeout(5):
        await peer.lost.wait()  # the client dropped the link


async def test_a_server_that_closes_during_the_upgrade_is_retried(server: Server) -> None:
    loop = asyncio.get_running_loop()
    mute = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]

    class Hangup(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.close()

    mute.close()
    await mute.wait_closed()
    hangup = await loop.create_server(Hangup, "127.0.0.1", port)
    try:
        params = parse_mqtt_url(f"ws://127.0.0.1:{port}/mqtt")
        with pytest.raises(ConnectError) as info:
            async with asyncio.timeout(5):
                await websocket_connector(params, None)(Inner)
        assert not info.value.fatal
        assert "WebSocket" in str(info.value)
    finally:
        hangup.close()
        await hangup.wait_closed()


async def test_no_header_value_frame_or_password_is_logged_even_at_debug(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    transport, _, peer = await open_link(server, headers={"X-Token": SECRET})
    transport.write(f"CONNECT with {SECRET}".encode())
    await peer.wait_for(lambda: peer.frames)
    transport.close()
    server.status = 401
    with pytest.raises(ConnectError):
        await open_link(server, headers={"X-Token": SECRET})
    # websockets at DEBUG does log headers and frames (the test's peer, on its own logger)...
    assert any(SECRET in r.getMessage() for r in caplog.records if r.name == "test.peer")
    # ...but never through the library's client side.
    assert not [r for r in caplog.records if r.name != "test.peer" and SECRET in r.getMessage()]


def test_a_tcp_client_never_imports_websockets_and_ws_without_the_extra_says_so() -> None:
    code = """
import sys
sys.modules["websockets"] = None  # as if the ws extra were not installed
from tars.mqtt import ConfigError, MQTTClient
MQTTClient("mqtt://127.0.0.1:1", "tcp-client")
assert not any(name.startswith("websockets") and sys.modules[name] for name in sys.modules)
try:
    MQTTClient("ws://127.0.0.1:1/mqtt", "ws-client")
except ConfigError as exc:
    print(exc.field, "|", exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    field, message = result.stdout.strip().split(" | ")
    assert field == "mqtt_url"
    assert "pip install 'websockets>=17'" in message
