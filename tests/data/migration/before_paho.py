"""intent-router, as it was written against paho-mqtt 2.x: the "before" of docs/migration.md.

A realistic hand-written TARS service (test data: run by tests/docs/test_migration.py next to
its aiomqtt twin and its tars-core migration, which must behave the same on the wire):

- ``stt/final`` transcripts (envelopes, QoS 1, de-duplicated by id) are classified into an
  intent, published as ``router.intent`` on ``router/intent`` (``correlate`` = transcript id);
- "llm" intents are sent to the LLM as a request (``llm/request``, MQTT 5 response topic and
  correlation data) and its answer spoken: ``tts.say`` on ``tts/say``, unless the retained
  ``router/mode`` state says ``quiet``;
- retained health on ``system/health/{client_id}`` (ready, reconnected, shutdown, and an
  ``offline`` will), heartbeats on ``system/keepalive/{client_id}``;
- reconnects by itself; SIGINT/SIGTERM shut it down gracefully (exit status 0).

Environment: ``MQTT_URL``, ``MQTT_CLIENT_ID``, ``MQTT_HEARTBEAT_INTERVAL``, ``LLM_TIMEOUT``.
``# [pattern]`` comments mark which MQTT pattern the code below them implements; the guide's
line counts are computed from them.
"""

# [setup]
import json
import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
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


def on_transcript(event: dict[str, Any]) -> None:
    text = str(event["data"]["text"])
    intent = classify(text)
    data = {"intent": intent, "text": text}
    publish_event("router/intent", "router.intent", data, correlate=event["id"], qos=1)
    if intent != "llm":
        return
    answer = request("llm/request", "llm.request", {"text": text}, LLM_TIMEOUT)
    if answer is None:
        log.warning("the LLM did not answer %r", text)
    elif state["mode"] != "quiet":
        say = {"text": answer["data"]["text"]}
        publish_event("tts/say", "tts.say", say, correlate=event["id"], qos=1)


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


def parse_envelope(payload: bytes | bytearray) -> dict[str, Any] | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return None
    if not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
        return None
    return event


# [publish]
def publish_event(
    topic: str,
    event_type: str,
    data: dict[str, Any],
    *,
    correlate: str | None = None,
    qos: int = 0,
    retain: bool = False,
    properties: Properties | None = None,
) -> mqtt.MQTTMessageInfo:
    _, payload = envelope(event_type, data, correlate)
    info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        log.warning("publish to %s not sent now: %s", topic, mqtt.error_string(info.rc))
    return info


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
pending: dict[str, Future[dict[str, Any]]] = {}
pending_lock = threading.Lock()


def request(
    topic: str, event_type: str, data: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    request_id, payload = envelope(event_type, data)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = RESPONSE_TOPIC
    properties.CorrelationData = request_id.encode()
    answer: Future[dict[str, Any]] = Future()
    with pending_lock:
        pending[request_id] = answer
    try:
        client.publish(topic, payload, qos=1, properties=properties)
        return answer.result(timeout)
    except TimeoutError:
        return None
    finally:
        with pending_lock:
            pending.pop(request_id, None)


def on_response(event: dict[str, Any]) -> None:
    with pending_lock:
        answer = pending.pop(str(event.get("correlate")), None)
    if answer is not None:
        answer.set_result(event)


# [subscribe]
SUBSCRIPTIONS = [
    ("stt/final", SubscribeOptions(qos=1)),
    ("router/mode", SubscribeOptions(qos=1)),
    (RESPONSE_TOPIC, SubscribeOptions(qos=1)),
]
worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router")


def on_message(client: mqtt.Client, userdata: None, msg: mqtt.MQTTMessage) -> None:
    event = parse_envelope(msg.payload)
    if event is None:
        log.warning("ignoring a message that is not an envelope on %s", msg.topic)
    elif msg.topic == RESPONSE_TOPIC:
        on_response(event)
    elif msg.topic == "router/mode":
        on_mode(event)
    elif msg.topic == "stt/final" and not is_duplicate(event["id"]):
        worker.submit(on_transcript, event)


# [health]
def health(ok: bool, event: str, error: str | None = None) -> bytes:
    status = {"ok": ok, "event": event, "err": error, "timestamp": time.time()}
    return envelope("health.status", status)[1]


def publish_health(ok: bool, event: str) -> mqtt.MQTTMessageInfo:
    return client.publish(HEALTH_TOPIC, health(ok, event), qos=1, retain=True)


# [heartbeat]
def send_heartbeat() -> None:
    beat = {"ok": True, "event": "heartbeat", "timestamp": time.time()}
    client.publish(KEEPALIVE_TOPIC, json.dumps(beat), qos=0)


def heartbeat_loop() -> None:
    while not stopping.wait(HEARTBEAT_INTERVAL):
        if client.is_connected():
            send_heartbeat()


# [connection]
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID, protocol=mqtt.MQTTv5)
if USERNAME:
    client.username_pw_set(USERNAME, PASSWORD)
client.reconnect_delay_set(min_delay=1, max_delay=5)
connected_once = threading.Event()


def on_connect(
    client: mqtt.Client,
    userdata: None,
    flags: mqtt.ConnectFlags,
    reason_code: ReasonCode,
    properties: Properties | None,
) -> None:
    if reason_code.is_failure:
        log.error("broker refused the connection: %s", reason_code)
        return
    client.subscribe(SUBSCRIPTIONS)
    publish_health(True, "reconnected" if connected_once.is_set() else "ready")
    connected_once.set()
    send_heartbeat()


def on_disconnect(
    client: mqtt.Client,
    userdata: None,
    flags: mqtt.DisconnectFlags,
    reason_code: ReasonCode,
    properties: Properties | None,
) -> None:
    if not stopping.is_set():
        log.warning("lost the broker (%s); paho reconnects", reason_code)


client.on_connect = on_connect
client.on_disconnect = on_disconnect
client.on_message = on_message

# [health]
client.will_set(
    HEALTH_TOPIC, health(False, "offline", "connection lost unexpectedly"), qos=1, retain=True
)

# [shutdown]
stopping = threading.Event()


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    # [connection]
    client.connect_async(HOST, PORT, keepalive=60, clean_start=True)
    client.loop_start()
    # [heartbeat]
    threading.Thread(target=heartbeat_loop, name="heartbeat", daemon=True).start()
    # [shutdown]
    stopping.wait()
    worker.shutdown(wait=True, cancel_futures=True)
    if client.is_connected():
        info = publish_health(False, "shutdown")
        info.wait_for_publish(timeout=5)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
