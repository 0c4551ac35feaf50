"""A service of the original fleet, as far as the wire can tell: our own small stand-in.

The original client parses every envelope with a pydantic model that forbids extra keys over
``{id, type, ts, source, data}``, correlates by reusing the request's id as the answer's id,
sends no MQTT 5 properties, and streams chunks that share one id and differ in ``data.seq``.
This peer does exactly that, and counts every payload its strict model rejects (the loss a
mixed fleet must not have). Its transport is a tars-core client used for raw bytes only.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from support.mosquitto_cli import Inbox
from tars.mqtt import MQTTClient


class StrictEnvelope(BaseModel):
    """The original envelope model: these five keys and no other."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str
    ts: float = Field(default_factory=time.time)
    source: str
    data: dict[str, Any]


class OriginalPeer:
    """Publishes and parses like the original client, over ``transport`` (raw bytes only)."""

    def __init__(self, transport: MQTTClient, source: str) -> None:
        self.transport = transport
        self.source = source
        self.rejected: list[bytes] = []

    async def publish(
        self, topic: str, event_type: str, data: dict[str, Any], *, msg_id: str | None = None
    ) -> bytes:
        """Publish one envelope (id reused when given, as the original's correlation); QoS 1.
        Returns the bytes sent, so a test can send them again byte for byte."""
        envelope = StrictEnvelope(type=event_type, source=self.source, data=data)
        if msg_id is not None:
            envelope.id = msg_id
        payload = orjson.dumps(envelope.model_dump())
        await self.transport.publish(topic, payload, qos=1)
        return payload

    async def listen(self, topic: str) -> Inbox[StrictEnvelope]:
        """Parse everything on ``topic`` with the strict model; rejections are kept."""
        inbox: Inbox[StrictEnvelope] = Inbox()

        async def on_payload(payload: bytes) -> None:
            try:
                inbox.add(StrictEnvelope.model_validate_json(payload))
            except ValidationError:
                self.rejected.append(payload)

        await self.transport.subscribe(topic, on_payload, qos=1)
        return inbox
