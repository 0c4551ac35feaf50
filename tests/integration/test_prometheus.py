"""``tars.mqtt.prometheus``: the client's counters as a Prometheus scrape shows them."""

from __future__ import annotations

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


def test_without_the_extra_the_import_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n    import tars.mqtt.prometheus\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'tars-core[prometheus]'" in out.stdout
