"""The durable outbox's cost per event: one append (committed) and one remove, in microseconds.

What ``outbox_path`` adds to each QoS 1/2 publish: the record written before the publish is
accepted, and removed once the broker acknowledged it. The store keeps a window of records in
flight (``--window``, like unacknowledged publishes), on the disk that holds ``--dir`` (default
``bench/out``, on the project's disk: a tmpfs would make fsync free and the figures lie). Rows:

- ``FULL``, the default: each append fsynced (survives a power cut); removals batched by 64;
- ``FULL, remove each``: every removal committed on its own (what batching saves);
- ``NORMAL``: appends survive a process crash, not a power cut (no fsync per commit).

A second table gives the cost a user sees: one ``MQTTClient.publish(qos=1, wait=False)`` while
the broker is away (the client is connecting to a closed port), with the in-memory outbox and
with ``outbox_path`` (each call returns once its record is committed and fsynced).

Run with::

    python -m bench.durable [--events 3000] [--repeat 3] [--dir bench/out]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tars.mqtt import ClientState, MQTTClient
from tars.mqtt._core.durable import DurableOutbox, Synchronous

__all__ = ["main", "measure", "measure_client"]

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 240  # about one event envelope
TOPIC = "tars/bench/durable"


def _run(
    directory: Path,
    events: int,
    window: int,
    synchronous: Synchronous,
    remove_batch: int,
) -> float:
    """Microseconds per event (append + remove) for one fresh store."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        box = DurableOutbox(
            Path(tmp) / "bench.sqlite3",
            max_messages=window * 2 + 1,
            max_bytes=1 << 30,
            synchronous=synchronous,
            remove_batch=remove_batch,
        )
        in_flight: deque[int] = deque()
        started = time.perf_counter()
        done = 0
        while done < events:
            _append_and_retire(box, in_flight, window)
            done += 1
        while in_flight:
            box.remove(in_flight.popleft())
        box.flush()
        elapsed = time.perf_counter() - started
        box.close()
    return elapsed / events * 1e6


def _append_and_retire(box: DurableOutbox, in_flight: deque[int], window: int) -> None:
    seq = box.append(TOPIC, PAYLOAD, 1).seq
    assert seq is not None
    in_flight.append(seq)
    if len(in_flight) > window:
        box.remove(in_flight.popleft())  # the oldest is acknowledged


ROWS: list[tuple[str, Callable[[Path, int, int], float]]] = [
    (
        "FULL (default: fsync per append, removals by 64)",
        lambda d, n, w: _run(d, n, w, "FULL", 64),
    ),
    ("FULL, each removal committed alone", lambda d, n, w: _run(d, n, w, "FULL", 1)),
    ("NORMAL (no fsync per commit)", lambda d, n, w: _run(d, n, w, "NORMAL", 64)),
]


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused: the broker is away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _offline_publishes(directory: Path | None, events: int) -> float:
    client = MQTTClient(
        f"mqtt://127.0.0.1:{_closed_port()}",
        "bench-durable",
        outbox_path=directory,
        outbox_max_messages=events,
        reconnect_min_delay=1.0,
    )
    connecting = asyncio.create_task(client.connect(), name="bench-durable-connect")
    while client.state is ClientState.CREATED:
        await asyncio.sleep(0)
    started = time.perf_counter()
    for _ in range(events):
        await client.publish(TOPIC, PAYLOAD, qos=1, wait=False)
    elapsed = time.perf_counter() - started
    assert client.stats.outbox_depth == events
    await client.shutdown()
    connecting.cancel()
    await asyncio.gather(connecting, return_exceptions=True)
    return elapsed / events * 1e6


def _client_run(directory: Path, events: int, durable: bool) -> float:
    """Microseconds per offline ``publish(qos=1, wait=False)`` of one fresh client."""
    # Shutting down with the broker away says (at WARNING) what it discards: expected here.
    logging.getLogger("tars.mqtt").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        return asyncio.run(_offline_publishes(Path(tmp) if durable else None, events))


CLIENT_ROWS: list[tuple[str, Callable[[Path, int], float]]] = [
    ("in-memory outbox", lambda d, n: _client_run(d, n, False)),
    ("outbox_path (durable, fsync per publish)", lambda d, n: _client_run(d, n, True)),
]


def measure_client(directory: Path, events: int, repeat: int) -> list[tuple[str, float]]:
    """(row name, median µs per offline publish) for each client row."""
    samples: dict[str, list[float]] = {name: [] for name, _ in CLIENT_ROWS}
    for _ in range(repeat):
        for name, run in CLIENT_ROWS:
            samples[name].append(run(directory, events))
    return [(name, statistics.median(values)) for name, values in samples.items()]


def measure(directory: Path, events: int, window: int, repeat: int) -> list[tuple[str, float]]:
    """(row name, median µs per event) for each row, ``repeat`` runs interleaved."""
    samples: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    for _ in range(repeat):
        for name, run in ROWS:
            samples[name].append(run(directory, events, window))
    return [(name, statistics.median(values)) for name, values in samples.items()]


def main(argv: list[str] | None = None) -> int:
    """Print the rows as a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m bench.durable", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--window", type=int, default=100, help="records in flight")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = measure(args.dir, args.events, args.window, args.repeat)
    print(f"Durable outbox, {args.events} events of {len(PAYLOAD)} B, {args.window} in flight, "
          f"median of {args.repeat} (on {args.dir}):\n")  # fmt: skip
    print("| mode | µs per event (append + remove) |")
    print("|---|---:|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")
    print("\n| client, broker away | µs per publish(qos=1, wait=False) |")
    print("|---|---:|")
    for name, micros in measure_client(args.dir, args.events, args.repeat):
        print(f"| {name} | {micros:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
