"""One member of a worker group, run as its own process so that a test can kill it with -9.

``python ack_worker.py URL SERVICE INSTANCE FILTER RECORD [--delay S] [--acknowledge MODE]``:
a persistent session (``clean_start=False``, a session expiry, the fixed client id
``SERVICE-INSTANCE``), de-duplication on, one QoS 1 subscription on ``FILTER`` whose handler
takes ``--delay`` seconds, then appends ``n dup`` (the event's number, 1 if the broker marked
the PUBLISH as a resend) to ``RECORD`` with one unbuffered ``write``: what was recorded
survives ``kill -9``. It prints ``ready`` once connected, then ``queued N T`` (its queue depth
and ``time.monotonic()``, one clock for every process of the machine) every 50 ms, so a test
can kill it while messages wait in it, going by a reading that is current, not one that waited
in the pipe. On SIGTERM it shuts down and
prints ``stats {json}`` (its subscription's counters) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time

from tars.mqtt import Message, MQTTClient


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("service")
    parser.add_argument("instance")
    parser.add_argument("filter")
    parser.add_argument("record")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--acknowledge", default="after_handling")
    args = parser.parse_args()
    fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    client = MQTTClient(
        args.url,
        args.service,
        instance=args.instance,
        clean_start=False,
        session_expiry_interval=300,
        dedupe_ttl=600,
        dedupe_max_entries=100_000,
        acknowledge=args.acknowledge,
    )

    async def on_job(message: Message) -> None:
        if args.delay:
            await asyncio.sleep(args.delay)  # the work
        dup = int(message.packet.duplicate)
        os.write(fd, f"{message.envelope.data['n']} {dup}\n".encode())

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    sub = await client.subscribe(args.filter, on_job, qos=1)
    async with client:
        print("ready", flush=True)
        while not stop.is_set():
            print(f"queued {sub.queued} {time.monotonic()}", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    stats = dataclasses.asdict(sub.stats)
    stats["unmatched"] = client.stats.unmatched
    print(f"stats {json.dumps(stats)}", flush=True)
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main())
