"""The demo: a miniature TARS fleet on one broker (``make demo`` / ``python -m tars.mqtt.demo``).

Two services exchange events through a broker, with heartbeats and health, while a monitor
prints what crosses the wire; then everything shuts down cleanly and a one-screen summary is
printed. The broker is a real Mosquitto when one is installed, else tars-core's embedded
development broker (:mod:`tars.mqtt.testing`) over TCP on a free local port.

- ``stt``: "hears" utterances and sends each as a ``stt.final`` request on ``stt/final``
  (QoS 1), waiting for the router's answer on ``stt/answers`` (matched by correlation id).
- ``router``: subscribes to ``stt/final``, picks an intent, and replies ``router.intent``
  with ``correlate`` set to the utterance's envelope id.
- ``monitor``: watches ``system/health/+`` and ``system/keepalive/+``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

from . import Message, MQTTClient

UTTERANCES = (
    "what time is it",
    "move forward two meters",
    "tell me a joke",
    "take a picture",
    "remember that the door code is blue",
)
INTENTS = {"time": "clock", "move": "movement", "joke": "llm", "picture": "camera"}


@contextlib.asynccontextmanager
async def demo_broker(prefer: str = "auto") -> AsyncIterator[tuple[str, str]]:
    """Start a broker on a free local port; yield (url, description)."""
    from .testing import InMemoryBroker, MosquittoBroker

    if prefer in ("auto", "mosquitto") and MosquittoBroker.available():
        broker = MosquittoBroker(persistence=False)
        await broker.astart()
        try:
            yield broker.url, f"Mosquitto on port {broker.port}"
        finally:
            await broker.astop()
        return
    if prefer == "mosquitto":
        raise SystemExit(
            "Mosquitto is not installed: apt-get install mosquitto (or use --broker embedded)"
        )
    embedded = InMemoryBroker()
    await embedded.start()
    try:
        port = await embedded.serve_tcp("127.0.0.1", 0)
        yield f"mqtt://127.0.0.1:{port}", f"tars-core embedded dev broker on port {port}"
    finally:
        await embedded.close()


def _say(who: str, text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {who:>8} | {text}", flush=True)


async def run_demo(prefer: str = "auto", heartbeat_interval: float = 1.0) -> dict[str, object]:
    """Run the whole demo and return the figures of its summary."""
    async with demo_broker(prefer) as (url, description):
        _say("demo", f"broker: {description} ({url})")
        monitor = MQTTClient(url, "monitor")
        health: Counter[str] = Counter()
        beats: Counter[str] = Counter()
        shutdown_seen = asyncio.Event()

        async def on_health(msg: Message) -> None:
            data = msg.envelope.data
            who = msg.topic.rsplit("/", 1)[1]
            health[f"{who}:{data['event']}"] += 1
            _say("monitor", f"health {who}: ok={data['ok']} event={data['event']}")
            if who == "router" and data["event"] == "shutdown":
                shutdown_seen.set()

        async def on_beat(msg: Message) -> None:
            who = msg.topic.rsplit("/", 1)[1]
            beats[who] += 1

        async with monitor:
            await monitor.subscribe("system/health/+", on_health, qos=1)
            await monitor.subscribe("system/keepalive/+", on_beat)

            router = MQTTClient(
                url,
                "router",
                enable_health=True,
                enable_heartbeat=True,
                heartbeat_interval=heartbeat_interval,
            )
            stt = MQTTClient(
                url,
                "stt",
                enable_health=True,
                enable_heartbeat=True,
                heartbeat_interval=heartbeat_interval,
            )
            latencies: list[float] = []

            async def route(request: Message) -> None:
                text = str(request.envelope.data["text"])
                intent = next((v for k, v in INTENTS.items() if k in text), "memory")
                _say("router", f"{text!r} -> intent {intent}")
                await router.reply(request, "router.intent", {"intent": intent, "text": text})

            async with router, stt:
                await router.subscribe("stt/final", route, qos=1)
                for text in UTTERANCES:
                    started = time.perf_counter()
                    _say("stt", f"heard {text!r}")
                    answer = await stt.request(
                        "stt/final",
                        "stt.final",
                        {"text": text, "confidence": 0.93},
                        response_topic="stt/answers",
                        timeout=5,
                    )
                    latencies.append((time.perf_counter() - started) * 1000)
                    _say("stt", f"router says {answer.data['intent']!r} (to {answer.correlate})")
                # Let a few heartbeats cross the wire before closing.
                await asyncio.sleep(heartbeat_interval * 1.5)
                stats = {"stt": stt.stats, "router": router.stats}
            await asyncio.wait_for(shutdown_seen.wait(), timeout=5)

    summary: dict[str, object] = {
        "broker": description,
        "utterances": len(UTTERANCES),
        "answers": len(latencies),
        "round_trip_ms_median": round(statistics.median(latencies), 2),
        "round_trip_ms_max": round(max(latencies), 2),
        "heartbeats_seen": dict(beats),
        "health_events": dict(health),
        "handler_failures": sum(s.failed for s in stats.values()),
    }
    return summary


def _print_summary(summary: dict[str, object]) -> None:
    print("\n" + "=" * 64)
    print(" tars-core demo summary")
    print("=" * 64)
    for key, value in summary.items():
        print(f" {key:<22} {value}")
    print("=" * 64)
    print(" all services shut down cleanly")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "embedded"),
        default="auto",
        help="which broker to start (auto: Mosquitto when installed, else the embedded one)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the client's logs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    summary = asyncio.run(run_demo(args.broker))
    _print_summary(summary)
    return 0 if summary["answers"] == summary["utterances"] else 1


if __name__ == "__main__":
    sys.exit(main())
