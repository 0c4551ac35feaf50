"""A complete TARS service in fewer than 10 lines of code: the one in the README.

It reads its broker and identity from the environment, answers every ``shout/in`` event with a
``shout.out`` event on ``shout/out``, keeps a retained health status on
``system/health/$MQTT_CLIENT_ID`` (``ready``; ``shutdown`` on exit; ``offline`` through the
broker's will if it dies), reconnects by itself, and exits cleanly on Ctrl-C or SIGTERM.

    MQTT_URL=mqtt://localhost:1883 MQTT_CLIENT_ID=shouter python examples/new_service.py
    mosquitto_pub -V mqttv5 -t shout/in -m '{"id": "1", "type": "shout.in", "ts": 0,
        "source": "me", "data": {"text": "hello"}}'
"""

import asyncio

from tars.mqtt import Envelope, MQTTClient


async def main() -> None:
    client = MQTTClient.from_env(enable_health=True)

    async def shout(event: Envelope) -> None:
        await client.publish_event("shout/out", "shout.out", {"text": event.data["text"].upper()})

    await client.subscribe("shout/in", shout, qos=1)
    await client.run_forever()  # connect, serve until SIGINT/SIGTERM, shut down gracefully


if __name__ == "__main__":
    asyncio.run(main())
