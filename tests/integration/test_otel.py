"""``tars.mqtt.otel``: one trace across services, through a real broker, as an exporter sees it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Message, MQTTClient
from tars.mqtt.otel import instrument
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    yield spans
    spans.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


async def test_request_handling_and_reply_form_one_trace(
    shared_mosquitto: MosquittoBroker, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    requester = MQTTClient(shared_mosquitto.url, unique("asker"))
    responder = MQTTClient(shared_mosquitto.url, unique("answerer"))
    instrument(requester, tracer_provider=provider)
    instrument(responder, tracer_provider=provider)
    topic, answers = unique("otel/ask"), unique("otel/answers")

    async def answer(request: Message) -> None:
        await responder.reply(request, "pong", {"n": request.envelope.data["n"] + 1})

    sub = await responder.subscribe(topic, answer, qos=1)
    async with responder, requester:
        with provider.get_tracer("test").start_as_current_span("caller") as caller:
            reply = await requester.request(topic, "ping", {"n": 1}, response_topic=answers)
        await sub.join()  # the responder's CONSUMER span ends when its handler is done
    assert reply.data == {"n": 2}

    spans = exporter.get_finished_spans()
    request_span = one(spans, f"publish {topic}")
    process_span = one(spans, f"process {topic}")
    reply_span = one(spans, f"publish {answers}")
    trace_id = caller.get_span_context().trace_id
    assert {s.context.trace_id for s in (request_span, process_span, reply_span)} == {trace_id}
    assert parent_of(request_span) == caller.get_span_context().span_id
    assert parent_of(process_span) == request_span.context.span_id
    assert process_span.parent is not None
    assert process_span.parent.is_remote
    assert parent_of(reply_span) == process_span.context.span_id

    assert request_span.kind is SpanKind.PRODUCER
    assert process_span.kind is SpanKind.CONSUMER
    assert reply_span.kind is SpanKind.PRODUCER
    assert request_span.attributes is not None
    assert process_span.attributes is not None
    assert reply_span.attributes is not None
    request_id = request_span.attributes["messaging.message.id"]
    assert dict(process_span.attributes) == {
        "messaging.system": "mqtt",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.subscription.name": topic,
        "messaging.client.id": responder.client_id,
        "messaging.mqtt.qos": 1,
        "messaging.message.body.size": process_span.attributes["messaging.message.body.size"],
        "messaging.message.id": request_id,
        "tars.mqtt.outcome": "handled",
    }
    assert request_span.attributes["messaging.system"] == "mqtt"
    assert request_span.attributes["messaging.destination.name"] == topic
    assert request_span.attributes["messaging.client.id"] == requester.client_id
    assert reply_span.attributes["messaging.destination.name"] == answers
    assert reply_span.attributes["messaging.message.conversation_id"] == request_id
    assert reply_span.attributes["messaging.message.id"] == reply.id
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)


async def test_the_trace_context_travels_as_user_properties(
    shared_mosquitto: MosquittoBroker, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """What another MQTT 5 client (another language) sees: a W3C ``traceparent``."""
    sender = MQTTClient(shared_mosquitto.url, unique("sender"))
    listener = MQTTClient(shared_mosquitto.url, unique("listener"))  # not instrumented
    instrument(sender, tracer_provider=provider)
    topic = unique("otel/plain")
    got: Inbox[Message] = Inbox()

    async def handler(message: Message) -> None:
        got.add(message)

    await listener.subscribe(topic, handler, qos=1)
    async with listener, sender:
        msg_id = await sender.publish_event(topic, "t", {}, qos=1)
        (message,) = await got.wait_for(1)
    (span,) = exporter.get_finished_spans()
    properties = dict(message.packet.user_properties)
    context = span.get_span_context()
    assert properties["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    assert span.parent is None  # no current span: the publish starts a trace
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == msg_id


async def test_a_failing_handler_marks_its_span(
    shared_mosquitto: MosquittoBroker, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    client = MQTTClient(shared_mosquitto.url, unique("failing"))
    instrument(client, tracer_provider=provider)
    topic = unique("otel/fail")
    got: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        got.add(payload)
        raise RuntimeError("boom")

    sub = await client.subscribe(topic, handler, qos=1)
    async with client:
        await client.publish(topic, b"x", qos=1)
        await client.publish(topic, b"y", qos=1)
        await got.wait_for(2)
        await sub.join()  # the second call has ended, its span too
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(spans) == 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["tars.mqtt.outcome"] == "failed"
        assert span.parent is not None  # each a child of its publish, even a raw payload
    producers = {
        s.context.span_id for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER
    }
    assert {parent_of(s) for s in spans} == producers


def test_without_the_extra_the_import_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n    import tars.mqtt.otel\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tars-core[otel]'" in out.stdout
