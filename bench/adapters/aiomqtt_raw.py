"""Raw aiomqtt 2.5: the idiomatic asyncio wrapper over paho, with its defaults.

MQTT 3.1.1 (its default protocol). Messages are consumed the documented way, ``async for
message in client.messages``; note that aiomqtt 2.x builds a task and an ``asyncio.wait`` per
received message on that path (QoS 0 included), and that paho's socket has no TCP_NODELAY.
Pipelined publishes are one task per ``client.publish`` (the only way to have several in
flight); ``pending_calls_threshold`` is raised so aiomqtt does not log a warning per publish
once more than ten are pending.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import orjson

from bench.adapters import Adapter, Event, OnMessage

__all__ = ["ADAPTER", "AiomqttAdapter"]


class AiomqttAdapter(Adapter):
    """One aiomqtt client, with a reader task feeding ``on_message``."""

    name = "aiomqtt"

    def __init__(self) -> None:
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._reader: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = aiomqtt.Client(host, port, identifier=client_id)
        client.pending_calls_threshold = 1 << 30
        self._client = await self._stack.enter_async_context(client)

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        client = self._require()
        await client.subscribe(topic, qos)
        self._reader = asyncio.create_task(self._read(client, on_message), name="aiomqtt-reader")

    @staticmethod
    async def _read(client: aiomqtt.Client, on_message: OnMessage) -> None:
        loads = orjson.loads
        async for message in client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray)
            on_message(loads(payload))

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        client = self._require()
        payload = orjson.dumps(event)
        if wait:
            await client.publish(topic, payload, qos)
            return
        task = asyncio.create_task(client.publish(topic, payload, qos))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._stack.aclose()

    def _require(self) -> aiomqtt.Client:
        assert self._client is not None, "connect() first"
        return self._client


ADAPTER = AiomqttAdapter
