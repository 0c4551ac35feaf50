"""``tars.mqtt.prometheus``: the client's counters as a Prometheus scrape shows them."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, MQTTClient
from tars.mqtt.prometheus import register
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    """Each sample of the text exposition, by its name and labels."""
    samples: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_a_scrape_shows_what_stats_counts(shared_mosquitto: MosquittoBroker) -> None:
    registry = CollectorRegistry()
    client = MQTTClient(shared_mosquitto.url, unique("metrics"))
    register(client, registry)
    got: Inbox[str] = Inbox()

    async def handler(event: Envelope) -> None:
        got.add(event.id)
        if event.data["n"] == 2:
            raise RuntimeError("a failing handler is counted")

    label = f'{{client_id="{client.client_id}"}}'
    topic = unique("metrics/t")
    await client.subscribe(topic, handler, qos=1)
    async with client:
        for n in range(5):
            await client.publish_event(topic, "m", {"n": n}, qos=1)
        await got.wait_for(5)
        await client.flush(timeout=5)
        samples = scrape(registry)
        assert samples[f"tars_mqtt_connected{label}"] == 1.0
        assert samples[f"tars_mqtt_published_total{label}"] == 5.0
        assert samples[f"tars_mqtt_received_total{label}"] == 5.0
        assert samples[f"tars_mqtt_connects_total{label}"] == 1.0
        assert samples[f"tars_mqtt_inflight{label}"] == 0.0
        assert samples[f"tars_mqtt_outbox_depth{label}"] == 0.0
        stats = client.stats
        assert samples[f"tars_mqtt_failed_total{label}"] == stats.failed
        assert samples[f"tars_mqtt_handled_total{label}"] == stats.handled
    assert scrape(registry)[f"tars_mqtt_connected{label}"] == 0.0


async def test_a_scrape_shows_handler_times_per_filter(shared_mosquitto: MosquittoBroker) -> None:
    registry = CollectorRegistry()
    client = MQTTClient(shared_mosquitto.url, unique("metrics"), handler_timeout=0.3)
    register(client, registry)
    got: Inbox[int] = Inbox()
    fast, slow = unique("metrics/fast"), unique("metrics/slow")

    async def quick(event: Envelope) -> None:
        got.add(event.data["n"])
        if event.data["n"] == 1:
            raise RuntimeError("counted as failed")

    async def sluggish(event: Envelope) -> None:
        got.add(event.data["n"])
        await asyncio.sleep(0.1 if event.data["n"] < 12 else 5)

    subs = [await client.subscribe(fast, quick, qos=1), await client.subscribe(slow, sluggish)]
    async with client:
        for n in range(3):
            await client.publish_event(fast, "m", {"n": n}, qos=1)
        for n in (10, 11, 12):
            await client.publish_event(slow, "m", {"n": n})
        await got.wait_for(6)
        for sub in subs:
            await sub.join()
        samples = scrape(registry)
    who = f'client_id="{client.client_id}"'
    assert samples[f'tars_mqtt_handler_seconds_count{{{who},filter="{fast}"}}'] == 3.0
    assert samples[f'tars_mqtt_handler_seconds_count{{{who},filter="{slow}"}}'] == 3.0
    assert samples[f'tars_mqtt_handler_seconds_bucket{{{who},filter="{fast}",le="0.05"}}'] == 3.0
    slow_fast_bucket = f'tars_mqtt_handler_seconds_bucket{{{who},filter="{slow}",le="0.05"}}'
    assert samples[slow_fast_bucket] == 0.0  # every call of the slow one took 0.1 s or more
    assert samples[f'tars_mqtt_handler_seconds_bucket{{{who},filter="{slow}",le="0.5"}}'] == 3.0
    assert samples[f'tars_mqtt_handler_seconds_sum{{{who},filter="{slow}"}}'] >= 0.5
    calls = "tars_mqtt_handler_calls_total"
    assert samples[f'{calls}{{{who},filter="{fast}",outcome="handled"}}'] == 2.0
    assert samples[f'{calls}{{{who},filter="{fast}",outcome="failed"}}'] == 1.0
    assert samples[f'{calls}{{{who},filter="{slow}",outcome="handled"}}'] == 2.0
    assert samples[f'{calls}{{{who},filter="{slow}",outcome="timed_out"}}'] == 1.0
    assert samples[f'tars_mqtt_publish_calls_total{{{who},outcome="ok",qos="1"}}'] == 3.0
    assert samples[f'tars_mqtt_publish_calls_total{{{who},outcome="ok",qos="0"}}'] == 3.0


async def test_handler_metrics_can_be_left_out(shared_mosquitto: MosquittoBroker) -> None:
    registry = CollectorRegistry()
    client = MQTTClient(shared_mosquitto.url, unique("metrics"))
    register(client, registry, handler_metrics=False)
    async with client:
        await client.publish_event(unique("metrics/t"), "m", {}, qos=1)
        samples = scrape(registry)
    assert not [name for name in samples if "handler_seconds" in name or "publish_calls" in name]
    assert samples[f'tars_mqtt_published_total{{client_id="{client.client_id}"}}'] == 1.0


def test_without_the_extra_the_import_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n    import tars.mqtt.prometheus\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tars-core[prometheus]'" in out.stdout
