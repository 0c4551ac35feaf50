"""A broker that only redirects: MQTT 5 server redirection (CONNACK or DISCONNECT 0x9C/0x9D
with a Server Reference), which no broker we can start in CI sends on demand.

:class:`RedirectBroker` listens on a free loopback port and answers every CONNECT in one of
two ways:

* ``RedirectBroker.refusing(reference)``: CONNACK with reason 0x9D (Server moved, the default)
  or 0x9C (Use another server) and the Server Reference property, then closes the connection,
  as a node being drained refuses new clients;
* ``RedirectBroker.accepting_then_disconnecting(reference)``: CONNACK 0 (Success), then, after
  ``delay`` seconds, DISCONNECT with that reason and the Server Reference, as a node sends its
  clients elsewhere before it goes down.

It speaks through the ``mqtt5`` codec only, so what it sends is what the spec says, not what
tars-core expects. Every CONNECT it received is kept in :attr:`connects`, for tests that check
which client came (and with what client id or clean-start flag).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import mqtt5

from support import LoopbackServer, RawMQTT

__all__ = ["RedirectBroker"]

Reason = Literal["server_moved", "use_another_server"]
_CONNACK_CODES = {
    "server_moved": mqtt5.ConnAckReasonCode.SERVER_MOVED,  # 0x9D: permanent
    "use_another_server": mqtt5.ConnAckReasonCode.USE_ANOTHER_SERVER,  # 0x9C: temporary
}
_DISCONNECT_CODES = {
    "server_moved": mqtt5.DisconnectReasonCode.SERVER_MOVED,
    "use_another_server": mqtt5.DisconnectReasonCode.USE_ANOTHER_SERVER,
}


class RedirectBroker(LoopbackServer):
    """A loopback MQTT 5 endpoint that sends every client to ``reference``.

    Build it with :meth:`refusing` or :meth:`accepting_then_disconnecting`, then
    ``async with broker:`` (or :meth:`start` / :meth:`close`, from :class:`LoopbackServer`);
    clients connect to :attr:`url`.
    ``reference`` is sent as given: the spec leaves its format to the server (brokers send
    ``host:port``, a list of those separated by spaces, or a URL).
    """

    def __init__(
        self,
        reference: str,
        *,
        mode: Literal["connack", "disconnect"],
        reason: Reason = "server_moved",
        delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.reference = reference
        self.mode = mode
        self.reason: Reason = reason
        self.delay = delay
        self.connects: list[mqtt5.ConnectPacket] = []

    @classmethod
    def refusing(cls, reference: str, *, reason: Reason = "server_moved") -> RedirectBroker:
        """Answer CONNECT with CONNACK ``reason`` + Server Reference, then close."""
        return cls(reference, mode="connack", reason=reason)

    @classmethod
    def accepting_then_disconnecting(
        cls, reference: str, *, reason: Reason = "server_moved", delay: float = 0.0
    ) -> RedirectBroker:
        """Accept (CONNACK 0), then after ``delay`` s send DISCONNECT ``reason`` + reference."""
        return cls(reference, mode="disconnect", reason=reason, delay=delay)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawMQTT(reader, writer)
        try:
            connect = await asyncio.wait_for(peer.receive(), 10)
            if not isinstance(connect, mqtt5.ConnectPacket):
                return  # not MQTT 5 speaking first: hang up
            self.connects.append(connect)
            if self.mode == "connack":
                await peer.send(
                    mqtt5.ConnAckPacket(
                        reason_code=_CONNACK_CODES[self.reason], server_reference=self.reference
                    )
                )
                return
            await peer.send(mqtt5.ConnAckPacket())
            await asyncio.sleep(self.delay)
            await peer.send(
                mqtt5.DisconnectPacket(
                    reason_code=_DISCONNECT_CODES[self.reason], server_reference=self.reference
                )
            )
            # The spec has the server close after DISCONNECT; give the client a moment to read it.
            with contextlib.suppress(EOFError, TimeoutError):
                await asyncio.wait_for(peer.receive(), 1)
        except (EOFError, OSError, TimeoutError, ValueError):
            return  # the client went away or spoke garbage: nothing to redirect
        finally:
            await peer.close()
