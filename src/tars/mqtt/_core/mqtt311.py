"""The MQTT 3.1.1 codec: the session's and the test broker's packets on a 3.1.1 link.

Why our own: the ``mqtt5`` codec speaks only MQTT 5, and the one sans-I/O 3.1.1 codec on PyPI
(``mqtt-codec`` 1.0.2, 2019) is unmaintained and has packet classes of its own. This module is
small because it reuses the ``mqtt5`` packet classes: :func:`read` turns 3.1.1 bytes into the
same ``mqtt5`` objects (constructed with no properties) that ``mqtt5.read`` gives, and
:func:`write` turns such objects into 3.1.1 bytes. The session and the broker thus stay one
machine each, with the codec chosen per link (``docs/mqtt311.md``).

The client side needs one more step, :meth:`Downgrade.__call__`: the session writes its packets
as MQTT 5 bytes, and a 3.1.1 link rewrites that stream. The packets the session sends all the
time (PUBLISH, the acknowledgements, PINGREQ, DISCONNECT) are rewritten in place, without
building objects; the rare ones (CONNECT, SUBSCRIBE, UNSUBSCRIBE) are read back with
``mqtt5.read`` and written again by :func:`write`. So the MQTT 5 path pays nothing for 3.1.1.

Errors follow ``mqtt5.read``'s contract, which :mod:`.framing` relies on: ``IndexError`` while
the packet is incomplete, :class:`~.framing.FramingError` (a ``ValueError``) for bytes that are
not a 3.1.1 packet. Layouts: MQTT 3.1.1, OASIS Standard, sections 2 and 3.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    ConnAckReasonCode,
    ConnectPacket,
    DisconnectPacket,
    PingReqPacket,
    PingRespPacket,
    PubAckPacket,
    PubCompPacket,
    PublishPacket,
    PubRecPacket,
    PubRelPacket,
    QoS,
    SubAckPacket,
    SubAckReasonCode,
    SubscribePacket,
    TopicFilter,
    UnsubAckPacket,
    UnsubAckReasonCode,
    UnsubscribePacket,
    Will,
)

from .framing import FramingError

__all__ = [
    "PROTOCOL_LEVEL",
    "Downgrade",
    "connect_level",
    "read",
    "write",
]

log = logging.getLogger("tars.mqtt")

PROTOCOL_LEVEL: Final = 4  # the Protocol Level byte of a 3.1.1 CONNECT (MQTT 5's is 5)
_PROTOCOL_NAME: Final = b"\x00\x04MQTT"
_QOS: Final = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
# The fixed-header flags 3.1.1 requires of each packet type (2.2.2); PUBLISH (3) is apart.
_FLAGS: Final = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0}
# CONNACK return codes (3.2.2.3) <-> the MQTT 5 reason codes that mean the same (MQTT 5 kept
# their meaning: 0x84 Unsupported Protocol Version ... 0x87 Not authorized).
_CONNACK_IN: Final = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_CONNACK_OUT: Final = {0x00: 0, 0x84: 1, 0x85: 2, 0x88: 3, 0x89: 3, 0x86: 4, 0x8C: 4, 0x87: 5,
                       0x8A: 5}  # fmt: skip
_SUBACK_FAILURE: Final = 0x80
_NO_PERSISTENCE: Final = 0  # session expiry of a clean 3.1.1 session
_FOREVER: Final = (
    0xFFFFFFFF  # session expiry of a 3.1.1 session that is not clean (MQTT 5, 3.1.2.11.2)
)
# The MQTT 5 acknowledgements the session writes with no reason code are 3.1.1 already.
_ACK_KINDS: Final = frozenset((4, 5, 6, 7))


# --- reading ------------------------------------------------------------------------------------


def read(view: bytes | memoryview) -> tuple[mqtt5.Packet, int]:
    """Read the 3.1.1 packet at the start of ``view``: ``(packet, size)``, as ``mqtt5.read``.

    UNSUBACK carries no return codes in 3.1.1: it is read with none (:class:`Downgrade` knows
    how many its UNSUBSCRIBE asked for). Raises ``IndexError`` while the packet is incomplete and
    :class:`~.framing.FramingError` when the bytes are not a 3.1.1 packet.
    """
    packet, size, _ = _read(view)
    return packet, size


def _read(view: bytes | memoryview) -> tuple[mqtt5.Packet, int, int]:
    """:func:`read`, plus the type nibble of the packet."""
    end = len(view)
    if end < 2:
        raise IndexError("need more bytes")
    first = view[0]
    kind = first >> 4
    length = 0
    multiplier = 1
    pos = 1
    while True:
        if pos >= end:
            raise IndexError("need more bytes")
        if pos == 5:
            raise FramingError("malformed packet: remaining length longer than four bytes")
        byte = view[pos]
        pos += 1
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            break
        multiplier *= 128
    stop = pos + length
    if stop > end:
        raise IndexError("need more bytes")
    if kind == 3:
        if first & 0x06 == 0x06:
            raise FramingError("malformed packet: PUBLISH with QoS 3")
        return _read_publish(view, first, pos, stop), stop, 3
    flags = _FLAGS.get(kind)
    if flags is None:
        raise FramingError(f"malformed packet: packet type {kind} does not exist in MQTT 3.1.1")
    if first & 0x0F != flags:
        raise FramingError(f"malformed packet: bad flags {first & 0x0F:#x} for type {kind}")
    body = bytes(view[pos:stop])
    return _READERS[kind](body), stop, kind


class _Body:
    """A cursor over one packet's variable header and payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FramingError("malformed packet: truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        pos = self.pos
        if pos + 2 > len(self.data):
            raise FramingError("malformed packet: truncated")
        self.pos = pos + 2
        return (self.data[pos] << 8) | self.data[pos + 1]

    def binary(self) -> bytes:
        size = self.u16()
        pos = self.pos
        if pos + size > len(self.data):
            raise FramingError("malformed packet: a field overruns the packet")
        self.pos = pos + size
        return self.data[pos : pos + size]

    def text(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise FramingError("malformed packet: invalid UTF-8") from None
        if "\x00" in text:  # 1.5.3: a string must not hold U+0000
            raise FramingError("malformed packet: NUL in a string")
        return text

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def done(self) -> None:
        if self.pos != len(self.data):
            raise FramingError("malformed packet: bytes after the last field")


def _read_publish(view: bytes | memoryview, first: int, pos: int, stop: int) -> PublishPacket:
    if pos + 2 > stop:
        raise FramingError("malformed packet: truncated")
    topic_end = pos + 2 + ((view[pos] << 8) | view[pos + 1])
    if topic_end > stop:
        raise FramingError("malformed packet: a field overruns the packet")
    raw = bytes(view[pos + 2 : topic_end])
    try:
        topic = raw.decode()
    except UnicodeDecodeError:
        raise FramingError("malformed packet: topic not UTF-8") from None
    qos = (first >> 1) & 0x03
    packet_id = None
    pos = topic_end
    if qos:
        if pos + 2 > stop:
            raise FramingError("malformed packet: truncated")
        packet_id = (view[pos] << 8) | view[pos + 1]
        if not packet_id:
            raise FramingError("malformed packet: packet id 0")
        pos += 2
    return PublishPacket(
        topic,
        bytes(view[pos:stop]),
        qos=_QOS[qos],
        retain=bool(first & 0x01),
        packet_id=packet_id,
        duplicate=bool(first & 0x08),
    )


def _read_connect(body: bytes) -> ConnectPacket:
    b = _Body(body)
    name = b.binary()
    level = b.byte()
    if name != b"MQTT" or level != PROTOCOL_LEVEL:
        raise FramingError(f"not an MQTT 3.1.1 CONNECT (protocol {name!r}, level {level})")
    flags = b.byte()
    if flags & 0x01:
        raise FramingError("malformed packet: CONNECT reserved flag set")
    keep_alive = b.u16()
    client_id = b.text()
    will = None
    will_qos = (flags >> 3) & 0x03
    if flags & 0x04:
        if will_qos == 3:
            raise FramingError("malformed packet: will QoS 3")
        topic = b.text()
        will = Will(topic, payload=b.binary(), qos=_QOS[will_qos], retain=bool(flags & 0x20))
    elif will_qos or flags & 0x20:
        raise FramingError("malformed packet: will QoS or retain without a will")
    username = b.text() if flags & 0x80 else None
    if flags & 0x40 and not flags & 0x80:
        raise FramingError("malformed packet: password without a user name")
    password = b.binary() if flags & 0x40 else None
    b.done()
    clean = bool(flags & 0x02)
    return ConnectPacket(
        client_id,
        username=username,
        password=password,
        clean_start=clean,
        will=will,
        keep_alive=keep_alive,
        session_expiry_interval=_NO_PERSISTENCE if clean else _FOREVER,
    )


def _read_connack(body: bytes) -> ConnAckPacket:
    if len(body) != 2:
        raise FramingError("malformed packet: CONNACK of 3.1.1 has 2 bytes")
    flags, code = body
    if flags & 0xFE:
        raise FramingError("malformed packet: CONNACK reserved flags set")
    reason = _CONNACK_IN.get(code)
    if reason is None:
        raise FramingError(f"malformed packet: CONNACK return code {code}")
    # What a 3.1.1 broker cannot announce is set to what it means for us: no subscription
    # identifiers (routing falls back to topic matching), no topic aliases, no packet limit.
    return ConnAckPacket(
        session_present=bool(flags & 0x01),
        reason_code=ConnAckReasonCode(reason),
        subscription_id_available=False,
    )


def _packet_id_only(body: bytes) -> int:
    if len(body) != 2:
        raise FramingError("malformed packet: expected a packet id only")
    return (body[0] << 8) | body[1]


def _read_subscribe(body: bytes) -> SubscribePacket:
    b = _Body(body)
    packet_id = b.u16()
    filters: list[TopicFilter] = []
    while b.left:
        pattern = b.text()
        options = b.byte()
        if options & 0xFC or options & 0x03 == 3:
            raise FramingError("malformed packet: SUBSCRIBE requested QoS byte")
        # 3.1.1's forwarding rules are MQTT 5's options with these values.
        filters.append(TopicFilter(pattern, max_qos=_QOS[options], retain_as_published=False))
    if not filters:
        raise FramingError("malformed packet: SUBSCRIBE without a topic filter")
    return SubscribePacket(packet_id, filters)


def _read_suback(body: bytes) -> SubAckPacket:
    if len(body) < 3:
        raise FramingError("malformed packet: SUBACK without a return code")
    codes: list[SubAckReasonCode] = []
    for code in body[2:]:
        if code > 2 and code != _SUBACK_FAILURE:
            raise FramingError(f"malformed packet: SUBACK return code {code:#x}")
        codes.append(SubAckReasonCode(code))
    return SubAckPacket((body[0] << 8) | body[1], codes)


def _read_unsubscribe(body: bytes) -> UnsubscribePacket:
    b = _Body(body)
    packet_id = b.u16()
    patterns: list[str] = []
    while b.left:
        patterns.append(b.text())
    if not patterns:
        raise FramingError("malformed packet: UNSUBSCRIBE without a topic filter")
    return UnsubscribePacket(packet_id, patterns)


def _empty(body: bytes, packet: mqtt5.Packet) -> mqtt5.Packet:
    if body:
        raise FramingError(f"malformed packet: {type(packet).__name__} has no body in 3.1.1")
    return packet


_READERS: Final[dict[int, Callable[[bytes], mqtt5.Packet]]] = {
    1: _read_connect,
    2: _read_connack,
    4: lambda body: PubAckPacket(_packet_id_only(body)),
    5: lambda body: PubRecPacket(_packet_id_only(body)),
    6: lambda body: PubRelPacket(_packet_id_only(body)),
    7: lambda body: PubCompPacket(_packet_id_only(body)),
    8: _read_subscribe,
    9: _read_suback,
    10: _read_unsubscribe,
    11: lambda body: UnsubAckPacket(_packet_id_only(body), []),
    12: lambda body: _empty(body, PingReqPacket()),
    13: lambda body: _empty(body, PingRespPacket()),
    14: lambda body: _empty(body, DisconnectPacket()),
}


def connect_level(data: bytes | bytearray | memoryview) -> int | None:
    """The Protocol Level of the CONNECT at the start of ``data`` (4: 3.1.1, 5: MQTT 5), or
    None while too few bytes are there to tell. A broker reads it to choose the codec."""
    end = len(data)
    pos = 1
    while pos < min(end, 5) and data[pos] & 0x80:
        pos += 1
    name_at = pos + 1  # past the remaining length: the protocol name ("MQTT"; 3.1: "MQIsdp")
    if name_at + 2 > end:
        return None
    level_at = name_at + 2 + ((data[name_at] << 8) | data[name_at + 1])
    return data[level_at] if level_at < end else None


# --- writing ------------------------------------------------------------------------------------

_ONE_BYTE: Final = [bytes((i,)) for i in range(256)]


def _length(size: int) -> bytes:
    if size < 128:  # most packets: one or two bytes, without the loop
        return _ONE_BYTE[size]
    if size < 16_384:
        return bytes(((size & 0x7F) | 0x80, size >> 7))
    out = bytearray()
    while True:
        byte = size % 128
        size //= 128
        if size:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _frame(first: int, body: bytes) -> bytes:
    if len(body) > 268_435_455:
        raise ValueError("packet larger than MQTT's 256 MB limit")
    return bytes((first,)) + _length(len(body)) + body


def _text(value: str) -> bytes:
    return _binary(value.encode())


def _binary(value: bytes) -> bytes:
    if len(value) > 65535:
        raise ValueError("a string or binary field longer than 65535 bytes")
    return len(value).to_bytes(2, "big") + value


def write(packet: mqtt5.Packet) -> bytes:
    """The 3.1.1 bytes of ``packet`` (an ``mqtt5`` packet object); its properties are not
    written (3.1.1 has none: see ``docs/mqtt311.md`` for what each one becomes).

    Reason codes become what 3.1.1 can say: a CONNACK refusal its nearest return code, a SUBACK
    failure 0x80, and those of the other acknowledgements nothing. Raises ``ValueError`` for a
    packet 3.1.1 does not have (AUTH) or a field it cannot hold.
    """
    kind = type(packet)
    if kind is PublishPacket:
        assert isinstance(packet, PublishPacket)
        qos = int(packet.qos)
        first = 0x30 | (qos << 1) | (0x08 if packet.duplicate else 0) | bool(packet.retain)
        body = _text(packet.topic)
        if qos:
            if not packet.packet_id:
                raise ValueError("a QoS 1/2 PUBLISH needs a packet id")
            body += packet.packet_id.to_bytes(2, "big")
        return _frame(first, body + bytes(packet.payload))
    if kind is PubAckPacket or kind is PubRecPacket or kind is PubCompPacket:
        assert isinstance(packet, PubAckPacket | PubRecPacket | PubCompPacket)
        first = {PubAckPacket: 0x40, PubRecPacket: 0x50, PubCompPacket: 0x70}[kind]
        return _frame(first, packet.packet_id.to_bytes(2, "big"))
    if kind is PubRelPacket:
        assert isinstance(packet, PubRelPacket)
        return _frame(0x62, packet.packet_id.to_bytes(2, "big"))
    if kind is PingReqPacket:
        return b"\xc0\x00"
    if kind is PingRespPacket:
        return b"\xd0\x00"
    if kind is DisconnectPacket:
        return b"\xe0\x00"
    if kind is ConnectPacket:
        assert isinstance(packet, ConnectPacket)
        return _write_connect(packet)
    if kind is ConnAckPacket:
        assert isinstance(packet, ConnAckPacket)
        reason = int(packet.reason_code)
        code = _CONNACK_OUT.get(reason, 3 if reason >= 0x80 else 0)
        present = 1 if packet.session_present and code == 0 else 0
        return bytes((0x20, 0x02, present, code))
    if kind is SubscribePacket:
        assert isinstance(packet, SubscribePacket)
        body = packet.packet_id.to_bytes(2, "big")
        for tf in packet.topic_filters:
            body += _text(tf.pattern) + bytes((int(tf.max_qos),))
        return _frame(0x82, body)
    if kind is SubAckPacket:
        assert isinstance(packet, SubAckPacket)
        codes = bytes(c if c < 0x80 else _SUBACK_FAILURE for c in map(int, packet.reason_codes))
        return _frame(0x90, packet.packet_id.to_bytes(2, "big") + codes)
    if kind is UnsubscribePacket:
        assert isinstance(packet, UnsubscribePacket)
        body = packet.packet_id.to_bytes(2, "big")
        for pattern in packet.patterns:
            body += _text(pattern)
        return _frame(0xA2, body)
    if kind is UnsubAckPacket:
        assert isinstance(packet, UnsubAckPacket)
        return _frame(0xB0, packet.packet_id.to_bytes(2, "big"))
    raise ValueError(f"{kind.__name__} does not exist in MQTT 3.1.1")


def _write_connect(packet: ConnectPacket) -> bytes:
    # A 3.1.1 session is kept after the link exactly when it is not clean: MQTT 5's Clean
    # Start and Session Expiry Interval fold into one flag (docs/mqtt311.md).
    clean = packet.session_expiry_interval == 0
    flags = 0x02 if clean else 0
    payload = _text(packet.client_id)
    will = packet.will
    if will is not None:
        flags |= 0x04 | (int(will.qos) << 3) | (0x20 if will.retain else 0)
        payload += _text(will.topic) + _binary(bytes(will.payload or b""))
    if packet.username is not None:
        flags |= 0x80
        payload += _text(packet.username)
    if packet.password is not None:
        if packet.username is None:
            raise ValueError("MQTT 3.1.1 sends a password only with a user name")
        flags |= 0x40
        payload += _binary(bytes(packet.password))
    header = _PROTOCOL_NAME + bytes((PROTOCOL_LEVEL, flags)) + packet.keep_alive.to_bytes(2, "big")
    return _frame(0x10, header + payload)


# --- the client's outgoing stream --------------------------------------------------------------


class _DropCounter(Protocol):
    properties_dropped: int


class Downgrade:
    """One client link's 3.1.1 rewriting of the session's MQTT 5 output (see the module
    docstring), and the little it must remember for :meth:`read`: how many filters each
    UNSUBSCRIBE named, since the 3.1.1 UNSUBACK does not say.

    Properties a PUBLISH carried are dropped (3.1.1 has no place for them): counted in
    ``stats.properties_dropped`` and logged once per client (``warned``, shared by its links).
    """

    def __init__(self, client_id: str, stats: _DropCounter, warned: list[bool]) -> None:
        self._client_id = client_id
        self._stats = stats
        self._warned = warned
        self._unsubscribes: dict[int, int] = {}

    def read(self, view: bytes | memoryview) -> tuple[mqtt5.Packet, int]:
        """:func:`read`, with each UNSUBACK given one SUCCESS per filter of its UNSUBSCRIBE
        (3.1.1 has no refusal to report)."""
        packet, size, kind = _read(view)
        if kind == 11:
            assert isinstance(packet, UnsubAckPacket)
            count = self._unsubscribes.pop(packet.packet_id, 0)
            packet = UnsubAckPacket(packet.packet_id, [UnsubAckReasonCode.SUCCESS] * count)
        return packet, size

    def __call__(self, data: bytes) -> bytes:
        """The 3.1.1 bytes of ``data``: whole MQTT 5 packets as the session wrote them."""
        out: list[bytes | memoryview] = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        while pos < end:
            first = data[pos]
            kind = first >> 4
            length = 0
            shift = 0
            i = pos + 1
            while True:
                byte = data[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            stop = i + length
            if kind == 3:
                self._publish(out, data, view, first, i, stop)
            elif kind in _ACK_KINDS:
                out.append(view[pos:stop] if length == 2 else bytes((first, 2)) + data[i : i + 2])
            elif kind == 14:
                # 3.1.1's DISCONNECT means "all is well: discard my will". One with an MQTT 5
                # reason (a protocol error, 0x04 "with will") is not sent: the link just
                # closes, and the broker publishes the will, as MQTT 5 does for those reasons.
                if length == 0 or data[i] == 0:
                    out.append(b"\xe0\x00")
            elif kind == 12 or kind == 13:
                out.append(view[pos:stop])
            else:  # CONNECT, SUBSCRIBE, UNSUBSCRIBE: rare, read back and written anew
                packet, _ = mqtt5.read(view[pos:stop])
                if type(packet) is UnsubscribePacket:
                    assert isinstance(packet, UnsubscribePacket)
                    self._unsubscribes[packet.packet_id] = len(packet.patterns)
                out.append(write(packet))
            pos = stop
        result = b"".join(out)
        view.release()
        return result

    def _publish(
        self,
        out: list[bytes | memoryview],
        data: bytes,
        view: memoryview,
        first: int,
        pos: int,
        stop: int,
    ) -> None:
        topic_end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
        head_end = topic_end + (2 if first & 0x06 else 0)
        # MQTT 5 puts the properties here: their length (a variable byte integer), then them.
        props = 0
        shift = 0
        i = head_end
        while True:
            byte = data[i]
            i += 1
            props |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if props:
            self._dropped()
        body_size = (head_end - pos) + (stop - i - props)
        # Slices of the input: the payload is copied once, by the caller's join.
        out += (_ONE_BYTE[first], _length(body_size), view[pos:head_end], view[i + props : stop])

    def _dropped(self) -> None:
        self._stats.properties_dropped += 1
        if self._warned[0]:
            return
        self._warned[0] = True
        log.warning(
            "%s: this link speaks MQTT 3.1.1, which has no PUBLISH properties: they are not "
            "sent (user properties such as trace context, content type, message expiry; "
            "request() and reply() use the envelope instead; see docs/mqtt311.md). Said once; "
            "counted in stats as properties_dropped.",
            self._client_id,
        )
