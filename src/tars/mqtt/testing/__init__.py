"""Testing kit: brokers and faults for tests of code built on tars-core.

- :class:`InMemoryBroker`: an MQTT 5 broker in the test's own event loop, reached without a
  socket (``connector``) or over TCP (``serve_tcp``), with fault injection. A development and
  test broker, not a production one. ``python -m tars.mqtt.testing`` runs it over TCP.
- :class:`MemoryTransport`: the socket-less asyncio transport it connects clients with.
- :class:`MosquittoBroker`: a real Mosquitto on a free port, for tests that need one.
- :class:`TcpFaultProxy`: a TCP proxy that cuts, stalls or delays a real connection.

Each name is imported on first use: the kit's pytest plugin is loaded by every pytest run in
an environment with tars-core, and must not make each of them pay for the broker and the
client (about 90 ms) before a test asks for a fixture.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

_EXPORTS = {
    "AuthCallback": "._broker",
    "InMemoryBroker": "._broker",
    "SessionInfo": "._broker",
    "MemoryTransport": "._memory_transport",
    "MosquittoBroker": "._mosquitto",
    "TcpFaultProxy": "._proxy",
}

__all__ = [
    "AuthCallback",
    "InMemoryBroker",
    "MemoryTransport",
    "MosquittoBroker",
    "SessionInfo",
    "TcpFaultProxy",
]


if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        """Import a public name on first access, then keep it as a module attribute."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if _typing.TYPE_CHECKING:
    from ._broker import AuthCallback as AuthCallback
    from ._broker import InMemoryBroker as InMemoryBroker
    from ._broker import SessionInfo as SessionInfo
    from ._memory_transport import MemoryTransport as MemoryTransport
    from ._mosquitto import MosquittoBroker as MosquittoBroker
    from ._proxy import TcpFaultProxy as TcpFaultProxy
