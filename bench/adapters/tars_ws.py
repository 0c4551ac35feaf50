"""tars-core raw bytes over WebSockets: ``tars_raw`` with a ``ws://`` URL.

The same client, work and payloads as ``tars_raw``, through the broker's WebSocket listener
instead of its TCP one, so the two rows side by side give the WebSocket link's cost per
message (HTTP upgrade once; per message the framing, the client's masking and the broker's
WebSocket path).

No ``from __future__ import annotations`` here (see ``tars_raw``).
"""

from bench.adapters.tars_raw import TarsRawAdapter
from tars.mqtt import MQTTClient

__all__ = ["ADAPTER", "TarsWsAdapter"]


class TarsWsAdapter(TarsRawAdapter):
    """One tars-core client publishing and receiving raw bytes over ``ws://``."""

    name = "tars_ws"
    transport = "ws"

    async def connect(self, host: str, port: int, client_id: str) -> None:
        client = MQTTClient(f"ws://{host}:{port}/mqtt", client_id)
        await client.connect()
        self._client = client


ADAPTER = TarsWsAdapter
