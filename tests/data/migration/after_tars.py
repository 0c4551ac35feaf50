"""intent-router, migrated to tars-core: the "after" of docs/migration.md.

Same behaviour on the wire as before_paho.py and before_aiomqtt.py (tests/docs/test_migration.py
checks it): transcripts to intents, LLM requests, ``quiet`` mode, health, heartbeat, dedup,
reconnection, graceful shutdown. Same environment variables; ``MQTT_HEARTBEAT_INTERVAL`` is
read by ``from_env`` itself. ``# [pattern]`` comments mark the MQTT patterns for the guide's
line counts.
"""

# [setup]
import asyncio
import logging
import os

from tars.mqtt import Envelope, MQTTClient

log = logging.getLogger("intent-router")

# [connection]
client = MQTTClient.from_env(
    # [health]
    enable_health=True,
    # [heartbeat]
    enable_heartbeat=True,
    # [dedup]
    dedupe_ttl=60.0,
    dedupe_max_entries=10_000,
    # [connection]
)

# [app]
LLM_TIMEOUT = float(os.environ.get("LLM_TIMEOUT", "5"))
INTENTS = {"time": "clock", "move": "movement", "picture": "camera"}
state = {"mode": "normal"}


def classify(text: str) -> str:
    return next((intent for word, intent in INTENTS.items() if word in text), "llm")


async def on_mode(event: Envelope) -> None:
    state["mode"] = str(event.data.get("mode", "normal"))


async def on_transcript(event: Envelope) -> None:
    text = str(event.data["text"])
    intent = classify(text)
    data = {"intent": intent, "text": text}
    await client.publish_event(
        "router/intent", "router.intent", data, correlation_id=event.id, qos=1
    )
    if intent != "llm":
        return
    # [request]
    try:
        answer = await client.request(
            "llm/request",
            "llm.request",
            {"text": text},
            response_topic=f"llm/response/{client.client_id}",
            timeout=LLM_TIMEOUT,
        )
    except TimeoutError:
        log.warning("the LLM did not answer %r", text)
        return
    # [app]
    if state["mode"] != "quiet":
        say = {"text": answer.data["text"]}
        await client.publish_event("tts/say", "tts.say", say, correlation_id=event.id, qos=1)


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    # [subscribe]
    await client.subscribe("stt/final", on_transcript, qos=1)
    await client.subscribe("router/mode", on_mode, qos=1)
    # [shutdown]
    await client.run_forever()


if __name__ == "__main__":
    asyncio.run(main())
