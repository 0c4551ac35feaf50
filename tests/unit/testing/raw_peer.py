"""A packet-level MQTT 5 peer for the broker's tests, over any asyncio transport.

It is an ``asyncio.Protocol`` so the same peer runs over the in-memory transport (through
``InMemoryBroker.connector``) and over TCP (``loop.create_connection``). It speaks through the
``mqtt5`` codec only: it sends exactly what a test tells it to, and records every packet it
gets, so the broker is tested without any client logic in between.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import mqtt5

from tars.mqtt._core import mqtt311
from tars.mqtt.testing import InMemoryBroker

P = TypeVar("P")

WAIT = 5.0  # seconds any expected event may take before the test fails


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a condition that has no event of its own (e.g. broker state seen from outside)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _write_mqtt5(packet: mqtt5.Packet) -> bytes:
    return packet.write()


class RawPeer(asyncio.Protocol):
    """One connection to the broker, driven packet by packet."""

    # The codec it speaks (RawPeer311: MQTT 3.1.1, the same packet objects).
    read: Callable[[memoryview], tuple[mqtt5.Packet, int]] = staticmethod(mqtt5.read)
    write: Callable[[mqtt5.Packet], bytes] = staticmethod(_write_mqtt5)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received: asyncio.Queue[mqtt5.Packet] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.lost_with: Exception | None = None
        self.raw = bytearray()  # every byte received, for tests on exact framing
        self._set_aside: deque[mqtt5.PublishPacket] = (
            deque()
        )  # deliveries seen while awaiting an ack
        self._buffer = bytearray()
        self._ids = itertools.count(1)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    async def over_memory(cls, broker: InMemoryBroker) -> RawPeer:
        _, peer = await broker.connector(cls)
        assert isinstance(peer, RawPeer)
        return peer

    @classmethod
    async def over_tcp(cls, port: int, host: str = "127.0.0.1") -> RawPeer:
        _, peer = await asyncio.get_running_loop().create_connection(cls, host, port)
        return peer

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.raw += data
        self._buffer += data
        while self._buffer:
            try:
                packet, size = self.read(memoryview(bytes(self._buffer)))
            except (IndexError, ValueError):
                return  # incomplete, or not MQTT 5 (kept in ``raw`` for the test to read)
            del self._buffer[:size]
            self.received.put_nowait(packet)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_with = exc
        self.closed.set()

    # -- sending -------------------------------------------------------------------------------

    def send(self, *packets: mqtt5.Packet) -> None:
        for packet in packets:
            self.send_raw(self.write(packet))

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def next_id(self) -> int:
        return next(self._ids)

    # -- receiving -----------------------------------------------------------------------------

    async def next(self, timeout: float = WAIT) -> mqtt5.Packet:
        if self._set_aside:
            return self._set_aside.popleft()
        return await asyncio.wait_for(self.received.get(), timeout)

    async def expect_ack(self, kind: type[P], timeout: float = WAIT) -> P:
        """The next ``kind`` packet; PUBLISH packets arriving first are kept for later."""
        held: list[mqtt5.PublishPacket] = []
        while True:
            packet = await asyncio.wait_for(self.received.get(), timeout)
            if isinstance(packet, kind):
                self._set_aside.extend(held)
                return packet
            assert isinstance(packet, mqtt5.PublishPacket), (
                f"expected {kind.__name__}, got {packet!r}"
            )
            held.append(packet)

    async def expect(self, kind: type[P], timeout: float = WAIT) -> P:
        """The next packet, which must be a ``kind``."""
        packet = await self.next(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    async def expect_closed(self, timeout: float = WAIT) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    def pending(self) -> list[mqtt5.Packet]:
        """Packets received and not consumed yet (consumes them)."""
        out: list[mqtt5.Packet] = list(self._set_aside)
        self._set_aside.clear()
        while not self.received.empty():
            out.append(self.received.get_nowait())
        return out

    # -- MQTT exchanges ------------------------------------------------------------------------

    async def connect(self, client_id: str = "", **options: object) -> mqtt5.ConnAckPacket:
        """CONNECT (clean start unless told otherwise) and return the CONNACK."""
        options.setdefault("clean_start", True)
        self.send(mqtt5.ConnectPacket(client_id, **options))  # type: ignore[arg-type]
        return await self.expect(mqtt5.ConnAckPacket)

    async def subscribe(
        self,
        *patterns: str,
        qos: int = 2,
        subscription_id: int | None = None,
        **options: object,
    ) -> mqtt5.SubAckPacket:
        filters = [
            mqtt5.TopicFilter(p, max_qos=mqtt5.QoS(qos), **options)  # type: ignore[arg-type]
            for p in patterns
        ]
        packet_id = self.next_id()
        self.send(mqtt5.SubscribePacket(packet_id, filters, subscription_id=subscription_id))
        suback = await self.expect_ack(mqtt5.SubAckPacket)
        assert suback.packet_id == packet_id
        return suback

    async def unsubscribe(self, *patterns: str) -> mqtt5.UnsubAckPacket:
        packet_id = self.next_id()
        self.send(mqtt5.UnsubscribePacket(packet_id, list(patterns)))
        return await self.expect_ack(mqtt5.UnsubAckPacket)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, **options: object
    ) -> mqtt5.Packet | None:
        """Publish and complete the QoS flow: returns the PUBACK or PUBCOMP (None for QoS 0)."""
        packet_id = self.next_id() if qos else None
        self.send(
            mqtt5.PublishPacket(
                topic,
                payload,
                qos=mqtt5.QoS(qos),
                retain=retain,
                packet_id=packet_id,
                **options,  # type: ignore[arg-type]
            )
        )
        if qos == 0:
            return None
        if qos == 1:
            return await self.expect_ack(mqtt5.PubAckPacket)
        pubrec = await self.expect_ack(mqtt5.PubRecPacket)
        assert pubrec.packet_id == packet_id
        self.send(mqtt5.PubRelPacket(pubrec.packet_id))
        return await self.expect_ack(mqtt5.PubCompPacket)

    async def receive_publish(
        self, *, ack: bool = True, timeout: float = WAIT
    ) -> mqtt5.PublishPacket:
        """The next packet, a PUBLISH; acknowledged (PUBACK, or the QoS 2 flow) if ``ack``."""
        publish = await self.expect(mqtt5.PublishPacket, timeout)
        if ack:
            await self.ack(publish)
        return publish

    async def ack(self, publish: mqtt5.PublishPacket) -> None:
        if publish.qos == mqtt5.QoS.AT_LEAST_ONCE:
            assert publish.packet_id is not None
            self.send(mqtt5.PubAckPacket(publish.packet_id))
        elif publish.qos == mqtt5.QoS.EXACTLY_ONCE:
            assert publish.packet_id is not None
            self.send(mqtt5.PubRecPacket(publish.packet_id))
            pubrel = await self.expect_ack(mqtt5.PubRelPacket)
            assert pubrel.packet_id == publish.packet_id
            self.send(mqtt5.PubCompPacket(publish.packet_id))

    async def ping(self, timeout: float = WAIT) -> None:
        self.send(mqtt5.PingReqPacket())
        await self.expect(mqtt5.PingRespPacket, timeout)

    async def disconnect(self, reason_code: int = 0, **options: object) -> None:
        """Send DISCONNECT and close, as a well-behaved client does."""
        reason = mqtt5.DisconnectReasonCode(reason_code)
        self.send(mqtt5.DisconnectPacket(reason_code=reason, **options))  # type: ignore[arg-type]
        assert self.transport is not None
        self.transport.close()
        await self.expect_closed()

    def abort(self) -> None:
        assert self.transport is not None
        self.transport.abort()


class RawPeer311(RawPeer):
    """A :class:`RawPeer` speaking MQTT 3.1.1 (tars.mqtt._core.mqtt311: level 4 CONNECT, no
    properties, no reason codes but CONNACK's return code and SUBACK's 0x80)."""

    read = staticmethod(mqtt311.read)
    write = staticmethod(mqtt311.write)


PeerOpener = Callable[[InMemoryBroker], Awaitable[RawPeer]]
"""``await open_peer(broker)``: the fixture that opens a raw connection (memory or TCP)."""


async def connected(
    open_peer: PeerOpener, broker: InMemoryBroker, client_id: str, **options: object
) -> RawPeer:
    """A new peer, CONNECT-ed (clean start unless told otherwise) and accepted."""
    peer = await open_peer(broker)
    connack = await peer.connect(client_id, **options)
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS, connack
    return peer


async def assert_nothing_more(peer: RawPeer) -> None:
    """Prove that nothing more was delivered: the broker answers a PINGREQ after everything it
    had to write to that client, so a PINGRESP next means nothing came in between."""
    peer.send(mqtt5.PingReqPacket())
    packet = await peer.next()
    assert isinstance(packet, mqtt5.PingRespPacket), f"unexpected {packet!r}"
    assert peer.pending() == []
