"""Raw gmqtt 0.8: the fastest pure-Python asyncio peer, used as the main yardstick.

Used the way its README shows, on its fastest path: MQTT 5 (its default), a *synchronous*
``on_message`` (an ``async def`` one would cost gmqtt a task per message), optimistic
acknowledgement (its default: PUBACK before the handler runs).

gmqtt's ``publish()`` is fire-and-forget: it writes to the transport and returns, with no way
to learn when the PUBACK arrives. ``has_completion`` is therefore False and the cases count
completion by the subscriber's receipts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gmqtt  # type: ignore[import-untyped]
import orjson

from bench.adapters import Adapter, Event, OnMessage

__all__ = ["ADAPTER", "GmqttAdapter"]


class GmqttAdapter(Adapter):
    """One gmqtt client."""

    name = "gmqtt"
    has_completion = False

    def __init__(self) -> None:
        self._client: Any = None
        self._suback: dict[int, asyncio.Future[None]] = {}

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = gmqtt.Client(client_id)
        client.on_subscribe = self._on_subscribe
        await client.connect(host, port)
        self._client = client

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        waiter = self._suback.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        loads = orjson.loads

        def handle(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
            on_message(loads(payload))
            return 0

        self._client.on_message = handle
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        mid = self._client.subscribe(topic, qos=qos)
        self._suback[mid] = waiter
        await waiter

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        self._client.publish(topic, orjson.dumps(event), qos=qos)

    async def flush(self) -> None:
        """Nothing to wait for: gmqtt does not report publish completion."""

    async def close(self) -> None:
        if self._client is not None:
            await self._client.disconnect()


ADAPTER = GmqttAdapter
