"""Start-up cost: import, client built from its configuration, memory, first event, per client.

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

CLIENTS = ("tars_event", "gmqtt", "aiomqtt", "paho")
PROBE = Path(__file__).with_name("startup_probe.py")
METRICS = (
    ("import_ms", "import (ms)"),
    ("ready_ms", "import + client from config (ms)"),
    ("rss_mb", "RSS then (MB)"),
    ("first_event_ms", "first event (ms)"),
)
TARS = "tars_event"
PEERS = ("gmqtt", "aiomqtt", "paho")


def _probe(client: str, port: int) -> dict[str, Any]:
    # Bytecode caches on, as in an installed package (pip compiles them at install time): with
    # PYTHONDONTWRITEBYTECODE set, the editable tars-core would be compiled at every start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"MQTT_URL": f"mqtt://127.0.0.1:{port}", "MQTT_CLIENT_ID": f"startup-{client}-{port}"}
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


def medians(samples: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Client -> metric -> (median, spread) over its successful samples.

    The spread is (max - min) / median (see :func:`bench.report.spread`): how much the
    machine's load moved the figure from one fresh interpreter to the next.
    """
    from bench.report import spread

    out: dict[str, dict[str, tuple[float, float]]] = {}
    for client in dict.fromkeys(s["client"] for s in samples):
        good = [s for s in samples if s["client"] == client and "error" not in s]
        if good:
            out[client] = {
                key: (statistics.median(s[key] for s in good), spread([s[key] for s in good]))
                for key, _ in METRICS
            }
    return out


def render_startup(samples: list[dict[str, Any]], repeat: int) -> str:
    """The Markdown section: one row per metric, one column per client, then the ratios.

    Ratios follow the report's convention (> 1 favours tars-core): peer / tars-core, since
    lower is better for every start-up figure.
    """
    table = medians(samples)
    clients = list(table)
    peers = [p for p in PEERS if p in table]
    errors = sorted({f"{s['client']}: {s['error']}" for s in samples if "error" in s})
    lines = [
        f"### Start-up (fresh interpreter per sample, medians of {repeat}, ±run-to-run spread)",
        "",
        "| | "
        + " | ".join(f"`{c}`" for c in clients)
        + "".join(f" | vs {p}" for p in peers)
        + " |",
        "|---|" + "---:|" * (len(clients) + len(peers)),
    ]
    for key, label in METRICS:
        cells = [
            f"{table[c][key][0]:.1f}" + (f" ±{table[c][key][1] * 100:.0f}%" if repeat > 1 else "")
            for c in clients
        ]
        ratios = [
            f"{table[p][key][0] / table[TARS][key][0]:.2f}x" if TARS in table else "—"
            for p in peers
        ]
        lines.append(f"| {label} | " + " | ".join([*cells, *ratios]) + " |")
    lines += [
        "",
        "What a service writes, timed from the interpreter's start: the client class imported "
        "(`from tars.mqtt import MQTTClient`; `from gmqtt import Client`, `from aiomqtt import "
        "Client`, `from paho.mqtt.client import Client`), then the client object built from its "
        "configuration (`MQTTClient.from_env()` reading `MQTT_URL` and `MQTT_CLIENT_ID`; the "
        "peers' constructors), the resident memory at that point (the interpreter's own "
        "included), and the first event: connect, subscribe, publish one QoS 1 event and "
        "receive it back through the broker. `vs <peer>`: peer / tars-core, so > 1 means "
        "tars-core starts faster or smaller, as in every other table.",
    ]
    lines += [f"- failed: {error}" for error in errors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--repeat", type=int, default=9, help="samples per client (9)")
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help=f"comma-separated subset of {CLIENTS}"
    )
    args = parser.parse_args(argv)
    from bench._broker import mosquitto_broker

    with mosquitto_broker() as broker:
        samples = measure(broker.port, args.repeat, tuple(args.clients.split(",")))
    print(render_startup(samples, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
