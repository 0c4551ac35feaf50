"""The README's first command runs this demo: it must keep working on both brokers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tars.mqtt.demo import UTTERANCES, run_demo


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
async def test_demo_services_talk_beat_report_health_and_shut_down(broker: str) -> None:
    summary = await run_demo(broker, heartbeat_interval=1.0)
    assert summary["answers"] == len(UTTERANCES)
    assert summary["handler_failures"] == 0
    health = summary["health_events"]
    assert isinstance(health, dict)
    for service in ("stt", "router"):
        assert health.get(f"{service}:ready") == 1
        assert health.get(f"{service}:shutdown") == 1
    beats = summary["heartbeats_seen"]
    assert isinstance(beats, dict)
    assert beats.get("stt", 0) >= 1
    assert beats.get("router", 0) >= 1
    assert ("Mosquitto" in str(summary["broker"])) == (broker == "mosquitto")


def test_demo_command_exits_zero_and_prints_the_summary() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tars.mqtt.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "tars-core demo summary" in done.stdout
    assert "all services shut down cleanly" in done.stdout
