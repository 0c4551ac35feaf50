"""A pair of in-memory asyncio transports: a socket without the socket.

Two :class:`MemoryTransport` objects are joined back to back: bytes written to one are handed to
the other side's protocol. They exist so that a client's real connection code (an
``asyncio.Protocol``) can talk to the in-memory broker with every asyncio contract intact, which
is what makes tests against :class:`~tars.mqtt.testing.InMemoryBroker` worth something.

The design rules, each one a way real sockets behave that naive fakes get wrong:

- Delivery is never synchronous. ``write()`` queues the bytes on the peer and schedules one
  ``loop.call_soon`` per loop turn; everything written in the meantime arrives as one
  ``data_received`` call (like TCP coalescing). A protocol is never re-entered from inside its
  own ``write()``.
- ``pause_reading()`` holds bytes, EOF and reset alike until ``resume_reading()``, as a selector
  transport does (a paused socket is not read, so neither its EOF nor its reset is seen).
- ``close()`` delivers the data already written, then EOF to the peer; the peer's transport
  closes itself when ``eof_received()`` returns a false value. ``abort()`` delivers what was
  written, then ``connection_lost(ConnectionResetError)`` to the peer.
- A writer whose peer does not read gets ``pause_writing()`` above the high-water mark and
  ``resume_writing()`` once the peer drained below the low-water mark.
- ``connection_lost`` is called exactly once per side, always from a loop callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .._errors import InvalidArgumentError

__all__ = ["MemoryTransport", "memory_pipe"]

_DEFAULT_HIGH_WATER = 64 * 1024
_DEFAULT_LOW_WATER = 16 * 1024


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory, full-duplex byte stream (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.BaseProtocol,
        *,
        sockname: tuple[str, int],
        peername: tuple[str, int],
    ) -> None:
        super().__init__(extra={"sockname": sockname, "peername": peername})
        self._loop = loop
        self._protocol = protocol
        self._peer: MemoryTransport | None = None
        self._inbound = bytearray()  # written by the peer, not yet given to our protocol
        self._reading = True
        self._closing = False  # close() or abort() was called here, or the link ended
        self._lost = False  # connection_lost was called on our protocol
        self._eof_written = False
        self._eof_in = False  # the peer closed or wrote EOF: deliver after the data
        self._eof_delivered = False
        self._reset_in = False  # the peer aborted: deliver a reset after the data
        self._flush_scheduled = False
        self._high_water = _DEFAULT_HIGH_WATER
        self._low_water = _DEFAULT_LOW_WATER
        self._writing_paused = False

    def _connect(self, peer: MemoryTransport) -> None:
        self._peer = peer

    # -- BaseTransport -------------------------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close after the data already written: the peer sees it, then EOF."""
        if self._closing:
            return
        self._closing = True
        self._inbound.clear()
        peer = self._peer
        if peer is not None and not self._eof_written:
            peer._eof_in = True
            peer._schedule_flush()
        self._loop.call_soon(self._connection_lost, None)

    # -- ReadTransport -------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        if self._inbound or self._eof_in or self._reset_in:
            self._schedule_flush()

    # -- WriteTransport ------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        """Queue ``data`` for the peer; silently dropped once this side is closing (like TCP)."""
        if self._eof_written:
            raise RuntimeError("cannot call write() after write_eof()")
        if not data or self._closing:
            return
        peer = self._peer
        if peer is None or peer._closing:
            return
        peer._inbound += data
        peer._schedule_flush()
        if not self._writing_paused and len(peer._inbound) > self._high_water:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        """Half-close: the peer gets EOF after the data; this side can still read."""
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        peer = self._peer
        if peer is not None:
            peer._eof_in = True
            peer._schedule_flush()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """Close at once: the peer sees the data written so far, then a connection reset."""
        if self._lost:
            return
        already_closing = self._closing
        self._closing = True
        self._inbound.clear()
        peer = self._peer
        if peer is not None and not already_closing:
            peer._reset_in = True
            peer._schedule_flush()
        if not already_closing:
            self._loop.call_soon(self._connection_lost, None)

    def get_write_buffer_size(self) -> int:
        peer = self._peer
        return len(peer._inbound) if peer is not None and not peer._closing else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise InvalidArgumentError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low

    # -- delivery ------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._lost:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand our protocol what the peer wrote, then EOF or reset if the peer is gone."""
        self._flush_scheduled = False
        if self._lost or self._closing or not self._reading:
            return
        if self._inbound:
            data = bytes(self._inbound)
            self._inbound.clear()
            peer = self._peer
            if peer is not None:
                peer._maybe_resume_writing()
            protocol = self._protocol
            assert isinstance(protocol, asyncio.Protocol)
            try:
                protocol.data_received(data)
            except Exception as exc:
                self._fatal_error(exc, "protocol.data_received() call failed")
                return
            if self._lost or self._closing or not self._reading or self._inbound:
                return
        if self._reset_in:
            self._closing = True
            self._connection_lost(ConnectionResetError("connection reset by peer (in memory)"))
        elif self._eof_in and not self._eof_delivered:
            self._eof_delivered = True
            protocol = self._protocol
            assert isinstance(protocol, asyncio.Protocol)
            try:
                keep_open = protocol.eof_received()
            except Exception as exc:
                self._fatal_error(exc, "protocol.eof_received() call failed")
                return
            if not keep_open:
                self.close()

    def _fatal_error(self, exc: Exception, message: str) -> None:
        """A protocol callback raised: report it and drop the link, as asyncio's transports do."""
        self._loop.call_exception_handler(
            {"message": f"Fatal error: {message}", "exception": exc, "transport": self}
        )
        self.abort()
        self._connection_lost(exc)

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= self._low_water:
            self._writing_paused = False
            self._protocol.resume_writing()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._inbound.clear()
        self._protocol.connection_lost(exc)


def memory_pipe(
    loop: asyncio.AbstractEventLoop,
    protocol_a: asyncio.BaseProtocol,
    protocol_b: asyncio.BaseProtocol,
    *,
    name_a: tuple[str, int],
    name_b: tuple[str, int],
) -> tuple[MemoryTransport, MemoryTransport]:
    """Join two protocols back to back and return their transports ``(a, b)``.

    ``connection_made`` is not called here: the caller decides the order (the broker side first,
    so that the client's first write finds a listening peer).
    """
    a = MemoryTransport(loop, protocol_a, sockname=name_a, peername=name_b)
    b = MemoryTransport(loop, protocol_b, sockname=name_b, peername=name_a)
    a._connect(b)
    b._connect(a)
    return a, b
