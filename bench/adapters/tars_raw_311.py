"""``tars_raw`` on an MQTT 3.1.1 link (``protocol="3.1.1"``): the cost of the 3.1.1 codec (the
session's output rewritten, the input read in Python: docs/mqtt311.md) side by side with MQTT 5.
Not in the default run: ``python -m bench --clients tars_raw,tars_raw_311``.

No ``from __future__ import annotations`` (see :mod:`bench.adapters.tars_raw`)."""

from bench.adapters.tars_raw import TarsRawAdapter
from tars.mqtt import MQTTClient

__all__ = ["ADAPTER", "TarsRaw311Adapter"]


class TarsRaw311Adapter(TarsRawAdapter):
    """``tars_raw`` on an MQTT 3.1.1 link."""

    name = "tars_raw_311"

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = MQTTClient(f"mqtt://{host}:{port}", client_id, protocol="3.1.1")
        await client.connect()
        self._client = client


ADAPTER = TarsRaw311Adapter
