"""A miniature TARS fleet: wake -> stt -> router -> llm -> tts, each service a few lines.

Every service has its own client (as it would have its own process), health on, and only
fake payloads: the wake event carries what was "said", the LLM reverses words. Each event's
``correlate`` is the id of the event that caused it, so a chain can be followed end to end.

    wake/detected --> stt --> stt/final --> router --(time)----------------> tts/say --> tts
                                              \\--request llm/request--> llm --/        tts/done

Run it against a broker::

    MQTT_URL=mqtt://localhost:1883 python examples/mini_fleet.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from tars.mqtt import Envelope, Message, MQTTClient

Service = Callable[[MQTTClient], Awaitable[None]]


async def stt(mqtt: MQTTClient) -> None:
    """Speech to text (fake): the wake event already says what was heard."""

    async def on_wake(wake: Envelope) -> None:
        data = {"text": wake.data["utterance"], "confidence": 0.95}
        await mqtt.publish_event("stt/final", "stt.final", data, correlation_id=wake.id, qos=1)

    await mqtt.subscribe("wake/detected", on_wake, qos=1)


async def router(mqtt: MQTTClient) -> None:
    """Answers what it can (the time), asks the LLM for the rest."""

    async def on_final(final: Envelope) -> None:
        text = final.data["text"]
        if "time" in text:
            reply = "It is time to go."
        else:
            answer = await mqtt.request(
                "llm/request", "llm.request", {"prompt": text}, response_topic="llm/answers/router"
            )
            reply = answer.data["text"]
        await mqtt.publish_event("tts/say", "tts.say", {"text": reply}, correlation_id=final.id)

    await mqtt.subscribe("stt/final", on_final, qos=1)


async def llm(mqtt: MQTTClient) -> None:
    """A language model (fake): it reverses the words of the prompt."""

    async def on_request(request: Message) -> None:
        words = request.envelope.data["prompt"].split()
        await mqtt.reply(request, "llm.response", {"text": " ".join(reversed(words))})

    await mqtt.subscribe("llm/request", on_request, qos=1)


async def tts(mqtt: MQTTClient) -> None:
    """Text to speech (fake): "speaks" and says so on tts/done."""

    async def on_say(say: Envelope) -> None:
        await mqtt.publish_event("tts/done", "tts.done", say.data, correlation_id=say.id, qos=1)

    await mqtt.subscribe("tts/say", on_say, qos=1)


SERVICES: dict[str, Service] = {"stt": stt, "router": router, "llm": llm, "tts": tts}


@contextlib.asynccontextmanager
async def fleet(url: str, prefix: str = "fleet") -> AsyncIterator[MQTTClient]:
    """Start every service, each on its own client; yield the wake word detector's client."""
    clients = [MQTTClient(url, f"{prefix}-{name}", enable_health=True) for name in SERVICES]
    wake = MQTTClient(url, f"{prefix}-wake", enable_health=True)
    async with contextlib.AsyncExitStack() as stack:
        for client, service in zip(clients, SERVICES.values(), strict=True):
            await service(client)  # subscriptions made before connect are sent on connect
            await stack.enter_async_context(client)
        yield await stack.enter_async_context(wake)


async def run_fleet(url: str, utterances: list[str], prefix: str = "fleet") -> list[str]:
    """Say each utterance to the fleet; return what TTS spoke, in order."""
    spoken: asyncio.Queue[Envelope] = asyncio.Queue()

    async def on_done(done: Envelope) -> None:
        await spoken.put(done)

    async with fleet(url, prefix) as wake:
        await wake.subscribe("tts/done", on_done, qos=1)
        said = []
        for utterance in utterances:
            data = {"wake_word": "tars", "utterance": utterance}
            await wake.publish_event("wake/detected", "wake.detected", data, qos=1)
            done = await asyncio.wait_for(spoken.get(), 10)
            print(f"heard {utterance!r:32} -> spoke {done.data['text']!r}")
            said.append(str(done.data["text"]))
    return said


def main() -> int:
    url = os.environ.get("MQTT_URL", "mqtt://localhost:1883")
    said = asyncio.run(run_fleet(url, ["what time is it", "tell me a joke"]))
    return 0 if said == ["It is time to go.", "joke a me tell"] else 1


if __name__ == "__main__":
    sys.exit(main())
