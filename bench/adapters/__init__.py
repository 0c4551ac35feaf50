"""One small async interface over every client the bench measures.

Each case in :mod:`bench.cases` drives an :class:`Adapter` and never a client library directly,
so the same code times tars-core and its peers. An adapter owns one connection. It turns the
bench's event (a JSON-able ``dict``) into that client's idiomatic publish, and hands every
received message to ``on_message`` *on the event-loop thread*, already parsed back into a
``dict`` (raw clients parse with orjson; tars-core's envelope adapter reads the parsed envelope's
``data``), so parsing is paid by everyone.

Adapters are loaded by name and lazily (:func:`load_adapter`): a client whose library cannot be
imported is reported as "not available" instead of breaking the whole run.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["ADAPTERS", "NOT_RUN", "Adapter", "Event", "OnMessage", "load_adapter"]

Event = dict[str, Any]
"""What the bench publishes and receives: a small JSON object (see :mod:`bench.payloads`)."""

OnMessage = Callable[[Event], None]
"""Receipt callback: called once per received message, on the event-loop thread."""

ADAPTERS: dict[str, str] = {
    "tars_event": "bench.adapters.tars_event",
    "tars_raw": "bench.adapters.tars_raw",
    "tars_ws": "bench.adapters.tars_ws",
    "tars_proto": "bench.adapters.tars_proto",
    "gmqtt": "bench.adapters.gmqtt_raw",
    "aiomqtt": "bench.adapters.aiomqtt_raw",
    "paho": "bench.adapters.paho_raw",
}
"""Client name -> module defining ``ADAPTER`` (the :class:`Adapter` subclass)."""

NOT_RUN: dict[tuple[str, str], str] = {
    ("tars_ws", "large_qos0"): (
        "Mosquitto 2.0.11's WebSocket listener stalls on 64 KiB messages (paho over WebSockets "
        "too: 66 of 100 in 20 s), so this would time the broker"
    ),
}
"""(client, case) pairs the harness does not run, with the reason the report shows."""


class Adapter(abc.ABC):
    """One connection of one client library, behind the bench's interface."""

    name: ClassVar[str]
    """Name used on the command line and in the report."""

    transport: ClassVar[str] = "tcp"
    """``tcp``, or ``ws``: connect to the broker's WebSocket listener (the harness's
    ``--ws-port``) instead of its TCP one."""

    has_completion: ClassVar[bool] = True
    """False when the library cannot tell when a QoS 1 publish is acknowledged (gmqtt).

    The cases then count completion by the subscriber's receipts instead.
    """

    @abc.abstractmethod
    async def connect(self, host: str, port: int, client_id: str) -> None:
        """Open the connection and wait until the broker has accepted it."""

    @abc.abstractmethod
    async def subscribe(self, topic: str, qos: int, on_message: OnMessage) -> None:
        """Subscribe (one subscription per adapter) and wait for the SUBACK."""

    @abc.abstractmethod
    async def publish(self, topic: str, event: Event, qos: int, *, wait: bool) -> None:
        """Publish ``event``.

        ``wait=True``: return when the library reports the publish complete (QoS 1: PUBACK;
        QoS 0: handed to the socket). ``wait=False``: return as soon as the library lets the
        caller go on (pipelining); completion is awaited by :meth:`flush`.
        """

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every publish issued so far is complete (no-op without completion)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect cleanly and release the library's threads and tasks."""


def load_adapter(name: str) -> type[Adapter]:
    """Import the adapter called ``name``.

    Raises KeyError for an unknown name and ImportError (or AttributeError) when the client
    library, or the part of it the adapter needs, is missing: the caller reports that as
    "not available".
    """
    module = importlib.import_module(ADAPTERS[name])
    adapter: type[Adapter] = module.ADAPTER
    return adapter
