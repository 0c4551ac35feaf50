"""A minimal fleet service for the CLI's tests, run as its own process.

``python service.py URL CLIENT_ID [--instance NAME] [--unhealthy ERROR]``: connects with health
and one-second heartbeats, optionally reports itself unhealthy, prints ``ready`` and runs until
killed. Being a real process lets a test kill -9 it (the broker publishes its will) or SIGSTOP
it (it stops heartbeating while its connection stays open: a hung service).
"""

from __future__ import annotations

import argparse
import asyncio

from tars.mqtt import MQTTClient


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("client_id")
    parser.add_argument("--instance", metavar="NAME")
    parser.add_argument("--unhealthy", metavar="ERROR")
    args = parser.parse_args()
    client = MQTTClient(
        args.url,
        args.client_id,
        instance=args.instance,
        enable_health=True,
        enable_heartbeat=True,
        heartbeat_interval=1.0,
    )
    async with client:
        if args.unhealthy:
            await client.publish_health(False, "degraded", args.unhealthy)
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
