"""Instruments (``client.add_instrument``) see every publish, handler call and link change."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import (
    Envelope,
    HandlerCall,
    Instrument,
    Message,
    MQTTClient,
    OutgoingPublish,
    PublishError,
)
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = pytest.mark.mosquitto


class Recorder(Instrument):
    """Keeps what it was told, and tags every publish with a user property."""

    def __init__(self) -> None:
        self.published: list[tuple[OutgoingPublish, BaseException | None]] = []
        self.calls: list[HandlerCall] = []
        self.started: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.done: Inbox[HandlerCall] = Inbox()
        self.link_events: Inbox[str] = Inbox()

    def publish_started(self, publish: OutgoingPublish) -> Any:
        publish.user_properties.append(("seen-by", "recorder"))
        return publish.topic

    def publish_finished(
        self, publish: OutgoingPublish, state: Any, error: BaseException | None
    ) -> None:
        assert state == publish.topic
        self.published.append((publish, error))

    def handler_started(self, call: HandlerCall) -> Any:
        self.started.append(call.message.topic)
        return call.message.envelope_id

    def handler_finished(self, call: HandlerCall, state: Any) -> None:
        assert state == call.message.envelope_id
        self.calls.append(call)
        self.done.add(call)

    def connected(self, client_id: str, broker: str) -> None:
        self.links.append(("up", broker))
        self.link_events.add("up")

    def disconnected(self, client_id: str, broker: str) -> None:
        self.links.append(("down", broker))
        self.link_events.add("down")


async def test_handler_calls_are_seen_with_their_outcome_and_duration(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("instr"), handler_timeout=0.2)
    recorder = Recorder()
    client.add_instrument(recorder)
    topic = unique("instr/t")

    async def handler(event: Envelope) -> None:
        behaviour = event.data["do"]
        if behaviour == "fail":
            raise RuntimeError("this handler fails")
        if behaviour == "hang":
            await asyncio.sleep(10)
        if behaviour == "work":
            await asyncio.sleep(0.05)

    sub = await client.subscribe(topic, handler, qos=1)
    async with client:
        ids = {}
        for behaviour in ("ok", "fail", "hang", "work"):
            ids[behaviour] = await client.publish_event(topic, "t", {"do": behaviour}, qos=1)
        await client.publish(topic, b"not an envelope", qos=1)
        calls = await recorder.done.wait_for(5)
    outcome = {call.message.envelope_id: call.outcome for call in calls}
    assert outcome[ids["ok"]] == "handled"
    assert outcome[ids["fail"]] == "failed"
    assert outcome[ids["hang"]] == "timed_out"
    assert outcome[ids["work"]] == "handled"
    assert outcome[None] == "invalid"
    duration = {call.message.envelope_id: call.duration for call in calls}
    assert 0.2 <= duration[ids["hang"]] < 2
    assert 0.05 <= duration[ids["work"]] < 1
    assert all(call.subscription is sub and call.client_id == client.client_id for call in calls)
    stats = sub.stats
    assert (stats.handled, stats.failed, stats.timed_out, stats.invalid) == (2, 1, 1, 1)


async def test_publishes_carry_the_instruments_user_properties(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("instr"))
    recorder = Recorder()
    remove = client.add_instrument(recorder)
    topic = unique("instr/p")
    got: Inbox[Message] = Inbox()

    async def handler(message: Message) -> None:
        got.add(message)

    await client.subscribe(topic, handler, qos=1)
    async with client:
        msg_id = await client.publish_event(topic, "t", {"n": 1}, qos=1)
        await client.publish(topic, b"raw", qos=1, properties={"user_properties": [("mine", "1")]})
        first, second = await got.wait_for(2)
        remove()
        await client.publish(topic, b"unobserved", qos=1)
        third = (await got.wait_for(3))[2]
    assert first.packet.user_properties == [("seen-by", "recorder")]
    assert second.packet.user_properties == [("mine", "1"), ("seen-by", "recorder")]
    assert third.packet.user_properties == []
    observed = [(p.topic, p.qos, p.envelope_id, error) for p, error in recorder.published]
    assert observed == [(topic, 1, msg_id, None), (topic, 1, None, None)]
    assert all(p.duration > 0 for p, _ in recorder.published)


async def test_a_refused_publish_reaches_the_instrument_as_its_error(
    shared_mosquitto: MosquittoBroker,
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("instr"))
    recorder = Recorder()
    client.add_instrument(recorder)
    async with client:
        with pytest.raises(TypeError):
            await client.publish("a/b", b"x", properties={"no_such_property": 1})
    (publish, error), *_ = recorder.published
    assert isinstance(error, TypeError)
    assert not isinstance(error, PublishError)
    assert publish.topic == "a/b"


async def test_link_changes_are_told(
    shared_mosquitto: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await make_tcp_proxy(shared_mosquitto.host, shared_mosquitto.port)
    client = MQTTClient(proxy.url, unique("instr"), reconnect_min_delay=0.05)
    recorder = Recorder()
    client.add_instrument(recorder)
    async with client:
        await recorder.link_events.wait_for(1)
        await proxy.drop_connections()
        await recorder.link_events.wait_for(3)  # down, then up again
    assert [what for what, _ in recorder.links] == ["up", "down", "up"]
    assert {broker for _, broker in recorder.links} == {client.broker}


async def test_a_failing_instrument_breaks_nothing_and_is_logged(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Instrument):
        def publish_started(self, publish: OutgoingPublish) -> Any:
            raise RuntimeError("instrument bug")

        def handler_finished(self, call: HandlerCall, state: Any) -> None:
            raise RuntimeError("instrument bug")

    client = MQTTClient(shared_mosquitto.url, unique("instr"))
    client.add_instrument(Broken())
    recorder = Recorder()
    client.add_instrument(recorder)
    topic = unique("instr/b")
    got: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        got.add(payload)

    await client.subscribe(topic, handler, qos=1)
    with caplog.at_level(logging.ERROR, logger="tars.mqtt.instrument"):
        async with client:
            for n in range(5):
                await client.publish(topic, str(n).encode(), qos=1)
            assert await got.wait_for(5) == [b"0", b"1", b"2", b"3", b"4"]
            await recorder.done.wait_for(5)
    failures = [r for r in caplog.records if "instrument" in r.getMessage()]
    assert len(failures) == 3  # the first ones, not one per message
    assert all(r.client_id == client.client_id for r in failures)  # type: ignore[attr-defined]
    assert len(recorder.published) == 5  # the other instrument still hears everything


def test_an_instrument_must_subclass_instrument() -> None:
    client = MQTTClient("mqtt://127.0.0.1:9", "instr")
    with pytest.raises(TypeError, match=r"tars\.mqtt\.Instrument"):
        client.add_instrument(object())  # type: ignore[arg-type]
