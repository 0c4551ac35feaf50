"""Request/response over MQTT: ``client.request`` on one side, ``client.reply`` on the other.

A ``clock`` service answers ``clock.query`` requests; an ``asker`` sends two and prints the
answers, then asks a topic nobody serves and gets a ``TimeoutError``. Correlation is done for
you: ``request`` registers the envelope id before publishing and waits for the answer whose
``correlate`` is that id, on the ``response_topic`` it subscribed to; ``reply`` answers on the
request's MQTT 5 response topic with ``correlate`` set. Run it against a broker::

    MQTT_URL=mqtt://localhost:1883 python examples/request_response.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from tars.mqtt import Message, MQTTClient


async def serve_clock(clock: MQTTClient) -> None:
    """The responder: one handler, one ``reply``."""

    async def on_query(request: Message) -> None:
        layout = str(request.envelope.data.get("format", "%H:%M:%S"))
        await clock.reply(request, "clock.answer", {"utc": time.strftime(layout, time.gmtime())})

    await clock.subscribe("clock/query", on_query, qos=1)


async def main(url: str | None = None) -> int:
    """Run the clock and the asker against the broker at ``url`` (default ``$MQTT_URL``)."""
    url = url or os.environ.get("MQTT_URL", "mqtt://localhost:1883")
    pid = os.getpid()
    async with MQTTClient(url, f"clock-{pid}") as clock, MQTTClient(url, f"asker-{pid}") as asker:
        await serve_clock(clock)
        inbox = f"clock/answers/asker-{pid}"  # one response topic per requester
        for layout in ("%H:%M", "%Y-%m-%d"):
            answer = await asker.request(
                "clock/query", "clock.query", {"format": layout}, response_topic=inbox, timeout=5
            )
            print(f"{answer.source} says {answer.data['utc']} (answer to {answer.correlate})")
        try:
            await asker.request("nobody/home", "ping", {}, response_topic=inbox, timeout=0.5)
        except TimeoutError:
            print("nobody/home did not answer within 0.5 s")
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
