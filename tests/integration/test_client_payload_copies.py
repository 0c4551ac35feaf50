"""Large payloads (camera frames) reach handlers without a copy and with one JSON parse.

The codec turns the socket's bytes into one ``bytes`` object; from there the client only passes
references: every subscription and handler sees that same object, and the JSON is parsed once
for the dedup window and every envelope handler together. On the in-memory broker; the
frame test also through a real socket to Mosquitto.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from mqtt5 import PublishPacket

from support.brokers import BOTH, Broker
from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, _message

FRAME = bytes(range(256)) * 256  # 64 KiB


@pytest.mark.parametrize("broker", BOTH, indirect=True)
async def test_a_64k_payload_reaches_every_handler_as_the_codecs_own_bytes(
    broker: Broker,
) -> None:
    topic = unique("camera/frame")
    from_codec: Inbox[bytes] = Inbox()
    first: Inbox[bytes] = Inbox()
    second: Inbox[bytes] = Inbox()

    async def on_first(payload: bytes) -> None:
        first.add(payload)

    async def on_second(payload: bytes) -> None:
        second.add(payload)

    async with broker.client(unique("cam-sub")) as client:

        def listener(packet: PublishPacket) -> None:
            if packet.topic == topic:
                from_codec.add(packet.payload)

        client.add_message_listener(listener)
        # Two handlers on one filter: one packet on the wire, one Message for both. (Two
        # overlapping filters would make the broker send two packets: two payloads.)
        await client.subscribe(topic, on_first)
        await client.subscribe(topic, on_second)
        async with broker.client(unique("cam-pub")) as publisher:
            await publisher.publish(topic, FRAME)
        [a], [b] = await first.wait_for(1), await second.wait_for(1)
        [raw] = await from_codec.wait_for(1)
    assert a == FRAME
    assert a is b  # one object for both subscriptions...
    assert a is raw  # ...and it is the one the codec produced: no copy on the way


async def test_one_json_parse_serves_dedup_and_every_envelope_handler(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[int] = []
    real_loads = orjson.loads

    def counting_loads(data: Any) -> Any:
        parses.append(len(data))
        return real_loads(data)

    monkeypatch.setattr(_message.orjson, "loads", counting_loads)
    topic = unique("camera/meta")
    got: list[Inbox[Envelope]] = [Inbox(), Inbox(), Inbox()]

    def handler(inbox: Inbox[Envelope]) -> Any:
        async def on_event(event: Envelope) -> None:
            inbox.add(event)

        return on_event

    options: dict[str, Any] = {"dedupe_ttl": 30.0, "dedupe_max_entries": 100}
    async with broker.client(unique("meta-sub"), **options) as client:
        for inbox in got:
            await client.subscribe(topic, handler(inbox))
        async with broker.client(unique("meta-pub")) as publisher:
            frame = {"pixels": FRAME.hex()}  # ~128 KiB of JSON
            await publisher.publish_event(topic, "camera.frame", frame)
        events = [(await inbox.wait_for(1))[0] for inbox in got]
    assert all(e.data == {"pixels": FRAME.hex()} for e in events)
    assert len(parses) == 1  # dedup (three windows) and three envelope handlers: one parse
