"""MQTT framing: where one packet ends in a byte stream, and decoding one whole packet safely.

Shared by both ends of every link tars-core has: the client's session and the testing kit's
broker. Pure functions, no state: each side keeps its own partial-packet buffer.

Why this is a module of its own: the codec (``mqtt5.read``) fails in three different ways
(``IndexError`` for "need more bytes", ``ValueError`` for malformed, and, on invalid UTF-8, a
pyo3 ``PanicException`` that derives from ``BaseException`` and is first reported to
``sys.unraisablehook``). Both ends must tell those apart the same way, so that a peer's bad
bytes end the link and never the process.
"""

from __future__ import annotations

from typing import Final

import mqtt5

__all__ = [
    "FramingError",
    "bad_publish_topic",
    "check_fixed_header",
    "codec_failure",
    "frame_length",
    "read_packet",
]

# Flags (low nibble of the first byte) MQTT 5 fixes for each packet type (2.1.3); PUBLISH (3)
# carries DUP/QoS/RETAIN there and is checked apart. Type 0 is reserved. Type 15 is MQTT 5's
# AUTH: well framed, so it passes here; a session that never asked for enhanced authentication
# refuses it as an unexpected packet (0x82), which is a protocol matter, not a framing one.
_FIXED_FLAGS: Final = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0,
                       13: 0, 14: 0, 15: 0}  # fmt: skip


class FramingError(ValueError):
    """The bytes cannot be an MQTT 5 packet (bad first byte, length field or encoding)."""


def frame_length(buffer: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """Total size of the packet starting at ``pos``, or None while its fixed header is incomplete.

    Raises :class:`FramingError` when the remaining-length field runs over four bytes.
    """
    value = 0
    multiplier = 1
    end = len(buffer)
    for index in range(pos + 1, pos + 5):
        if index >= end:
            return None
        byte = buffer[index]
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return index + 1 - pos + value
        multiplier *= 128
    raise FramingError("remaining length longer than four bytes")


def check_fixed_header(first: int) -> None:
    """Refuse a first byte no MQTT 5 packet starts with, before waiting for its body.

    A reserved packet type announcing a large length would otherwise keep a link waiting for
    bytes that never come (until keep-alive), and an HTTP reply ("HTTP/1.1 ...") would cost a
    whole connect timeout. Raises :class:`FramingError`.
    """
    kind = first >> 4
    if kind == 3:
        if first & 0x06 == 0x06:
            raise FramingError("malformed packet: PUBLISH with QoS 3")
        return
    flags = _FIXED_FLAGS.get(kind)
    if flags is None:
        raise FramingError(f"malformed packet: reserved packet type {kind}")
    if first & 0x0F != flags:
        raise FramingError(f"malformed packet: bad flags {first & 0x0F:#x} for type {kind}")


def read_packet(chunk: bytes | memoryview) -> tuple[mqtt5.Packet, int]:
    """``mqtt5.read`` of the packet at the start of ``chunk``; every failure a FramingError.

    ``IndexError`` (need more bytes) is raised as it is: only the caller knows whether more
    bytes may come. A complete packet whose fields overrun its length is the caller's to spot
    with :func:`frame_length`.
    """
    view = chunk if type(chunk) is memoryview else memoryview(chunk)  # no call: per packet
    try:
        return mqtt5.read(view)
    except IndexError:
        raise
    except BaseException as exc:
        failure = codec_failure(exc)
        if failure is None:
            raise
        raise failure from None


def codec_failure(exc: BaseException) -> FramingError | None:
    """What a failure of ``mqtt5.read`` other than ``IndexError`` means: a
    :class:`FramingError` for a malformed packet (``ValueError``, or the pyo3 panic on invalid
    UTF-8), None for anything else (not the bytes' fault: re-raise it). The one translation,
    used by :func:`read_packet` and by the reader's loop, which calls the codec directly."""
    if isinstance(exc, FramingError):
        return exc
    if isinstance(exc, ValueError):
        return FramingError(f"malformed packet: {exc}")
    if type(exc).__name__ == "PanicException":
        return FramingError("malformed packet: invalid UTF-8")
    return None


def bad_publish_topic(data: bytes, pos: int) -> bool:
    """Whether the PUBLISH starting at ``data[pos]`` has a topic name that is not UTF-8.

    The codec (mqtt5 0.8) panics on one, and the panic is printed whatever catches it, so the
    topic is looked at first: an ASCII topic (nearly all of them) costs one ``isascii``. False
    while the topic is not all there yet (the codec then asks for more bytes).
    """
    # Called for every PUBLISH (a chunk with binary framing is rarely all ASCII): the one- and
    # two-byte remaining lengths of most packets are read without a loop.
    try:
        if data[pos + 1] < 0x80:
            i = pos + 2
        elif data[pos + 2] < 0x80:
            i = pos + 3
        elif data[pos + 3] < 0x80:
            i = pos + 4
        else:
            i = pos + 5  # a fifth length byte is the codec's to refuse
        stop = i + 2 + ((data[i] << 8) | data[i + 1])
    except IndexError:
        return False  # the length or the topic's is not all there yet
    if stop > len(data):
        return False
    topic = data[i + 2 : stop]
    if topic.isascii():
        return False
    try:
        topic.decode()
    except UnicodeDecodeError:
        return True
    return False
