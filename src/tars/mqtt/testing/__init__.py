"""Testing kit: brokers and faults for tests of code built on tars-core.

- :class:`InMemoryBroker`: an MQTT 5 broker in the test's own event loop, reached without a
  socket (``connector``) or over TCP (``serve_tcp``), with fault injection. A development and
  test broker, not a production one. ``python -m tars.mqtt.testing`` runs it over TCP.
- :class:`MemoryTransport`: the socket-less asyncio transport it connects clients with.
- :class:`MosquittoBroker`: a real Mosquitto on a free port, for tests that need one.
- :class:`TcpFaultProxy`: a TCP proxy that cuts, stalls or delays a real connection.
"""

from __future__ import annotations

from ._broker import AuthCallback, InMemoryBroker, SessionInfo
from ._memory_transport import MemoryTransport
from ._mosquitto import MosquittoBroker
from ._proxy import TcpFaultProxy

__all__ = [
    "AuthCallback",
    "InMemoryBroker",
    "MemoryTransport",
    "MosquittoBroker",
    "SessionInfo",
    "TcpFaultProxy",
]
