"""The bench's Mosquitto: tars-core's test broker, with settings for measuring clients.

:class:`tars.mqtt.testing.MosquittoBroker` already writes what the measurement needs:

- ``set_tcp_nodelay true``: with Mosquitto's default (false) every QoS 1 round trip waits
  ~44 ms on the broker's Nagle delay and the bench would measure that instead of the clients.
- ``max_inflight_messages 0``: no Receive Maximum in the CONNACK and no cap towards
  subscribers, so pipelined QoS 1 is limited by the clients (gmqtt would otherwise fail
  outright: it raises once its packet ids reach the broker's Receive Maximum).

On top of it the bench asks for ``persistence false`` (no disk in the measurement) and
``max_queued_messages 1000000`` (a burst is queued, never silently dropped).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

from tars.mqtt.testing import MosquittoBroker

__all__ = ["BENCH_EXTRA_CONFIG", "broker_settings", "mosquitto_broker", "mosquitto_version"]

BENCH_EXTRA_CONFIG = "persistence false\nmax_queued_messages 1000000"

_SETTINGS = (
    "set_tcp_nodelay",
    "max_inflight_messages",
    "max_queued_messages",
    "persistence",
    "allow_anonymous",
)


def mosquitto_version() -> str:
    """``2.0.11`` (what ``mosquitto -h`` says), or ``unknown``."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for word in out.split():
        if word[:1].isdigit():
            return word
    return "unknown"


def broker_settings(broker: MosquittoBroker) -> str:
    """The configuration lines that matter for the figures, in effect order, for the report."""
    effective: dict[str, str] = {}
    for line in broker.config_text().splitlines():
        key, _, value = line.partition(" ")
        if key in _SETTINGS:
            effective[key] = value
    return "; ".join(f"{key} {value}" for key, value in effective.items())


@contextlib.contextmanager
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """Run a private Mosquitto on a free port of 127.0.0.1 for the duration of the bench, with a
    WebSocket listener on another (``ws_port``, for ``tars_ws``)."""
    with MosquittoBroker(
        persistence=False, extra_config=BENCH_EXTRA_CONFIG, websockets=True
    ) as broker:
        yield broker
