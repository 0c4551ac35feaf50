"""The migration guide's services: before (paho-mqtt, aiomqtt) and after (tars-core) behave alike.

Each of the three runs as its own process against a real Mosquitto, and one scenario drives it
through every pattern the guide covers: health, heartbeat, topic dispatch, dedup, envelopes with
``correlate``, request/response to a (fake) LLM, a retained state topic, a garbage payload, a
broker crash and restart, the last will, and SIGTERM. All three must give the same answers, so
the guide's "after" is a faithful migration and not a different service.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pytest
from docs_tools import MIGRATION_DIR, MIGRATION_DOC, migration_table, region, run_script

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

SERVICES = ["before_paho.py", "before_aiomqtt.py", "after_tars.py"]


def transcript(event_id: str, text: str) -> bytes:
    """A ``stt.final`` envelope with an id of our choosing, so a duplicate is byte-identical."""
    event = {
        "id": event_id,
        "type": "stt.final",
        "ts": time.time(),
        "source": "stt",
        "correlate": None,
        "data": {"text": text, "confidence": 0.9},
    }
    return json.dumps(event).encode()


@dataclass
class Observer:
    """Everything the router sends, as another service (and a fake LLM) sees it."""

    broker: MosquittoBroker
    router_id: str
    client: MQTTClient = field(init=False)
    intents: Inbox[Envelope] = field(default_factory=Inbox)
    says: Inbox[Envelope] = field(default_factory=Inbox)
    llm_requests: Inbox[Envelope] = field(default_factory=Inbox)
    health: Inbox[Message] = field(default_factory=Inbox)
    beats: Inbox[Message] = field(default_factory=Inbox)

    async def __aenter__(self) -> Self:
        # Dedup on, as any QoS 1 consumer: a publish whose PUBACK died with the broker's crash
        # is resent by the service, and the broker may then deliver it twice (at least once).
        self.client = MQTTClient(
            self.broker.url,
            unique("observer"),
            reconnect_min_delay=0.1,
            dedupe_ttl=60,
            dedupe_max_entries=1000,
        )
        await self.client.connect()
        await self.client.subscribe("router/intent", self._intent, qos=1)
        await self.client.subscribe("tts/say", self._say, qos=1)
        await self.client.subscribe("llm/request", self._llm, qos=1)
        await self.client.subscribe(f"system/health/{self.router_id}", self._health, qos=1)
        await self.client.subscribe(f"system/keepalive/{self.router_id}", self._beat)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.publish("router/mode", b"", qos=1, retain=True)  # clear the state
        await self.client.shutdown()

    async def _intent(self, event: Envelope) -> None:
        self.intents.add(event)

    async def _say(self, event: Envelope) -> None:
        self.says.add(event)

    async def _llm(self, request: Message) -> None:
        self.llm_requests.add(request.envelope)
        text = request.envelope.data["text"]
        await self.client.reply(request, "llm.response", {"text": f"answer to {text}"})

    async def _health(self, msg: Message) -> None:
        self.health.add(msg)

    async def _beat(self, msg: Message) -> None:
        self.beats.add(msg)

    async def say(self, event_id: str, text: str) -> None:
        await self.client.publish("stt/final", transcript(event_id, text), qos=1)

    async def set_mode(self, mode: str) -> None:
        await self.client.publish_event(
            "router/mode", "router.mode", {"mode": mode}, qos=1, retain=True
        )

    async def wait_health(self, event: str, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while event not in self.health_events():
                await self.health.wait_for(len(self.health.items) + 1, timeout)

    def health_events(self) -> list[str]:
        """Health events in order, a retained replay of the same status shown once."""
        events: list[str] = []
        for msg in self.health.items:
            name = str(msg.envelope.data["event"])
            if not events or events[-1] != name:
                events.append(name)
        return events


def summary(events: list[Envelope]) -> list[tuple[str | None, str, dict[str, Any]]]:
    return [(e.correlate, e.type, e.data) for e in events]


@pytest.mark.parametrize("service", SERVICES)
async def test_the_service_behaves_the_same_before_and_after_migration(
    mosquitto_broker: MosquittoBroker, service: str
) -> None:
    router_id = unique("router")
    env = {
        "MQTT_URL": mosquitto_broker.url,
        "MQTT_CLIENT_ID": router_id,
        "MQTT_HEARTBEAT_INTERVAL": "1",
        "LLM_TIMEOUT": "5",
    }
    async with (
        Observer(mosquitto_broker, router_id) as observer,
        run_script(MIGRATION_DIR / service, env) as process,
    ):
        await observer.wait_health("ready")
        [beat] = await observer.beats.wait_for(1)

        # Topic dispatch, envelopes with correlate, and a duplicate dropped.
        await observer.say("u1", "what time is it")
        await observer.say("u1", "what time is it")
        await observer.say("u2", "move forward")
        await observer.intents.wait_for(2)
        # Request/response: the LLM's answer is spoken.
        await observer.say("u3", "tell me a joke")
        await observer.says.wait_for(1)
        # A retained state topic: quiet mode asks the LLM but says nothing.
        await observer.set_mode("quiet")
        await observer.say("u4", "tell me a story")
        await observer.say("u4b", "move back")  # handled after u4 is done: a sync point
        await observer.intents.wait_for(5)
        await observer.set_mode("normal")
        await observer.client.publish("stt/final", b"this is not json", qos=1)
        await observer.say("u5", "tell me more")
        await observer.says.wait_for(2)

        # A broker crash: the service comes back by itself and keeps working.
        await mosquitto_broker.arestart(kill=True)
        await observer.wait_health("reconnected")
        await observer.say("u6", "take a picture")
        # After the crash: paho's own reconnect loop waits at least 1 s, then both sides
        # resubscribe; allow what the other reconnect waits allow on a loaded machine.
        intents = await observer.intents.wait_for(7, timeout=15)

        process.terminate(signal.SIGTERM)
        status = await process.wait(timeout=15)
        await observer.wait_health("shutdown")

    output = process.output.decode()
    assert status == 0, output
    assert summary(intents) == [
        ("u1", "router.intent", {"intent": "clock", "text": "what time is it"}),
        ("u2", "router.intent", {"intent": "movement", "text": "move forward"}),
        ("u3", "router.intent", {"intent": "llm", "text": "tell me a joke"}),
        ("u4", "router.intent", {"intent": "llm", "text": "tell me a story"}),
        ("u4b", "router.intent", {"intent": "movement", "text": "move back"}),
        ("u5", "router.intent", {"intent": "llm", "text": "tell me more"}),
        ("u6", "router.intent", {"intent": "camera", "text": "take a picture"}),
    ]
    assert summary(observer.says.items) == [
        ("u3", "tts.say", {"text": "answer to tell me a joke"}),
        ("u5", "tts.say", {"text": "answer to tell me more"}),
    ]
    assert [r.data for r in observer.llm_requests.items] == [
        {"text": "tell me a joke"},
        {"text": "tell me a story"},
        {"text": "tell me more"},
    ]
    assert {e.source for e in [*intents, *observer.says.items]} == {router_id}
    assert observer.health_events() == ["ready", "reconnected", "shutdown"]
    last = observer.health.items[-1].envelope
    assert (last.type, last.data["ok"], last.data.get("err")) == ("health.status", False, None)
    heartbeat = json.loads(beat.payload)
    assert (heartbeat["ok"], heartbeat["event"], sorted(heartbeat)) == (
        True,
        "heartbeat",
        ["event", "ok", "timestamp"],
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_a_crashed_service_is_reported_offline_by_its_will(
    shared_mosquitto: MosquittoBroker, service: str
) -> None:
    router_id = unique("router")
    env = {"MQTT_URL": shared_mosquitto.url, "MQTT_CLIENT_ID": router_id}
    async with (
        Observer(shared_mosquitto, router_id) as observer,
        run_script(MIGRATION_DIR / service, env) as process,
    ):
        await observer.wait_health("ready")
        process.terminate(signal.SIGKILL)
        await process.wait()
        await observer.wait_health("offline")
    will = observer.health.items[-1].envelope
    assert (will.type, will.source, will.data["ok"], will.data["err"]) == (
        "health.status",
        router_id,
        False,
        "connection lost unexpectedly",
    )


def test_the_guide_reports_the_measured_line_counts() -> None:
    assert region(MIGRATION_DOC.read_text(), "measured") == migration_table(), (
        "docs/migration.md is stale: run .venv/bin/python tests/docs/docs_tools.py --write"
    )
