"""A service whose handler ends it: run as its own process so a test sees what is left behind.

``python fatal_handler.py URL CLIENT_ID TOPIC EXCEPTION``: health on, one QoS 1 subscription
on ``TOPIC`` whose handler raises ``EXCEPTION`` (``SystemExit`` or ``KeyboardInterrupt``),
served by ``run_forever()`` under ``asyncio.run`` as a service's ``main()`` ends. It prints
``ready`` once connected. The rule under test: these two, and only these, end the service,
after a graceful shutdown (health ``shutdown`` retained, no will).
"""

from __future__ import annotations

import asyncio
import sys

from tars.mqtt import MQTTClient


async def main(url: str, client_id: str, topic: str, exception: str) -> None:
    client = MQTTClient(url, client_id, enable_health=True)

    async def on_message(payload: bytes) -> None:
        if exception == "SystemExit":
            raise SystemExit(3)
        raise KeyboardInterrupt

    await client.subscribe(topic, on_message, qos=1)
    await client.connect()
    print("ready", flush=True)
    await client.run_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
