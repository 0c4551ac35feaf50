"""intent-router, as it was written against aiomqtt 2.x: the other "before" of docs/migration.md.

The same service as before_paho.py (see its docstring for what it does), in asyncio: a
reconnect loop around ``async with client``, a message loop dispatching on topics, a worker task
so a handler can wait for the LLM while messages keep flowing, a heartbeat task, and signal
handlers. ``# [pattern]`` comments mark the MQTT patterns for the guide's line counts.
"""

# [setup]
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlparse

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger("intent-router")

url = urlparse(os.environ["MQTT_URL"])
HOST, PORT = url.hostname or "localhost", url.port or 1883
USERNAME = unquote(url.username) if url.username else None
PASSWORD = unquote(url.password) if url.password else None
CLIENT_ID = os.environ.get("MQTT_CLIENT_ID", "router")
HEARTBEAT_INTERVAL = float(os.environ.get("MQTT_HEARTBEAT_INTERVAL", "5"))
HEALTH_TOPIC = f"system/health/{CLIENT_ID}"
KEEPALIVE_TOPIC = f"system/keepalive/{CLIENT_ID}"
RESPONSE_TOPIC = f"llm/response/{CLIENT_ID}"

# [app]
LLM_TIMEOUT = float(os.environ.get("LLM_TIMEOUT", "5"))
INTENTS = {"time": "clock", "move": "movement", "picture": "camera"}
state = {"mode": "normal"}


def classify(text: str) -> str:
    return next((intent for word, intent in INTENTS.items() if word in text), "llm")


def on_mode(event: dict[str, Any]) -> None:
    state["mode"] = str(event["data"].get("mode", "normal"))


async def on_transcript(client: aiomqtt.Client, event: dict[str, Any]) -> None:
    text = str(event["data"]["text"])
    intent = classify(text)
    data = {"intent": intent, "text": text}
    await publish_event(client, "router/intent", "router.intent", data, event["id"], qos=1)
    if intent != "llm":
        return
    answer = await request(client, "llm/request", "llm.request", {"text": text}, LLM_TIMEOUT)
    if answer is None:
        log.warning("the LLM did not answer %r", text)
    elif state["mode"] != "quiet":
        say = {"text": answer["data"]["text"]}
        await publish_event(client, "tts/say", "tts.say", say, event["id"], qos=1)


# [envelope]
def envelope(
    event_type: str, data: dict[str, Any], correlate: str | None = None
) -> tuple[str, bytes]:
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "type": event_type,
        "ts": time.time(),
        "source": CLIENT_ID,
        "correlate": correlate,
        "data": data,
    }
    return event_id, json.dumps(event).encode()


def parse_envelope(payload: Any) -> dict[str, Any] | None:
    try:
        event = json.loads(payload)
    except (TypeError, ValueError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return None
    if not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
        return None
    return event


# [publish]
async def publish_event(
    client: aiomqtt.Client,
    topic: str,
    event_type: str,
    data: dict[str, Any],
    correlate: str | None = None,
    *,
    qos: int = 0,
) -> None:
    _, payload = envelope(event_type, data, correlate)
    try:
        await client.publish(topic, payload, qos=qos)
    except aiomqtt.MqttError as exc:
        log.warning("could not publish to %s: %s", topic, exc)


# [dedup]
DEDUP_TTL = 60.0
seen: dict[str, float] = {}


def is_duplicate(event_id: str) -> bool:
    now = time.monotonic()
    for key, when in list(seen.items()):
        if now - when > DEDUP_TTL:
            del seen[key]
    if event_id in seen:
        return True
    seen[event_id] = now
    return False


# [request]
pending: dict[str, asyncio.Future[dict[str, Any]]] = {}


async def request(
    client: aiomqtt.Client, topic: str, event_type: str, data: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    request_id, payload = envelope(event_type, data)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = RESPONSE_TOPIC
    properties.CorrelationData = request_id.encode()
    answer = pending[request_id] = asyncio.get_running_loop().create_future()
    try:
        await client.publish(topic, payload, qos=1, properties=properties)
        return await asyncio.wait_for(answer, timeout)
    except (TimeoutError, aiomqtt.MqttError):
        return None
    finally:
        pending.pop(request_id, None)


def on_response(event: dict[str, Any]) -> None:
    answer = pending.pop(str(event.get("correlate")), None)
    if answer is not None and not answer.done():
        answer.set_result(event)


# [subscribe]
SUBSCRIPTIONS = [
    ("stt/final", SubscribeOptions(qos=1)),
    ("router/mode", SubscribeOptions(qos=1)),
    (RESPONSE_TOPIC, SubscribeOptions(qos=1)),
]
transcripts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()


async def read_messages(client: aiomqtt.Client) -> None:
    async for message in client.messages:
        event = parse_envelope(message.payload)
        if event is None:
            log.warning("ignoring a message that is not an envelope on %s", message.topic)
        elif message.topic.matches(RESPONSE_TOPIC):
            on_response(event)
        elif message.topic.matches("router/mode"):
            on_mode(event)
        elif message.topic.matches("stt/final") and not is_duplicate(event["id"]):
            transcripts.put_nowait(event)


async def transcript_worker(client: aiomqtt.Client) -> None:
    while True:
        event = await transcripts.get()
        try:
            await on_transcript(client, event)
        except Exception:
            log.exception("failed to handle transcript %s", event.get("id"))


# [health]
def health(ok: bool, event: str, error: str | None = None) -> bytes:
    status = {"ok": ok, "event": event, "err": error, "timestamp": time.time()}
    return envelope("health.status", status)[1]


async def publish_health(client: aiomqtt.Client, ok: bool, event: str) -> None:
    await client.publish(HEALTH_TOPIC, health(ok, event), qos=1, retain=True)


# [heartbeat]
async def send_heartbeat(client: aiomqtt.Client) -> None:
    beat = {"ok": True, "event": "heartbeat", "timestamp": time.time()}
    await client.publish(KEEPALIVE_TOPIC, json.dumps(beat), qos=0)


async def heartbeat_loop(client: aiomqtt.Client) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        if connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):  # the connection loop will notice
                await send_heartbeat(client)


# [connection]
connected = asyncio.Event()


async def connection_loop(client: aiomqtt.Client) -> None:
    first, delay = True, 0.5
    while not stopping.is_set():
        try:
            async with client:
                await client.subscribe(SUBSCRIPTIONS)
                await publish_health(client, True, "ready" if first else "reconnected")
                await send_heartbeat(client)
                connected.set()
                first, delay = False, 0.5
                reader = asyncio.create_task(read_messages(client))
                stop = asyncio.create_task(stopping.wait())
                await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
                connected.clear()
                stop.cancel()
                if stopping.is_set():
                    # [shutdown]
                    reader.cancel()
                    await publish_health(client, False, "shutdown")
                    return
                # [connection]
                reader.result()  # raises the MqttError that ended the message loop
        except aiomqtt.MqttError as exc:
            connected.clear()
            log.warning("lost the broker (%s); reconnecting in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# [shutdown]
stopping = asyncio.Event()


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    # [connection]
    client = aiomqtt.Client(
        HOST,
        PORT,
        username=USERNAME,
        password=PASSWORD,
        identifier=CLIENT_ID,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        # [health]
        will=aiomqtt.Will(
            HEALTH_TOPIC, health(False, "offline", "connection lost unexpectedly"), 1, True
        ),
    )
    # [subscribe]
    worker = asyncio.create_task(transcript_worker(client))
    # [heartbeat]
    beats = asyncio.create_task(heartbeat_loop(client))
    # [shutdown]
    try:
        await connection_loop(client)
    finally:
        for task in (worker, beats):
            task.cancel()
        await asyncio.gather(worker, beats, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
