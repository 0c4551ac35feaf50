"""A minimal fleet service for the CLI's tests, run as its own process.

``python service.py URL CLIENT_ID [--instance NAME] [--unhealthy ERROR] [--no-heartbeat]``:
connects with health and one-second heartbeats (or none), optionally reports itself unhealthy,
prints ``ready`` and runs until killed; SIGTERM shuts it down gracefully (its last status says
``shutdown``). Being a real process lets a test kill -9 it (the broker publishes its will) or
SIGSTOP it (it stops heartbeating while its connection stays open: a hung service).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from tars.mqtt import MQTTClient


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("client_id")
    parser.add_argument("--instance", metavar="NAME")
    parser.add_argument("--unhealthy", metavar="ERROR")
    parser.add_argument("--no-heartbeat", action="store_true")
    args = parser.parse_args()
    client = MQTTClient(
        args.url,
        args.client_id,
        instance=args.instance,
        enable_health=True,
        enable_heartbeat=not args.no_heartbeat,
        heartbeat_interval=1.0,
    )
    async with client:
        if args.unhealthy:
            await client.publish_health(False, "degraded", args.unhealthy)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)  # after the handler: a test may send SIGTERM right away
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
