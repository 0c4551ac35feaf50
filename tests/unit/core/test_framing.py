"""Framing shared by the client's session and the test broker: packet sizes, first bytes, decoding.

Pure functions over bytes: no socket, no clock. Both ends of every link rely on these answers
to decide whether to wait for more bytes or to end the link, so each answer is pinned here.
"""

from __future__ import annotations

import mqtt5
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.codec import codec_utf8_reports
from tars.mqtt._core.framing import (
    FramingError,
    bad_publish_topic,
    check_fixed_header,
    codec_failure,
    frame_length,
    read_packet,
)

_MAX_REMAINING = 268_435_455  # the largest value four length bytes can express


def remaining_length(value: int) -> bytes:
    """MQTT's variable byte integer, written here independently of the code under test."""
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_PACKETS: list[mqtt5.Packet] = [
    mqtt5.ConnectPacket("framing", will=mqtt5.Will("will/t", payload=b"bye")),
    mqtt5.ConnAckPacket(session_present=True),
    mqtt5.PublishPacket("a/b", b"x"),
    mqtt5.PublishPacket("a/b", b"y" * 300, qos=mqtt5.QoS.EXACTLY_ONCE, packet_id=7, retain=True),
    mqtt5.PublishPacket("a/b", b"z", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=8, duplicate=True),
    mqtt5.PubAckPacket(1),
    mqtt5.PubRecPacket(2),
    mqtt5.PubRelPacket(3),
    mqtt5.PubCompPacket(4),
    mqtt5.SubscribePacket(5, [mqtt5.TopicFilter("a/#")]),
    mqtt5.SubAckPacket(5, [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]),
    mqtt5.UnsubscribePacket(6, ["a/#"]),
    mqtt5.UnsubAckPacket(6, [mqtt5.UnsubAckReasonCode.SUCCESS]),
    mqtt5.PingReqPacket(),
    mqtt5.PingRespPacket(),
    mqtt5.DisconnectPacket(),
]
_WIRE = [pytest.param(packet.write(), id=type(packet).__name__) for packet in _PACKETS]


# -- frame_length ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", _WIRE)
def test_frame_length_of_a_whole_packet_is_its_size(data: bytes) -> None:
    assert frame_length(data) == len(data)
    assert frame_length(bytearray(data)) == len(data)
    assert frame_length(memoryview(data)) == len(data)


@pytest.mark.parametrize("data", _WIRE)
def test_frame_length_needs_only_the_fixed_header(data: bytes) -> None:
    header = 2
    while data[header - 1] & 0x80:
        header += 1
    assert frame_length(data[:header]) == len(data)
    for cut in range(header):
        assert frame_length(data[:cut]) is None, f"{cut} bytes of {data!r}"


def test_frame_length_reads_at_an_offset() -> None:
    first = mqtt5.PingReqPacket().write()
    second = mqtt5.PublishPacket("a/b", b"q" * 200).write()
    stream = first + second
    assert frame_length(stream, 0) == len(first)
    assert frame_length(stream, len(first)) == len(second)
    assert frame_length(stream[: len(first) + 2], len(first)) is None  # 1 of 2 length bytes


@given(st.integers(0, _MAX_REMAINING))
def test_frame_length_decodes_every_remaining_length(value: int) -> None:
    encoded = remaining_length(value)
    header = b"\x30" + encoded
    assert frame_length(header) == len(header) + value
    assert frame_length(header[:-1]) is None


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4)],
)
def test_remaining_length_boundaries(value: int, size: int) -> None:
    encoded = remaining_length(value)
    assert len(encoded) == size
    assert frame_length(b"\x30" + encoded) == 1 + size + value


def test_remaining_length_over_four_bytes_is_malformed() -> None:
    with pytest.raises(FramingError, match="longer than four bytes"):
        frame_length(b"\x30\xff\xff\xff\xff\x01")
    # Known malformed as soon as the fifth length byte is there, without waiting for more.
    with pytest.raises(FramingError):
        frame_length(b"\x30\x80\x80\x80\x80")


def test_framing_error_is_a_value_error() -> None:
    """Callers that catch ValueError for bad input keep working."""
    assert issubclass(FramingError, ValueError)


# -- check_fixed_header ------------------------------------------------------------------------


@pytest.mark.parametrize("data", _WIRE)
def test_every_first_byte_the_codec_writes_is_accepted(data: bytes) -> None:
    check_fixed_header(data[0])


@pytest.mark.parametrize("first", [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x38, 0x3B, 0x3C, 0x3D])
def test_publish_flags_dup_qos_retain_are_accepted(first: int) -> None:
    check_fixed_header(first)


@pytest.mark.parametrize("first", range(0x00, 0x10), ids=lambda first: f"{first:#04x}")
def test_reserved_packet_type_0_is_refused(first: int) -> None:
    with pytest.raises(FramingError, match="reserved packet type 0"):
        check_fixed_header(first)


@pytest.mark.parametrize("first", [0x36, 0x37, 0x3E, 0x3F])
def test_publish_with_qos_3_is_refused(first: int) -> None:
    with pytest.raises(FramingError, match="QoS 3"):
        check_fixed_header(first)


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(0x11, id="CONNECT-with-flags"),
        pytest.param(0x60, id="PUBREL-without-0x2"),
        pytest.param(0x80, id="SUBSCRIBE-without-0x2"),
        pytest.param(0xA0, id="UNSUBSCRIBE-without-0x2"),
        pytest.param(0x42, id="PUBACK-with-0x2"),
        pytest.param(0xC1, id="PINGREQ-with-flags"),
        pytest.param(0xE8, id="DISCONNECT-with-flags"),
    ],
)
def test_bad_flags_for_the_type_are_refused(first: int) -> None:
    with pytest.raises(FramingError, match="bad flags"):
        check_fixed_header(first)


# -- read_packet -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", _WIRE)
def test_read_packet_decodes_one_packet_and_says_its_size(data: bytes) -> None:
    packet, size = read_packet(data + mqtt5.PingReqPacket().write())
    assert size == len(data)
    assert packet.write() == data


def test_read_packet_accepts_a_memoryview() -> None:
    data = mqtt5.PubAckPacket(9).write()
    packet, size = read_packet(memoryview(data))
    assert packet == mqtt5.PubAckPacket(9)
    assert size == len(data)


def test_read_packet_of_a_partial_packet_asks_for_more_bytes() -> None:
    """IndexError, not FramingError: only the caller knows whether more bytes may come."""
    data = mqtt5.PublishPacket("a/b", b"payload").write()
    with pytest.raises(IndexError):
        read_packet(data[:-1])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc0\x02\x00\x00", id="pingreq-with-body"),
        pytest.param(b"\x30\x03\x00\x01t", id="fields-overrun-remaining-length"),
        pytest.param(b"\x20\x03\x00\x00\x05", id="connack-bad-property-length"),
    ],
)
def test_read_packet_of_malformed_bytes_is_a_framing_error(data: bytes) -> None:
    with pytest.raises(FramingError, match="malformed packet"):
        read_packet(data)


def test_invalid_utf8_is_a_framing_error_not_a_panic() -> None:
    """mqtt5 0.8 panics (a BaseException) on invalid UTF-8: the peer's bytes end the link,
    never the process."""
    with codec_utf8_reports() as reported, pytest.raises(FramingError, match="invalid UTF-8"):
        read_packet(b"\x30\x05\x00\x02\xff\xfe\x00")  # PUBLISH to a topic of 2 bad bytes
    assert reported
    assert all(isinstance(exc, UnicodeDecodeError) for exc in reported)


_VALID = [packet.write() for packet in _PACKETS]


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid packet with a few bytes changed (reaches deeper code)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(hostile_bytes())
def test_read_packet_fails_only_in_the_two_documented_ways(data: bytes) -> None:
    with codec_utf8_reports() as reported:
        try:
            _, size = read_packet(data)
        except (IndexError, FramingError):
            pass
        else:
            assert 0 < size <= len(data)
    assert all(isinstance(exc, UnicodeDecodeError) for exc in reported)


# --- codec_failure: the one translation of the codec's failures (read_packet and the reader) ---


def test_codec_failure_names_malformed_bytes_and_leaves_the_rest() -> None:
    assert str(codec_failure(ValueError("Invalid remaining length"))) == (
        "malformed packet: Invalid remaining length"
    )
    framing = FramingError("malformed packet: truncated")
    assert codec_failure(framing) is framing  # already ours: kept as it is
    assert codec_failure(RuntimeError("a bug, not the bytes")) is None
    assert codec_failure(KeyboardInterrupt()) is None


def test_codec_failure_names_the_codec_panic_invalid_utf8() -> None:
    with codec_utf8_reports():
        try:
            mqtt5.read(memoryview(b"\x30\x05\x00\x02\xff\xfe\x00"))
        except BaseException as exc:
            panic = exc
        else:  # pragma: no cover - the codec accepted invalid UTF-8
            pytest.fail("the codec read a topic that is not UTF-8")
    failure = codec_failure(panic)
    assert isinstance(failure, FramingError)
    assert str(failure) == "malformed packet: invalid UTF-8"


# --- bad_publish_topic: called for every PUBLISH the reader sees -------------------------------


def _publish_to(topic: bytes, payload_size: int) -> bytes:
    """A QoS 0 PUBLISH to ``topic`` (raw bytes, UTF-8 or not), written by hand."""
    body = len(topic).to_bytes(2, "big") + topic + b"\x00" + b"p" * payload_size
    length, size = bytearray(), len(body)
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return b"\x30" + bytes(length) + body


@pytest.mark.parametrize("payload_size", [0, 200, 20_000, 2_100_000], ids=["1", "2", "3", "4"])
def test_bad_publish_topic_reads_every_width_of_remaining_length(payload_size: int) -> None:
    """The remaining length is read without a loop for 1 to 3 bytes, and a 4th is read too."""
    bad = _publish_to(b"\xff\xfe", payload_size)
    width = len(bad) - 1 - 2 - 2 - 1 - payload_size
    assert width == [0, 200, 20_000, 2_100_000].index(payload_size) + 1
    assert bad_publish_topic(b"xx" + bad, 2)
    assert not bad_publish_topic(_publish_to("é/t".encode(), payload_size), 0)
    assert not bad_publish_topic(_publish_to(b"a/t", payload_size), 0)


def test_bad_publish_topic_waits_for_a_topic_not_all_there() -> None:
    bad = _publish_to(b"\xff\xfe", 20_000)
    for cut in range(1, 8):  # the length, the topic's length, then the topic, in part
        assert not bad_publish_topic(bad[:cut], 0)
    assert bad_publish_topic(bad[:8], 0)  # the whole topic: enough to tell
