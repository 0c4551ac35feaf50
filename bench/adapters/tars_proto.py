"""tars-core's protocol layer alone: the sans-I/O :class:`~tars.mqtt._core.session.Session` under
one asyncio :class:`~tars.mqtt._asyncio.connection.Connection`, with a synchronous message listener.

No MQTTClient: no envelope, no dispatch queue, no supervisor. It is the layer the foundation
issue asked to be measured by itself, next to raw gmqtt (whose synchronous ``on_message`` is the
same shape) and raw aiomqtt.
"""

from __future__ import annotations

import asyncio

import orjson
from mqtt5 import PublishPacket, QoS, TopicFilter

from bench.adapters import Adapter, Event, OnMessage
from tars.mqtt._asyncio.connection import Connection, MessageListener, open_connection, settle
from tars.mqtt._core.session import Session, WaitFor

__all__ = ["ADAPTER", "TarsProtoAdapter"]


class TarsProtoAdapter(Adapter):
    """One protocol-level link."""

    name = "tars_proto"

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._listeners: list[MessageListener] = []
        self._session: Session | None = None

    async def connect(self, host: str, port: int, client_id: str) -> None:
        self._session = Session(client_id, keep_alive=60)
        self._conn = await open_connection(self._session, host, port, listeners=self._listeners)
        await self._conn.wait_ready()

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        loads = orjson.loads

        def listener(packet: PublishPacket) -> None:
            on_message(loads(packet.payload))

        self._listeners.append(listener)
        conn, session = self._require()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        session.subscribe([TopicFilter(topic, max_qos=QoS(qos))], handle=fut)
        conn.flush()
        await fut

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        conn, session = self._require()
        fut: asyncio.Future[int] | None = None
        if qos:
            if wait:
                fut = asyncio.get_running_loop().create_future()
            elif session.at_capacity:
                await self._wait(WaitFor.CAPACITY)
        settle(session.publish(topic, orjson.dumps(event), qos, handle=fut))
        conn.flush_soon()
        if conn.write_paused:
            await conn.drain()
        if fut is not None:
            await fut

    async def flush(self) -> None:
        await self._wait(WaitFor.FLUSHED)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect()

    async def _wait(self, what: WaitFor) -> None:
        conn, session = self._require()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if session.wait(fut, what):
            conn.flush()
            await fut

    def _require(self) -> tuple[Connection, Session]:
        assert self._conn is not None, "connect() first"
        assert self._session is not None
        return self._conn, self._session


ADAPTER = TarsProtoAdapter
