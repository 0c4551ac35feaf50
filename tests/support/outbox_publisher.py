"""A publisher process for the durable-outbox test (run as a script, killed -9 by the test).

``accept URL CLIENT_ID DIR TOPIC N``: start connecting (the broker is down), publish N QoS 1
events (``wait=False``) while no link is up, print ``ACCEPTED N`` once every ``publish()`` has
returned, then wait to be killed.

``deliver URL CLIENT_ID DIR TOPIC``: connect (the broker is back); what the earlier process left
in the outbox goes out first; then publish an ``end`` marker (QoS 1, waited for), wait until
everything is acknowledged, print ``DELIVERED``, and shut down cleanly.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tars.mqtt import ClientState, ExponentialBackoff, MQTTClient


def make_client(url: str, client_id: str, directory: str) -> MQTTClient:
    return MQTTClient(
        url,
        client_id,
        outbox_path=Path(directory),
        enable_health=False,
        enable_heartbeat=False,
        backoff=ExponentialBackoff(min_delay=0.05, max_delay=0.2, refused_delay=0.1),
    )


async def accept(url: str, client_id: str, directory: str, topic: str, count: int) -> None:
    client = make_client(url, client_id, directory)
    connecting = asyncio.create_task(client.connect(), name="outbox-publisher-connect")
    while client.state is ClientState.CREATED:  # connect() has not begun yet
        await asyncio.sleep(0)
    for n in range(count):
        assert not client.connected
        await client.publish(topic, str(n), qos=1, wait=False)
    print(f"ACCEPTED {count}", flush=True)
    await connecting  # never returns: the broker stays down until this process is killed


async def deliver(url: str, client_id: str, directory: str, topic: str) -> None:
    async with make_client(url, client_id, directory) as client:  # connects
        await client.publish(topic, "end", qos=1)
        await client.flush(timeout=30)
        print("DELIVERED", flush=True)


def main(argv: list[str]) -> None:
    mode, url, client_id, directory, topic, *rest = argv
    if mode == "accept":
        asyncio.run(accept(url, client_id, directory, topic, int(rest[0])))
    else:
        asyncio.run(deliver(url, client_id, directory, topic))


if __name__ == "__main__":
    main(sys.argv[1:])
