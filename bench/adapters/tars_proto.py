"""tars-core's protocol layer alone: a :class:`~tars.mqtt._session.Session` under an asyncio
:class:`~tars.mqtt.Connection`, with a synchronous message listener.

No MQTTClient: no envelope, no dispatch queue, no outbox, no liveness. It is the layer the
foundation issue asked to be measured by itself, next to raw gmqtt (whose synchronous
``on_message`` is the same shape) and raw aiomqtt.
"""

from __future__ import annotations

import asyncio

import orjson
from mqtt5 import PublishPacket

from bench.adapters import Adapter, Event, OnMessage
from tars.mqtt import Connection
from tars.mqtt._connection import MessageListener, open_connection
from tars.mqtt._session import PublishDone, Session

__all__ = ["ADAPTER", "TarsProtoAdapter"]


class TarsProtoAdapter(Adapter):
    """One protocol-level link."""

    name = "tars_proto"

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._listeners: list[MessageListener] = []
        self._session: Session | None = None
        self._drained: asyncio.Future[None] | None = None

    async def connect(self, host: str, port: int, client_id: str) -> None:
        self._session = Session(client_id, keep_alive=60)
        self._conn = await open_connection(
            self._session,
            host,
            port,
            listeners=self._listeners,
            on_publish_done=self._on_publish_done,
        )

    def _on_publish_done(self, event: PublishDone) -> None:
        drained, session = self._drained, self._session
        idle = session is not None and session.unfinished_count == 0
        if idle and drained is not None and not drained.done():
            drained.set_result(None)

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        loads = orjson.loads

        def listener(packet: PublishPacket) -> None:
            on_message(loads(packet.payload))

        self._listeners.append(listener)
        await self._require().subscribe(topic, qos=qos)

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        conn = self._require()
        if wait:
            await conn.publish(topic, orjson.dumps(event), qos=qos)
            return
        if qos and conn.at_capacity:
            await conn.wait_for_capacity()
        conn.publish_nowait(topic, orjson.dumps(event), qos=qos, wait=False)
        if conn.write_paused:
            await conn.drain()

    async def flush(self) -> None:
        self._require()
        assert self._session is not None
        if self._session.unfinished_count:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            self._drained = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect()

    def _require(self) -> Connection:
        assert self._conn is not None, "connect() first"
        return self._conn


ADAPTER = TarsProtoAdapter
