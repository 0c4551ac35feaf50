"""Helpers for our own tests: a bare MQTT 5 peer over asyncio streams.

It speaks through the ``mqtt5`` codec only, so tests of the testing kit (the Mosquitto runner,
the fault proxy) do not depend on the client they are meant to test.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

import mqtt5


class RawMQTT:
    """One TCP connection that sends and receives whole MQTT 5 packets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> RawMQTT:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, packet: mqtt5.Packet) -> None:
        self.writer.write(packet.write())
        await self.writer.drain()

    async def receive(self) -> mqtt5.Packet:
        """The next packet; raises EOFError when the peer closes the connection first."""
        while True:
            try:
                with memoryview(self._buffer) as view:
                    packet, size = mqtt5.read(view)
            except IndexError:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("connection closed by the peer") from None
                self._buffer += data
                continue
            del self._buffer[:size]
            return packet

    async def connect(
        self,
        client_id: str,
        *,
        clean_start: bool = True,
        keep_alive: int = 0,
        session_expiry_interval: int = 0,
    ) -> mqtt5.ConnAckPacket:
        """Send CONNECT and return the CONNACK (within 5 s)."""
        packet = mqtt5.ConnectPacket(
            client_id,
            clean_start=clean_start,
            keep_alive=keep_alive,
            session_expiry_interval=session_expiry_interval,
        )
        await self.send(packet)
        connack = await asyncio.wait_for(self.receive(), 5)
        assert isinstance(connack, mqtt5.ConnAckPacket), connack
        return connack

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # reset by the peer: closed all the same
            await self.writer.wait_closed()


async def mqtt_session(host: str, port: int, client_id: str) -> tuple[RawMQTT, mqtt5.ConnAckPacket]:
    """Open a connection and complete the CONNECT/CONNACK exchange."""
    peer = await RawMQTT.open(host, port)
    try:
        connack = await peer.connect(client_id)
    except BaseException:
        await peer.close()
        raise
    return peer, connack


class LoopbackServer:
    """A fake broker on a free loopback port: ``async with`` (or :meth:`start` / :meth:`close`)
    runs it, :attr:`port` and :attr:`url` say where it listens, and a subclass's
    ``_serve(reader, writer)`` plays each connection, in a task of its own that :meth:`close`
    cancels: a connection left open (a hung fake) never outlives the server."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = f"{type(self).__name__}-connection"
        task = asyncio.create_task(self._serve(reader, writer), name=name)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
