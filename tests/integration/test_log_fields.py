"""WARNING/ERROR lines carry ``extra`` fields a log pipeline can search (and reason names)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, Message, MQTTClient, NoRetry
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker


@pytest.mark.mosquitto
async def test_a_failing_handler_logs_the_message_fields(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("logs"))
    topic = unique("logs/t")
    got: Inbox[str] = Inbox()

    async def handler(event: Envelope) -> None:
        got.add(event.id)
        raise RuntimeError("handler bug")

    sub = await client.subscribe(topic, handler, qos=1)
    with caplog.at_level(logging.WARNING, logger="tars.mqtt"):
        async with client:
            msg_id = await client.publish_event(topic, "t", {}, correlation_id="req-1", qos=1)
            await got.wait_for(1)
            await sub.join()
    (record,) = [r for r in caplog.records if "failed on topic" in r.getMessage()]
    assert record.levelno == logging.ERROR
    fields = {k: getattr(record, k) for k in ("client_id", "topic", "topic_filter")}
    assert fields == {"client_id": client.client_id, "topic": topic, "topic_filter": topic}
    assert record.envelope_id == msg_id  # type: ignore[attr-defined]
    assert record.correlation_id == "req-1"  # type: ignore[attr-defined]


@pytest.mark.mosquitto
async def test_a_request_without_an_envelope_correlate_logs_its_mqtt_correlation(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    asker = MQTTClient(shared_mosquitto.url, unique("asker"))
    server = MQTTClient(shared_mosquitto.url, unique("server"), handler_timeout=0.1)
    topic = unique("logs/ask")
    got: Inbox[str] = Inbox()

    async def hang(request: Message) -> None:
        got.add(request.envelope.id)
        await asyncio.sleep(5)

    sub = await server.subscribe(topic, hang, qos=1)
    with caplog.at_level(logging.WARNING, logger="tars.mqtt"):
        async with server, asker:
            with pytest.raises(TimeoutError):
                await asker.request(topic, "q", {}, response_topic=unique("logs/a"), timeout=0.5)
            (request_id,) = await got.wait_for(1)
            await sub.join()
    (record,) = [r for r in caplog.records if "timed out" in r.getMessage()]
    assert record.client_id == server.client_id  # type: ignore[attr-defined]
    assert record.envelope_id == request_id  # type: ignore[attr-defined]
    assert record.correlation_id == request_id  # type: ignore[attr-defined]


async def test_a_lost_link_names_the_broker_and_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The development broker says DISCONNECT 0x8B when it stops, as a broker being shut down
    does (Mosquitto 2.0.11 just closes the socket)."""
    broker = InMemoryBroker()
    await broker.start()
    client = MQTTClient(broker.url, unique("lost"), connector=broker.connector, backoff=NoRetry())
    with caplog.at_level(logging.WARNING, logger="tars.mqtt"):
        await client.connect()
        try:
            await broker.close()
            await asyncio.wait_for(client.wait_for_disconnect(), 5)
        finally:
            await client.shutdown()
    (record,) = [r for r in caplog.records if "lost its link" in r.getMessage()]
    assert "reason code 0x8b Server shutting down" in record.getMessage()
    assert record.client_id == client.client_id  # type: ignore[attr-defined]
    assert record.broker == client.broker  # type: ignore[attr-defined]
