"""examples/custom_mqtt_wrapper.py: the three extension patterns do what extending.md says.

Each wrapper is checked by what another client sees on a real broker, not by its internals.
"""

from __future__ import annotations

import asyncio

import pytest
from custom_mqtt_wrapper import (
    AdvancedMQTTClient,
    BatchingMQTTClient,
    DomainMQTTClient,
    SttFinal,
)
from docs_tools import ROOT, run_script

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import ClientState, Envelope, Message, MQTTClient, NotConnectedError
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

HIGH = {"user_properties": [("severity", "high")]}
LOW = {"user_properties": [("severity", "low")]}


def is_high(message: Message) -> bool:
    return ("severity", "high") in message.packet.user_properties


async def collect(client: MQTTClient, topic: str) -> Inbox[Message]:
    inbox: Inbox[Message] = Inbox()

    async def on_message(message: Message) -> None:
        inbox.add(message)

    await client.subscribe(topic, on_message, qos=1)
    return inbox


# --- DomainMQTTClient ---------------------------------------------------------------------------


async def test_publish_stt_final_is_a_qos1_stt_final_event_on_stt_final(
    shared_mosquitto: MosquittoBroker,
) -> None:
    async with (
        connected_client(shared_mosquitto, "stt") as mqtt,
        connected_client(shared_mosquitto, "observer") as observer,
    ):
        inbox = await collect(observer, "stt/final")
        first = await DomainMQTTClient(mqtt).publish_stt_final("turn left", 0.93)
        second = await DomainMQTTClient(mqtt).publish_stt_final("gira", 0.5, lang="es")
        got = await inbox.wait_for(2)
    assert [m.qos for m in got] == [1, 1]
    assert [(m.envelope.id, m.envelope.type, m.envelope.data) for m in got] == [
        (first, "stt.final", {"text": "turn left", "confidence": 0.93, "lang": "en"}),
        (second, "stt.final", {"text": "gira", "confidence": 0.5, "lang": "es"}),
    ]


async def test_on_stt_final_passes_valid_transcripts_only(
    shared_mosquitto: MosquittoBroker,
) -> None:
    heard: Inbox[SttFinal] = Inbox()

    async def on_final(event: SttFinal) -> None:
        heard.add(event)

    async with (
        connected_client(shared_mosquitto, "router") as mqtt,
        connected_client(shared_mosquitto, "stt") as stt,
    ):
        sub = await DomainMQTTClient(mqtt).on_stt_final(on_final)
        await stt.publish_event("stt/final", "stt.final", {"text": "no confidence"}, qos=1)
        await DomainMQTTClient(stt).publish_stt_final("hello", 0.9)
        [event] = await heard.wait_for(1)
    assert event == SttFinal(text="hello", confidence=0.9, lang="en")
    assert sub.stats.invalid == 1


# --- BatchingMQTTClient -------------------------------------------------------------------------


async def test_a_full_batch_is_published_at_once(shared_mosquitto: MosquittoBroker) -> None:
    topic = unique("batch/full")
    async with (
        connected_client(shared_mosquitto, "batcher") as mqtt,
        connected_client(shared_mosquitto, "observer") as observer,
    ):
        inbox = await collect(observer, topic)
        batcher = BatchingMQTTClient(mqtt, batch_size=10, batch_interval=60)
        for i in range(11):
            await batcher.publish_batched(topic, {"i": i})
        # Well before the 60 s interval: the size triggered it.
        [batch] = await inbox.wait_for(1)
        assert batcher.pending(topic) == 1
        await batcher.flush()
        [_, rest] = await inbox.wait_for(2)
    assert batch.envelope.type == "batch"
    assert batch.envelope.data == {"items": [{"i": i} for i in range(10)]}
    assert rest.envelope.data == {"items": [{"i": 10}]}


async def test_a_partial_batch_is_published_when_the_interval_passes(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topic = unique("batch/interval")
    interval = 0.3
    loop = asyncio.get_running_loop()
    async with (
        connected_client(shared_mosquitto, "batcher") as mqtt,
        connected_client(shared_mosquitto, "observer") as observer,
    ):
        arrivals: list[float] = []
        inbox: Inbox[Envelope] = Inbox()

        async def on_batch(batch: Envelope) -> None:
            arrivals.append(loop.time())
            inbox.add(batch)

        await observer.subscribe(topic, on_batch, qos=1)
        batcher = BatchingMQTTClient(mqtt, batch_size=10, batch_interval=interval)
        started = loop.time()
        for i in range(3):
            await batcher.publish_batched(topic, {"i": i})
        [batch] = await inbox.wait_for(1)
    assert batch.data == {"items": [{"i": 0}, {"i": 1}, {"i": 2}]}
    assert arrivals[0] - started >= interval


async def test_topics_are_batched_apart_and_shutdown_leaves_nothing_behind(
    shared_mosquitto: MosquittoBroker,
) -> None:
    imu, gps = unique("batch/imu"), unique("batch/gps")
    async with connected_client(shared_mosquitto, "observer") as observer:
        imu_inbox = await collect(observer, imu)
        gps_inbox = await collect(observer, gps)
        mqtt = MQTTClient(shared_mosquitto.url, unique("batcher"))
        await mqtt.connect()
        batcher = BatchingMQTTClient(mqtt, batch_size=3, batch_interval=60)
        for i in range(4):
            await batcher.publish_batched(imu, {"i": i})
        await batcher.publish_batched(gps, {"fix": True})
        [full] = await imu_inbox.wait_for(1)
        assert (batcher.pending(imu), batcher.pending(gps)) == (1, 1)

        await batcher.shutdown()

        assert mqtt.state is ClientState.CLOSED
        [_, imu_rest] = await imu_inbox.wait_for(2)
        [gps_batch] = await gps_inbox.wait_for(1)
    assert full.envelope.data["items"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert imu_rest.envelope.data["items"] == [{"i": 3}]
    assert gps_batch.envelope.data["items"] == [{"fix": True}]
    assert (batcher.pending(imu), batcher.pending(gps)) == (0, 0)
    timers = [t for t in asyncio.all_tasks() if t.get_name().startswith("batch-timer:")]
    assert all(t.done() for t in timers)


def test_batching_refuses_a_useless_configuration() -> None:
    mqtt = MQTTClient("mqtt://localhost:1", "unused")
    with pytest.raises(ValueError, match="batch_size"):
        BatchingMQTTClient(mqtt, batch_size=0)
    with pytest.raises(ValueError, match="batch_interval"):
        BatchingMQTTClient(mqtt, batch_interval=0)


# --- AdvancedMQTTClient -------------------------------------------------------------------------


async def test_subscribe_with_filter_skips_rejected_and_own_messages(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topic = unique("alerts")
    async with (
        connected_client(shared_mosquitto, "advanced") as mqtt,
        connected_client(shared_mosquitto, "peer") as peer,
    ):
        inbox: Inbox[Message] = Inbox()

        async def on_alert(message: Message) -> None:
            inbox.add(message)

        advanced = AdvancedMQTTClient(mqtt)
        await advanced.subscribe_with_filter(f"{topic}/#", is_high, on_alert)
        await mqtt.publish(f"{topic}/battery", b"own", qos=1, properties=HIGH)
        await peer.publish(f"{topic}/battery", b"low", qos=1, properties=LOW)
        await peer.publish(f"{topic}/battery", b"high", qos=1, properties=HIGH)
        await peer.publish(f"{topic}/motor", b"high too", qos=1, properties=HIGH)
        got = await inbox.wait_for(2)
        await advanced.close()
    assert [(m.topic, m.payload) for m in got] == [
        (f"{topic}/battery", b"high"),
        (f"{topic}/motor", b"high too"),
    ]


async def test_filtered_subscriptions_come_back_after_a_reconnect(
    mosquitto_broker: MosquittoBroker,
) -> None:
    topic = unique("alerts")
    mqtt = MQTTClient(mosquitto_broker.url, unique("advanced"), reconnect_min_delay=0.1)
    reconnected = asyncio.Event()

    @mqtt.on_connect
    async def on_connect() -> None:
        if mqtt.stats.connects > 1:
            reconnected.set()

    async with mqtt:
        inbox: Inbox[bytes] = Inbox()

        async def on_alert(message: Message) -> None:
            inbox.add(message.payload)

        advanced = AdvancedMQTTClient(mqtt)
        assert advanced.broker_limits()["max_qos"] == 2
        await advanced.subscribe_with_filter(topic, is_high, on_alert)
        await mosquitto_broker.arestart(kill=True)
        await asyncio.wait_for(reconnected.wait(), 10)
        # Retained, so it reaches the subscription whenever the hook re-sends it.
        async with connected_client(mosquitto_broker, "peer") as peer:
            await peer.publish(topic, b"after restart", qos=1, retain=True, properties=HIGH)
        assert await inbox.wait_for(1) == [b"after restart"]
        await advanced.close()


async def test_the_advanced_client_needs_a_connection() -> None:
    advanced = AdvancedMQTTClient(MQTTClient("mqtt://localhost:1", "offline"))
    with pytest.raises(NotConnectedError):
        advanced.broker_limits()
    with pytest.raises(NotConnectedError):
        await advanced.subscribe_with_filter("alerts/#", is_high, lambda m: asyncio.sleep(0))
    await advanced.close()


# --- main() -------------------------------------------------------------------------------------


async def test_main_exercises_all_three_patterns(shared_mosquitto: MosquittoBroker) -> None:
    script = ROOT / "examples" / "custom_mqtt_wrapper.py"
    async with run_script(script, {"MQTT_URL": shared_mosquitto.url}) as process:
        status = await process.wait(timeout=30)
    output = process.output.decode()
    assert status == 0, output
    assert "batch sizes [10, 10, 5]" in output
    assert "got b'battery at 5%' only" in output
    assert "all three patterns work" in output
