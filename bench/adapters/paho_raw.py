"""Raw paho-mqtt 2.2 with its network thread (``loop_start``), bridged to asyncio.

MQTT 3.1.1 (paho's default), paho's defaults otherwise (at most 20 QoS 1 messages in flight,
no TCP_NODELAY). paho calls back on its own thread; every callback the bench needs is carried
to the event loop with ``loop.call_soon_threadsafe``, the way an asyncio service would use it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.adapters import Adapter, Event, OnMessage

__all__ = ["ADAPTER", "PahoAdapter"]


class PahoAdapter(Adapter):
    """One paho client and its network thread."""

    name = "paho"

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client: mqtt.Client | None = None
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._suback: dict[int, asyncio.Future[None]] = {}
        # Publish completion is reported on paho's thread, possibly before publish() has
        # returned the mid to us: both sides meet under this lock.
        self._lock = threading.Lock()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()  # completed before publish() returned
        self._untracked: set[int] = set()  # pipelined, nobody awaits them
        self._unacked = 0
        self._drained: asyncio.Event | None = None

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.connect_async(host, port)
        client.loop_start()
        self._client = client
        await self._connected

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        def done() -> None:
            if self._connected.done():
                return
            if rc.is_failure:
                self._connected.set_exception(ConnectionError(f"CONNACK refused: {rc}"))
            else:
                self._connected.set_result(None)

        self._loop.call_soon_threadsafe(done)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._loop.call_soon_threadsafe(self._resolve, self._suback, mid)

    @staticmethod
    def _resolve(waiters: dict[int, asyncio.Future[None]], mid: int) -> None:
        waiter = waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        # Called by paho with its own locks held: never call into paho while holding ours.
        with self._lock:
            self._unacked -= 1
            drained = self._unacked == 0 and self._drained is not None
            waiter = self._waiters.pop(mid, None)
            if waiter is None and mid not in self._untracked:
                self._early.add(mid)
            self._untracked.discard(mid)
        if waiter is not None:
            self._loop.call_soon_threadsafe(waiter.set_result, None)
        if drained:
            self._loop.call_soon_threadsafe(self._set_drained)

    def _set_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        client = self._require()
        loop = self._loop
        loads = orjson.loads

        def deliver(payload: bytes | bytearray) -> None:
            on_message(loads(payload))

        def handle(client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(deliver, message.payload)

        client.on_message = handle
        waiter: asyncio.Future[None] = loop.create_future()
        # The SUBACK is resolved on this (the loop's) thread, so it cannot overtake us.
        _, mid = client.subscribe(topic, qos)
        assert mid is not None
        self._suback[mid] = waiter
        await waiter

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        client = self._require()
        payload = orjson.dumps(event)
        with self._lock:
            self._unacked += 1
        mid = client.publish(topic, payload, qos).mid
        with self._lock:
            if mid in self._early:  # completion already reported
                self._early.discard(mid)
                return
            if not wait:
                self._untracked.add(mid)
                return
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters[mid] = waiter
        await waiter

    async def flush(self) -> None:
        with self._lock:
            if self._unacked <= 0:
                return
            self._drained = asyncio.Event()
        await self._drained.wait()
        self._drained = None

    async def close(self) -> None:
        client = self._client
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def _require(self) -> mqtt.Client:
        assert self._client is not None, "connect() first"
        return self._client


ADAPTER = PahoAdapter
