"""MQTT 3.1.1 end to end: a 3.1.1 client and an MQTT 5 one exchange envelopes, request/reply and
health, through the testing kit's broker and through Mosquitto; ``protocol="auto"`` falls back
to 3.1.1 on a 3.1.1-only broker and remembers it (docs/mqtt311.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from mqtt5 import TopicFilter

from support import LoopbackServer
from support.mosquitto_cli import Inbox, MosquittoSub, unique
from tars.mqtt import Envelope, Message, MQTTClient
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker


@contextlib.asynccontextmanager
async def client_of(
    broker: InMemoryBroker | MosquittoBroker, prefix: str, **options: Any
) -> AsyncIterator[MQTTClient]:
    url = options.pop("mqtt_url", broker.url)
    if isinstance(broker, InMemoryBroker):
        client = MQTTClient(url, unique(prefix), connector=broker.connector, **options)
    else:
        client = MQTTClient(url, unique(prefix), **options)
    await client.connect()
    try:
        yield client
    finally:
        await client.shutdown()


async def _exchange(broker: InMemoryBroker | MosquittoBroker) -> None:
    """Envelopes both ways, request/reply both ways, and health, between 3.1.1 and 5."""
    async with (
        client_of(broker, "v311", protocol="3.1.1", enable_health=True) as old,
        client_of(broker, "v5", protocol="5") as new,
    ):
        topic = unique("mixed/events")
        got_old: Inbox[Envelope] = Inbox()
        got_new: Inbox[Envelope] = Inbox()

        r5 = unique("r5")

        async def old_handler(msg: Message) -> None:
            if msg.envelope.type == "ask":
                # An MQTT 5 request reaches a 3.1.1 client without its response topic (the
                # broker drops properties): the responder names the topic (docs/mqtt311.md).
                with pytest.raises(ValueError, match="no response topic"):
                    await old.reply(msg, "answer", {})
                await old.reply(msg, "answer", {"from": "311"}, topic=r5)
            else:
                got_old.add(msg.envelope)

        async def new_handler(msg: Message) -> None:
            if msg.envelope.type == "ask":
                await new.reply(msg, "answer", {"from": "5"})
            else:
                got_new.add(msg.envelope)

        await old.subscribe(f"{topic}/to311", old_handler, qos=1)
        await new.subscribe(f"{topic}/to5", new_handler, qos=1)
        await old.publish_event(f"{topic}/to5", "hello", {"n": 1}, qos=1)
        await new.publish_event(f"{topic}/to311", "hello", {"n": 2}, qos=1)
        assert [e.data for e in await got_new.wait_for(1)] == [{"n": 1}]
        assert [e.data for e in await got_old.wait_for(1)] == [{"n": 2}]
        # request/reply: a 3.1.1 requester has no response topic property; the envelope says.
        answer = await old.request(
            f"{topic}/to5", "ask", {}, response_topic=unique("r311"), timeout=5
        )
        assert answer.data == {"from": "5"}
        assert answer.correlate is not None
        answer = await new.request(f"{topic}/to311", "ask", {}, response_topic=r5, timeout=5)
        assert answer.data == {"from": "311"}
        # health: the 3.1.1 client's retained status, read by the MQTT 5 one.
        seen: Inbox[Envelope] = Inbox()

        async def on_health(msg: Message) -> None:
            seen.add(msg.envelope)

        await new.subscribe(f"system/health/{old.client_id}", on_health)
        status = (await seen.wait_for(1))[0]
        assert status.type == "health.status"
        assert status.data["ok"] is True
        assert old.stats.properties_dropped == 0  # request() used the envelope, not properties


async def test_a_311_client_and_a_5_one_talk_through_the_testing_broker() -> None:
    async with InMemoryBroker() as broker:
        await _exchange(broker)


async def test_auto_falls_back_to_311_and_remembers_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tars.mqtt")
    async with (
        InMemoryBroker(protocols=("3.1.1",)) as broker,
        client_of(broker, "auto") as client,  # protocol="auto" is the default
    ):
        refused = [r for r in caplog.records if "MQTT 5 client refused" in r.message]
        assert len(refused) == 1
        assert any("speaks MQTT 3.1.1" in r.message for r in caplog.records)
        got: Inbox[bytes] = Inbox()

        async def on_message(msg: Message) -> None:
            got.add(msg.payload)

        await client.subscribe("t/+", on_message)
        await client.publish("t/1", b"x", qos=1)
        assert await got.wait_for(1) == [b"x"]
        # A new link to the same broker speaks 3.1.1 at once: no second MQTT 5 attempt.
        connects = client.stats.connects
        await broker.drop_link(client.client_id)
        async with asyncio.timeout(10):
            while client.stats.connects == connects or not client.connected:
                await asyncio.sleep(0.02)
        assert len([r for r in caplog.records if "MQTT 5 client refused" in r.message]) == 1


class SilentTo5(LoopbackServer):
    """A fake broker that closes the link on an MQTT 5 CONNECT without a word (what some
    3.1.1 brokers do, e.g. older RabbitMQ), and accepts a 3.1.1 one."""

    def __init__(self) -> None:
        super().__init__()
        self.levels: Inbox[int] = Inbox()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connect = await reader.read(65536)  # the CONNECT (small: one read on loopback)
            level = connect[8]  # 0x10, a 1-byte length, "\x00\x04MQTT", then the level
            self.levels.add(level)
            if level == 4:
                writer.write(b"\x20\x02\x00\x00")
                await writer.drain()
                await reader.read()  # until the client leaves
        finally:
            writer.close()


async def test_auto_falls_back_when_the_broker_closes_on_an_mqtt5_connect() -> None:
    async with SilentTo5() as broker:
        client = MQTTClient(broker.url, unique("auto"), connect_timeout=5)
        try:
            async with asyncio.timeout(5):
                await client.connect()
            assert client.connected
            assert broker.levels.items == [5, 4]
        finally:
            await client.shutdown()


async def test_auto_speaks_5_to_a_broker_that_does(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tars.mqtt")
    async with InMemoryBroker() as broker, client_of(broker, "auto5"):
        assert any("speaks MQTT 5 with" in r.message for r in caplog.records)


async def test_a_5_only_client_gets_a_clear_error_from_a_311_only_broker() -> None:
    async with InMemoryBroker(protocols=("3.1.1",)) as broker:
        client = MQTTClient(broker.url, unique("v5"), connector=broker.connector, protocol="5")
        with pytest.raises(Exception, match=r"protocol='3.1.1'"):
            await client.connect()
        await client.shutdown()


async def test_mqtt5_only_features_on_311_are_said_not_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        InMemoryBroker() as broker,
        client_of(broker, "props", protocol="3.1.1") as client,
    ):
        got: Inbox[Message] = Inbox()

        async def on_message(msg: Message) -> None:
            got.add(msg)

        await client.subscribe("p/t", on_message)
        for _ in range(2):
            await client.publish("p/t", b"{}", qos=1, properties={"content_type": "x/y"})
        messages = await got.wait_for(2)
        assert messages[0].packet.content_type is None
        assert client.stats.properties_dropped == 2
        said = [r for r in caplog.records if "no PUBLISH properties" in r.message]
        assert len(said) == 1


@pytest.mark.mosquitto
async def test_a_311_client_and_a_5_one_talk_through_mosquitto(
    shared_mosquitto: MosquittoBroker,
) -> None:
    await _exchange(shared_mosquitto)


@pytest.mark.mosquitto
async def test_mosquitto_sub_v311_sees_a_311_clients_messages(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topic = unique("v311/seen")
    async with (
        MosquittoSub(shared_mosquitto, topic, qos=1, version="mqttv311") as sub,
        client_of(shared_mosquitto, "v311pub", protocol="3.1.1") as client,
    ):
        msg_id = await client.publish_event(topic, "note", {"k": "v"}, qos=1)
        captured = (await sub.wait_for(1))[0]
    assert captured.qos == 1
    assert orjson.loads(captured.payload)["id"] == msg_id


@pytest.mark.mosquitto
async def test_a_311_persistent_session_keeps_messages_while_away(
    shared_mosquitto: MosquittoBroker,
) -> None:
    # session_expiry_interval > 0 is a 3.1.1 session that is not clean: Mosquitto keeps the
    # subscription and queues QoS 1 messages while the client is away.
    client_id = unique("v311persist")
    topic = unique("v311/persist")
    got: Inbox[bytes] = Inbox()

    async def on_message(msg: Message) -> None:
        got.add(msg.payload)

    options: dict[str, Any] = {"protocol": "3.1.1", "session_expiry_interval": 3600}
    client = MQTTClient(shared_mosquitto.url, client_id, clean_start=False, **options)
    await client.connect()
    await client.subscribe(topic, on_message, qos=1)
    await client.shutdown()
    async with client_of(shared_mosquitto, "v311sender", protocol="3.1.1") as sender:
        await sender.publish(topic, b"while-away", qos=1)
    client = MQTTClient(shared_mosquitto.url, client_id, clean_start=False, **options)
    await client.subscribe(topic, on_message, qos=1)
    await client.connect()
    try:
        assert await got.wait_for(1) == [b"while-away"]
    finally:
        await client.shutdown()


async def test_a_url_names_its_brokers_version(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tars.mqtt")
    async with (
        InMemoryBroker(protocols=("3.1.1",)) as broker,
        # The client's option says MQTT 5; this broker's URL says 3.1.1, and wins for it.
        client_of(broker, "perurl", protocol="5", mqtt_url=f"{broker.url}?protocol=3.1.1"),
    ):
        assert not [r for r in caplog.records if "MQTT 5 client refused" in r.message]
        assert any("speaks MQTT 3.1.1" in r.message for r in caplog.records)


async def test_the_link_view_refuses_what_only_mqtt5_can_say() -> None:
    async with (
        InMemoryBroker() as broker,
        client_of(broker, "view", protocol="3.1.1") as client,
    ):
        view = client.client
        assert view is not None
        assert await view.subscribe("plain/t", qos=1) == (1,)
        with pytest.raises(ValueError, match="MQTT 5 only"):
            await view.subscribe("x/y", subscription_id=7)
        with pytest.raises(ValueError, match="MQTT 5 only"):
            await view.subscribe(TopicFilter("x/y", no_local=True))
        with pytest.raises(ValueError, match="MQTT 5 only"):
            await view.unsubscribe("plain/t", user_properties=[("k", "v")])
        assert await view.unsubscribe("plain/t") == (0,)


class RefusesSubscriptions(LoopbackServer):
    """A 3.1.1 fake broker that takes the CONNECT and then closes the link on the SUBSCRIBE,
    the first ``refusals`` times (what RabbitMQ 3.10 does while the node that holds the client
    id's queue is down), and grants it afterwards."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.subscribes: Inbox[str] = Inbox()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(65536)  # the CONNECT (small: one read on loopback)
            writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
            header = await reader.readexactly(2)  # SUBSCRIBE, a 1-byte remaining length here
            body = await reader.readexactly(header[1])
            assert header[0] == 0x82, header
            if self.refusals > 0:
                self.refusals -= 1
                self.subscribes.add("refused")
                return  # a bare close: 3.1.1 has no way to refuse a SUBSCRIBE
            self.subscribes.add("granted")
            writer.write(b"\x90\x03" + body[:2] + b"\x01")  # SUBACK, QoS 1 granted
            await writer.drain()
            while await reader.read(65536):  # until the client leaves
                pass
        finally:
            writer.close()


async def test_a_link_closed_on_its_subscribe_is_said_and_retried_until_granted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not "connected" and silent: a refusal is a failed attempt, logged (a WARNING first) with
    the broker named (redacted) and what a 3.1.1 broker means by it; the client is connected
    once it is granted, and says after how many attempts."""
    caplog.set_level(logging.INFO, "tars.mqtt")
    async with RefusesSubscriptions(refusals=2) as broker:
        url = f"mqtt://svc:s3cret@{broker.host}:{broker.port}"
        client = MQTTClient(
            url,
            unique("refused"),
            protocol="3.1.1",
            reconnect_min_delay=0.05,
            reconnect_max_delay=0.2,
        )

        async def on_message(msg: Message) -> None:
            pass

        await client.subscribe("jobs/x", on_message, qos=1)
        try:
            async with asyncio.timeout(10):
                await client.connect()
            assert client.connected
            assert broker.subscribes.items == ["refused", "refused", "granted"]
            said = [r for r in caplog.records if "before it was ready" in r.getMessage()]
            # A failed attempt like any other: WARNING first, INFO for the repeats.
            assert [r.levelno for r in said] == [logging.WARNING, logging.INFO]
            first = said[0].getMessage()
            assert f"mqtt://svc:***@{broker.host}:{broker.port}" in first
            assert "RabbitMQ" in first  # what such a close means, for the reader of the log
            healed = [r for r in caplog.records if "after failed attempts" in r.getMessage()]
            assert len(healed) == 1
            assert "s3cret" not in caplog.text
        finally:
            await client.shutdown()
