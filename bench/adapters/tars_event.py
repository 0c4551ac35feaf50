"""tars-core envelope events: ``publish_event`` in, parsed envelope out, dedup on.

This is the path a TARS service uses: the bench's dict becomes an envelope's ``data``
(``publish_event`` adds id, type, ts and source), and the handler reads the parsed envelope.
Dedup is on (``dedupe_ttl=60``, ``dedupe_max_entries=100_000``), so every received message also
goes through the dedup window.

No ``from __future__ import annotations`` here: tars-core picks the handler's form from the
annotation of its first parameter, which must be the real ``Message`` class.
"""

from bench.adapters import Adapter, Event, OnMessage
from tars.mqtt import Message, MQTTClient

__all__ = ["ADAPTER", "TarsEventAdapter"]

EVENT_TYPE = "bench.event"


class TarsEventAdapter(Adapter):
    """One tars-core client publishing and receiving envelopes."""

    name = "tars_event"

    def __init__(self) -> None:
        self._client: MQTTClient | None = None

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = MQTTClient(
            f"mqtt://{host}:{port}", client_id, dedupe_ttl=60.0, dedupe_max_entries=100_000
        )
        await client.connect()
        self._client = client

    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        async def handler(msg: Message) -> None:
            on_message(msg.envelope.data)

        await self._require().subscribe(topic, handler, qos=qos)

    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        await self._require().publish_event(topic, EVENT_TYPE, event, qos=qos, wait=wait)

    async def flush(self) -> None:
        await self._require().flush()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.shutdown()

    def _require(self) -> MQTTClient:
        assert self._client is not None, "connect() first"
        return self._client


ADAPTER = TarsEventAdapter
