"""``Message.retain`` means what the docs (and MQTT 5's default) say: "the broker's stored copy".

The quickstart tells a service to read a retained state or health topic on subscribe and then
follow live changes; that only works when a live publish arrives with ``retain`` false and the
stored copy replayed on subscribe with ``retain`` true (MQTT 5 subscription option "retain as
published" off, as paho-mqtt and aiomqtt subscribe by default).
"""

from __future__ import annotations

import pytest

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import Message
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


async def test_stored_copy_is_retained_and_live_updates_are_not(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topic = unique("state/lamp")
    async with (
        connected_client(shared_mosquitto, "lamp") as lamp,
        connected_client(shared_mosquitto, "dashboard") as dashboard,
    ):
        await lamp.publish(topic, b"on", qos=1, retain=True)
        inbox: Inbox[Message] = Inbox()

        async def on_state(msg: Message) -> None:
            inbox.add(msg)

        await dashboard.subscribe(topic, on_state, qos=1)
        await lamp.publish(topic, b"off", qos=1, retain=True)
        got = await inbox.wait_for(2)
        await lamp.publish(topic, b"", qos=1, retain=True)  # clear the stored copy
    assert [(m.payload, m.retain) for m in got] == [(b"on", True), (b"off", False)]
