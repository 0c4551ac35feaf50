"""A web service on tars-core: FastAPI under uvicorn (on uvloop), the shape of the fleet's ui-web.

- The **lifespan** owns one :class:`~tars.mqtt.MQTTClient`: it subscribes, connects before the
  first request is served, and shuts the client down gracefully after the last one. The client
  reconnects by itself in between; routes never open or close MQTT links.
- ``POST /say`` publishes a ``tts.say`` event (QoS 1: the response is sent once the broker has
  it) and answers with the event's id.
- ``GET /status`` says whether the MQTT link is up and which event loop serves the app.
- ``WS /ws`` forwards every event received on the forwarded topics (``WEB_FORWARD``, default
  ``stt/final,tts/say,system/health/+``) to the browser as JSON text: one
  ``{"topic", "type", "source", "id", "data"}`` object per event (``{"topic", "data"}`` with
  the payload as text when it is not an envelope). Each socket has a bounded
  queue of its own: a slow browser loses its oldest events (counted in ``/status``'s
  ``dropped``), never the MQTT handler's time nor another socket's events.

Run it (the ``web`` extra: ``pip install 'tars-core[web]'``)::

    MQTT_URL=mqtt://localhost:1883 MQTT_CLIENT_ID=ui-web python examples/web_service.py --port 8000
    curl -X POST localhost:8000/say -H 'content-type: application/json' -d '{"text": "hi"}'

uvicorn picks uvloop when it is installed (``uvicorn[standard]`` installs it); ``--loop
asyncio`` forces the stock loop. tars-core works on either. See docs/web.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from tars.mqtt import EnvelopeError, Message, MQTTClient

FORWARD = os.environ.get("WEB_FORWARD", "stt/final,tts/say,system/health/+")
SOCKET_QUEUE = 100  # events waiting for one slow browser before the oldest are dropped


class Say(BaseModel):
    """The body of ``POST /say``."""

    text: str


class Hub:
    """The WebSocket side: one bounded queue per open socket, fed by the MQTT handler."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.dropped = 0

    async def on_message(self, msg: Message) -> None:
        """The MQTT handler of every forwarded topic: hand the event to each socket's queue."""
        event: dict[str, Any] = {"topic": msg.topic}
        try:
            envelope = msg.envelope
        except EnvelopeError:  # not an envelope: forwarded as text
            event["data"] = msg.payload.decode("utf-8", "replace")
        else:
            event |= {
                "type": envelope.type,
                "source": envelope.source,
                "id": envelope.id,
                "data": envelope.data,
            }
        for queue in self._queues:
            if queue.full():  # a slow browser: its oldest event goes, counted
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    @contextlib.contextmanager
    def listener(self) -> Any:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SOCKET_QUEUE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The MQTT client lives exactly as long as the app: connected before the first request."""
    client = MQTTClient.from_env(enable_health=True)
    hub = Hub()
    for topic in filter(None, (t.strip() for t in FORWARD.split(","))):
        await client.subscribe(topic, hub.on_message, qos=1)
    await client.connect()
    app.state.mqtt, app.state.hub = client, hub
    try:
        yield
    finally:
        await client.shutdown()


app = FastAPI(title="tars-core web service example", lifespan=lifespan)


@app.post("/say")
async def say(body: Say, request: Request) -> dict[str, str]:
    """Publish a ``tts.say`` event; answered once the broker acknowledged it (QoS 1)."""
    client: MQTTClient = request.app.state.mqtt
    event_id = await client.publish_event("tts/say", "tts.say", {"text": body.text}, qos=1)
    return {"id": event_id}


@app.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """Is the MQTT link up, and which event loop serves the app (uvloop under uvicorn)."""
    client: MQTTClient = request.app.state.mqtt
    loop = type(asyncio.get_running_loop())
    return {
        "connected": client.connected,
        "loop": f"{loop.__module__}.{loop.__qualname__}",
        "forwarding": FORWARD.split(","),
        "dropped": request.app.state.hub.dropped,
    }


@app.websocket("/ws")
async def events(socket: WebSocket) -> None:
    """Forward the MQTT events to this browser until it goes away."""
    hub: Hub = socket.app.state.hub
    await socket.accept()
    with hub.listener() as queue:
        # Said once the socket listens: from here on it misses no event.
        await socket.send_json({"type": "hello", "forwarding": FORWARD.split(",")})

        async def forward() -> None:
            while True:
                await socket.send_json(await queue.get())

        pump = asyncio.create_task(forward(), name="web-socket-forward")
        try:
            while True:  # what the browser sends is ignored; this notices it leaving
                await socket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await pump


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, loop=args.loop, log_level="info")


if __name__ == "__main__":
    main()
