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
    """A fake broker on a free loopback port: ``async with`` starts it, :attr:`port` is where
    it listens, and a subclass's ``_serve(reader, writer)`` plays each connection."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
