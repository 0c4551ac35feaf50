"""``tars_event`` on an MQTT 3.1.1 link (``protocol="3.1.1"``), side by side with MQTT 5.
Not in the default run: ``python -m bench --clients tars_event,tars_event_311``."""

from bench.adapters.tars_event import TarsEventAdapter
from tars.mqtt import MQTTClient

__all__ = ["ADAPTER", "TarsEvent311Adapter"]


class TarsEvent311Adapter(TarsEventAdapter):
    """``tars_event`` on an MQTT 3.1.1 link."""

    name = "tars_event_311"

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = MQTTClient(
            f"mqtt://{host}:{port}",
            client_id,
            dedupe_ttl=60.0,
            dedupe_max_entries=100_000,
            protocol="3.1.1",
        )
        await client.connect()
        self._client = client


ADAPTER = TarsEvent311Adapter
