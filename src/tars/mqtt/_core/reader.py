"""The session's reader: bytes of one link in, whole MQTT packets out (h11's ``ReceiveBuffer``).

It owns the partial-packet buffer of the link and the framing checks (:mod:`.framing`): a
packet split over chunks waits for the rest, a bad first byte or length ends the link at once
(a reserved type announcing a large length would otherwise hold the link until keep-alive),
a packet over our Maximum Packet Size is refused before it is buffered, and a codec failure,
the pyo3 panic included, never reaches the process (:func:`.framing.codec_failure` is the one
place that translates it, for both ends of every link, the testing broker's too; the loop
calls ``mqtt5.read`` itself rather than through :func:`.framing.read_packet`, a call fewer per
packet).

What a packet means is not its business: the session checks each against the link's state.
A failure is returned as a :class:`ReadError` after the packets that came before it, so the
session handles those first, then ends the link.
"""

from __future__ import annotations

from collections.abc import Callable

import mqtt5

from .._record import Frozen, _set
from .codes import MALFORMED, PACKET_TOO_LARGE
from .framing import (
    FramingError,
    bad_publish_topic,
    check_fixed_header,
    codec_failure,
    frame_length,
    read_packet,
)

__all__ = ["ReadError", "Reader"]


class ReadError(Frozen):
    """Why the bytes cannot go on: ``reason`` is the DISCONNECT reason code to end with.

    ``v311_connack``: the bytes were a CONNACK with a 2-byte body, which is MQTT 3.1.1's (MQTT
    5's has at least a property length); before our CONNACK that means the broker refused our
    protocol version.
    """

    __slots__ = ("message", "reason", "v311_connack")
    reason: int
    message: str
    v311_connack: bool

    def __init__(self, reason: int, message: str, v311_connack: bool = False) -> None:
        _set(self, "reason", reason)
        _set(self, "message", message)
        _set(self, "v311_connack", v311_connack)


class Reader:
    """Frames one link's byte stream into packets (see the module docstring)."""

    __slots__ = ("_need", "_rest", "_rest_size", "max_packet_size", "read")

    def __init__(self, max_packet_size: int | None = None) -> None:
        """``max_packet_size``: ours, as told to the broker in CONNECT (None: no limit)."""
        self.max_packet_size = max_packet_size
        self._rest: list[bytes] = []  # a partial packet waiting for more bytes, chunk by chunk
        self._rest_size = 0
        self._need = 0  # total bytes of the partial packet, once its header told us
        # The link's codec: MQTT 5's (read_packet), or the 3.1.1 one on a 3.1.1 link (set by
        # the session per link); either raises IndexError for "more bytes", FramingError else.
        self.read: Callable[[memoryview], tuple[mqtt5.Packet, int]] = read_packet

    def __repr__(self) -> str:
        return f"<Reader buffered={self._rest_size} need={self._need}>"

    @property
    def buffered(self) -> int:
        """Bytes of a partial packet held until the rest arrives."""
        return self._rest_size

    def clear(self) -> None:
        """A new link (or none): a partial packet of the last one is worthless."""
        self._rest.clear()
        self._rest_size = self._need = 0

    def feed(self, data: bytes) -> tuple[list[mqtt5.Packet], ReadError | None]:
        """The packets ``data`` completes, in order, and the error that stopped the reading
        (None: the bytes were good; a trailing partial packet waits for the next call).
        After an error the link is over: feed nothing more before :meth:`clear`."""
        rest = self._rest
        if rest:
            # Chunks are kept apart until the packet is complete: joining at every chunk would
            # copy a large payload once per chunk.
            rest.append(data)
            self._rest_size += len(data)
            if self._rest_size < self._need:
                return [], None
            data = b"".join(rest)
            rest.clear()
            self._rest_size = self._need = 0
        packets: list[mqtt5.Packet] = []
        append = packets.append
        view = memoryview(data)
        end = len(data)
        pos = 0
        limit = self.max_packet_size
        read = self.read
        if read is read_packet:
            read = mqtt5.read  # its failures translated below, as read_packet would: no call
        try:
            check_topics = not data.isascii()  # an ASCII chunk has only UTF-8 topics
            while pos < end:
                if check_topics and data[pos] >> 4 == 3 and bad_publish_topic(data, pos):
                    return packets, ReadError(MALFORMED, "malformed packet: topic not UTF-8")
                try:
                    packet, size = read(view[pos:])
                except IndexError:
                    try:
                        check_fixed_header(data[pos])
                        need = frame_length(data, pos) or 0
                    except FramingError as exc:
                        return packets, ReadError(MALFORMED, str(exc))
                    if need and end - pos >= need:  # all there: its fields overrun its length
                        return packets, ReadError(MALFORMED, "malformed packet: truncated")
                    break
                except BaseException as exc:
                    failure = codec_failure(exc)  # a FramingError, or None: not the bytes'
                    if failure is None:
                        raise
                    v311 = data[pos : pos + 2] == b"\x20\x02"
                    return packets, ReadError(MALFORMED, str(failure), v311)
                pos += size
                if limit is not None and size > limit:
                    return packets, ReadError(PACKET_TOO_LARGE, "packet over our maximum")
                append(packet)
        finally:
            view.release()
        if pos < end:
            tail = data[pos:]
            need = frame_length(tail) or 0
            if limit is not None and need > limit:
                # Refuse it before buffering it: the broker ignored our Maximum Packet Size.
                return packets, ReadError(PACKET_TOO_LARGE, "packet over our maximum")
            rest.append(tail)
            self._rest_size = len(tail)
            self._need = need
        return packets, None
