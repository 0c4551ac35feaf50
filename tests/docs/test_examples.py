"""examples/request_response.py and examples/mini_fleet.py run, and do what their docs say."""

from __future__ import annotations

import re

import pytest
from docs_tools import ROOT, run_script
from mini_fleet import run_fleet
from request_response import serve_clock

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import Message
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("request_response.py", "nobody/home did not answer within 0.5 s"),
        ("mini_fleet.py", "-> spoke 'joke a me tell'"),
    ],
)
async def test_example_runs_against_a_broker(
    shared_mosquitto: MosquittoBroker, script: str, expected: str
) -> None:
    async with run_script(ROOT / "examples" / script, {"MQTT_URL": shared_mosquitto.url}) as proc:
        status = await proc.wait(timeout=30)
    output = proc.output.decode()
    assert status == 0, output
    assert expected in output


async def test_the_clock_answers_each_request_with_its_id_as_correlate(
    shared_mosquitto: MosquittoBroker,
) -> None:
    async with (
        connected_client(shared_mosquitto, "clock") as clock,
        connected_client(shared_mosquitto, "asker") as asker,
        connected_client(shared_mosquitto, "observer") as observer,
    ):
        requests: Inbox[Message] = Inbox()

        async def on_request(msg: Message) -> None:
            requests.add(msg)

        await observer.subscribe("clock/query", on_request, qos=1)
        await serve_clock(clock)
        inbox = unique("clock/answers")
        answer = await asker.request(
            "clock/query", "clock.query", {"format": "%Y"}, response_topic=inbox, timeout=5
        )
        [request] = await requests.wait_for(1)
    assert request.packet.response_topic == inbox
    assert (answer.type, answer.source, answer.correlate) == (
        "clock.answer",
        clock.client_id,
        request.envelope.id,
    )
    assert re.fullmatch(r"\d{4}", answer.data["utc"])


async def test_the_fleet_passes_each_utterance_down_the_chain(
    shared_mosquitto: MosquittoBroker,
) -> None:
    topics = ["wake/detected", "stt/final", "llm/request", "tts/say", "tts/done"]
    prefix = unique("fleet")
    async with connected_client(shared_mosquitto, "observer") as observer:
        seen: Inbox[Message] = Inbox()
        health: Inbox[Message] = Inbox()

        async def on_event(msg: Message) -> None:
            seen.add(msg)

        async def on_health(msg: Message) -> None:
            if msg.topic.startswith(f"system/health/{prefix}-") and not msg.retain:
                health.add(msg)

        for topic in topics:
            await observer.subscribe(topic, on_event, qos=1)
        await observer.subscribe("system/health/+", on_health, qos=1)

        said = await run_fleet(shared_mosquitto.url, ["tell me a joke"], prefix=prefix)
        events = await seen.wait_for(len(topics))
        statuses = await health.wait_for(10)  # ready, then shutdown, for each of 5 clients

    assert said == ["joke a me tell"]
    by_topic = {m.topic: m.envelope for m in events}
    wake, final = by_topic["wake/detected"], by_topic["stt/final"]
    ask, say, done = by_topic["llm/request"], by_topic["tts/say"], by_topic["tts/done"]
    assert final.correlate == wake.id
    assert final.data["text"] == "tell me a joke"
    assert ask.data == {"prompt": "tell me a joke"}
    assert say.correlate == final.id
    assert say.data == {"text": "joke a me tell"}
    assert done.correlate == say.id
    events_by_client: dict[str, list[str]] = {}
    for status in statuses:
        events_by_client.setdefault(status.topic, []).append(status.envelope.data["event"])
    assert sorted(events_by_client) == sorted(
        f"system/health/{prefix}-{name}" for name in ("wake", "stt", "router", "llm", "tts")
    )
    assert all(evs == ["ready", "shutdown"] for evs in events_by_client.values())
