"""tars-core raw bytes: ``publish`` of orjson bytes in, a ``bytes`` handler out.

The same work the raw peers do (orjson both ways, no envelope, no dedup), so this row isolates
the cost of tars-core's transport, session and dispatch from the cost of envelopes.

No ``from __future__ import annotations`` here: tars-core picks the handler's form from the
annotation of its first parameter, which must be the real ``bytes``.
"""

import orjson

from bench.adapters import Adapter, Event, OnMessage
from tars.mqtt import MQTTClient

__all__ = ["ADAPTER", "TarsRawAdapter"]


class TarsRawAdapter(Adapter):
    """One tars-core client publishing and receiving raw bytes."""

    name = "tars_raw"

    def __init__(self) -> None:
        self._client: MQTTClient | None = None

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = MQTTClient(f"mqtt://{host}:{port}", client_id)
        await client.connect()
        self._client = client

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        loads = orjson.loads

        async def handler(payload: bytes) -> None:
            on_message(loads(payload))

        await self._require().subscribe(topic, handler, qos=qos)

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        await self._require().publish(topic, orjson.dumps(event), qos=qos, wait=wait)

    async def flush(self) -> None:
        await self._require().flush()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.shutdown()

    def _require(self) -> MQTTClient:
        assert self._client is not None, "connect() first"
        return self._client


ADAPTER = TarsRawAdapter
