"""Start-up cost: import time, memory after import, time to the first event, per client.

On a Raspberry Pi every service start pays these; they are measured here against the peers
in the same run. Each sample is a fresh interpreter (:mod:`bench.startup_probe`); the runs are
interleaved (one of each client, then again) so a burst of load touches every client alike, and
the table shows medians. ``python -m bench`` includes this section; run it alone with::

    python -m bench.startup [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["CLIENTS", "main", "measure", "render_startup"]

CLIENTS = ("tars.mqtt", "tars_event", "gmqtt", "aiomqtt", "paho")
PROBE = Path(__file__).with_name("startup_probe.py")
METRICS = (
    ("import_ms", "import (ms)"),
    ("rss_mb", "RSS after import (MB)"),
    ("first_event_ms", "first event (ms)"),
)
YARDSTICK = "gmqtt"
TARS = ("tars.mqtt", "tars_event")


def _probe(client: str, port: int) -> dict[str, Any]:
    # Bytecode caches on, as in an installed package (pip compiles them at install time): with
    # PYTHONDONTWRITEBYTECODE set, the editable tars-core would be compiled at every start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [sys.executable, str(PROBE), client, str(port)],
        capture_output=True, text=True, timeout=90, check=False, env=env,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"client": client, "error": tail}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(port: int, repeat: int, clients: tuple[str, ...] = CLIENTS) -> list[dict[str, Any]]:
    """``repeat`` samples of every client, interleaved; failed samples carry ``error``.

    One first sample of each is thrown away: it writes the bytecode caches and warms the
    page cache, which every later start (like a service's) finds done.
    """
    for client in clients:
        _probe(client, port)
    return [_probe(client, port) for _ in range(repeat) for client in clients]


def medians(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Client -> metric -> median over its successful samples."""
    out: dict[str, dict[str, float]] = {}
    for client in dict.fromkeys(s["client"] for s in samples):
        good = [s for s in samples if s["client"] == client and "error" not in s]
        if good:
            out[client] = {key: statistics.median(s[key] for s in good) for key, _ in METRICS}
    return out


def render_startup(samples: list[dict[str, Any]], repeat: int) -> str:
    """The Markdown section: one row per metric, one column per client, and x gmqtt."""
    table = medians(samples)
    clients = list(table)
    errors = sorted({f"{s['client']}: {s['error']}" for s in samples if "error" in s})
    lines = [
        f"### Start-up (fresh interpreter per sample, medians of {repeat})",
        "",
        "| | " + " | ".join(f"`{c}`" for c in clients) + " | tars.mqtt / tars_event vs gmqtt |",
        "|---|" + "---:|" * (len(clients) + 1),
    ]
    for key, label in METRICS:
        cells = [f"{table[c][key]:.1f}" for c in clients]
        ratio = "-"
        if YARDSTICK in table:
            ratio = " / ".join(
                f"{table[c][key] / table[YARDSTICK][key]:.2f}x" for c in TARS if c in table
            )
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    lines += [
        "",
        "Import: `import tars.mqtt` (`tars.mqtt`: its names load on first use), "
        "`from tars.mqtt import MQTTClient` (`tars_event`: what a service writes), "
        "`import gmqtt`, `import aiomqtt`, `import paho.mqtt.client`. RSS: the process's "
        "resident memory right after that import (the interpreter's own included). First "
        "event: from before the import to a QoS 1 event published and received back through "
        "the broker.",
    ]
    lines += [f"- failed: {error}" for error in errors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--repeat", type=int, default=9, help="samples per client (9)")
    args = parser.parse_args(argv)
    from bench._broker import mosquitto_broker

    with mosquitto_broker() as broker:
        samples = measure(broker.port, args.repeat)
    print(render_startup(samples, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
