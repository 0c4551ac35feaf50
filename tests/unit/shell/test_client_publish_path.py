"""publish_event()'s short way to the session, on the in-memory broker.

Without instruments, publish_event() skips publish()'s frame (issue 18: a coroutine per event).
What a user could see of that must not change: a subclass that wraps publish() still sees every
event, and an event still arrives as the envelope it was.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.mosquitto_cli import Inbox
from tars.mqtt import Envelope, MQTTClient
from tars.mqtt import client as client_module
from tars.mqtt.testing import InMemoryBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory


class Auditing(MQTTClient):
    """A subclass that wraps publish() (the pattern extending.md steers away from, but legal)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, int]] = []

    async def publish(self, topic: str, payload: bytes | str, **kwargs: Any) -> None:
        self.seen.append((topic, kwargs.get("qos", 0)))
        await super().publish(topic, payload, **kwargs)


async def test_a_subclass_wrapping_publish_sees_every_event(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    listener = await mqtt_client_factory("listener")
    got: Inbox[Envelope] = Inbox()

    async def on_event(env: Envelope) -> None:
        got.add(env)

    await listener.subscribe("audit/#", on_event, qos=1)
    client = Auditing(
        in_memory_broker.url,
        "auditing",
        connector=in_memory_broker.connector,
        wait_for_broker=False,
    )
    await client.connect()
    try:
        first = await client.publish_event("audit/a", "t.a", {"n": 1}, qos=1)
        second = await client.publish_event("audit/b", "t.b", {"n": 2}, qos=0, wait=False)
        await client.flush(timeout=5)
    finally:
        await client.shutdown()
    assert client.seen == [("audit/a", 1), ("audit/b", 0)]
    await got.wait_for(2)
    assert sorted((e.id, e.type, e.data["n"]) for e in got.items) == sorted(
        [(first, "t.a", 1), (second, "t.b", 2)]
    )


async def test_an_event_takes_the_short_way_and_arrives_whole(
    mqtt_client_factory: MQTTClientFactory,
) -> None:
    sender = await mqtt_client_factory("sender", source_name="stt")
    receiver = await mqtt_client_factory("receiver")
    got: Inbox[Envelope] = Inbox()

    async def on_event(env: Envelope) -> None:
        got.add(env)

    await receiver.subscribe("stt/final", on_event, qos=1)
    # The short way is the one taken here: no subclass, no patch, no instrument.
    assert type(sender).publish is client_module._PUBLISH
    assert "publish" not in vars(sender)
    assert not sender._instruments
    ids = [
        await sender.publish_event("stt/final", "stt.final", {"seq": n}, qos=1, wait=n % 2 == 0)
        for n in range(20)
    ]
    await sender.flush(timeout=5)
    await got.wait_for(20)
    assert [(e.id, e.source, e.data["seq"]) for e in got.items] == [
        (msg_id, "stt", n) for n, msg_id in enumerate(ids)
    ]
    assert sender.stats.published == 20  # through the session, counted as publish() counts


async def test_a_publish_patched_on_the_client_or_its_class_sees_every_event(
    mqtt_client_factory: MQTTClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What tests do with mocks: a publish() replaced on the instance, or on the class after the
    client was made, is called by publish_event() as it was before the short way existed."""
    client = await mqtt_client_factory("patched")
    seen: list[str] = []
    real = client.publish

    async def spy(topic: str, payload: bytes | str, **kwargs: Any) -> None:
        seen.append(topic)
        await real(topic, payload, **kwargs)

    monkeypatch.setattr(client, "publish", spy)
    await client.publish_event("spy/instance", "t", {}, qos=1)
    monkeypatch.undo()

    async def class_spy(self: MQTTClient, topic: str, payload: bytes | str, **kwargs: Any) -> None:
        seen.append(topic)
        await client_module._PUBLISH(self, topic, payload, **kwargs)

    monkeypatch.setattr(MQTTClient, "publish", class_spy)
    await client.publish_event("spy/class", "t", {}, qos=1)
    assert seen == ["spy/instance", "spy/class"]
