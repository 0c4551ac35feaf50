"""The session's reader alone: a byte stream in, whole packets out, a typed error at bad bytes.

No session: what a packet means is the session's (``test_session.py``); here only where packets
end, what waits for more bytes, and which bytes end the link.
"""

from __future__ import annotations

import itertools

import mqtt5
from hypothesis import given
from hypothesis import strategies as st
from mqtt5 import ConnAckPacket, PingRespPacket, PubAckPacket, PublishPacket, QoS

from support.codec import codec_utf8_reports
from tars.mqtt._core.codes import MALFORMED, PACKET_TOO_LARGE
from tars.mqtt._core.reader import Reader, ReadError

PUBLISH = PublishPacket("a/b", b"x" * 300, qos=QoS.AT_LEAST_ONCE, packet_id=7).write()
PUBACK = PubAckPacket(3).write()
PINGRESP = PingRespPacket().write()


def test_whole_packets_come_out_in_order() -> None:
    packets, error = Reader().feed(PUBACK + PUBLISH + PINGRESP)
    assert error is None
    assert [type(p) for p in packets] == [PubAckPacket, PublishPacket, PingRespPacket]
    assert isinstance(packets[1], PublishPacket)
    assert (packets[1].topic, packets[1].packet_id, len(packets[1].payload)) == ("a/b", 7, 300)


def test_a_packet_split_over_chunks_waits_for_the_rest() -> None:
    reader = Reader()
    packets, error = reader.feed(PUBACK + PUBLISH[:10])
    assert ([type(p) for p in packets], error) == ([PubAckPacket], None)
    assert reader.buffered == 10
    assert reader.feed(PUBLISH[10:100]) == ([], None)  # still short: nothing decoded
    packets, error = reader.feed(PUBLISH[100:] + PINGRESP)
    assert ([type(p) for p in packets], error) == ([PublishPacket, PingRespPacket], None)
    assert reader.buffered == 0


@given(st.lists(st.integers(1, len(PUBLISH) * 2 + len(PUBACK) - 1), max_size=8))
def test_any_split_of_a_stream_gives_the_same_packets(cuts: list[int]) -> None:
    stream = PUBLISH + PUBACK + PUBLISH
    bounds = [0, *sorted(set(cuts)), len(stream)]
    reader = Reader()
    kinds: list[type] = []
    for start, end in itertools.pairwise(bounds):
        packets, error = reader.feed(stream[start:end])
        assert error is None
        kinds += [type(p) for p in packets]
    assert kinds == [PublishPacket, PubAckPacket, PublishPacket]
    assert reader.buffered == 0


def test_clear_forgets_a_partial_packet_of_the_last_link() -> None:
    reader = Reader()
    reader.feed(PUBLISH[:50])
    reader.clear()
    packets, error = reader.feed(PUBACK)
    assert ([type(p) for p in packets], error, reader.buffered) == ([PubAckPacket], None, 0)


def test_a_reserved_first_byte_ends_the_link_after_the_packets_before_it() -> None:
    packets, error = Reader().feed(PUBACK + b"\x00\x7f")  # type 0 is reserved
    assert [type(p) for p in packets] == [PubAckPacket]
    assert error is not None
    assert error.reason == MALFORMED
    assert "reserved packet type 0" in error.message


def test_a_packet_whose_fields_overrun_its_length_is_malformed() -> None:
    # A SUBACK of 3 bytes whose property length announces 5: all its bytes are there.
    _, error = Reader().feed(b"\x90\x03\x00\x01\x05" + PINGRESP)
    assert error is not None
    assert error.reason == MALFORMED


def test_a_topic_that_is_not_utf8_is_refused_before_the_codec_sees_it() -> None:
    _, error = Reader().feed(b"\x30\x05\x00\x02\xff\xfe\x00")
    assert error == ReadError(MALFORMED, "malformed packet: topic not UTF-8")


def test_a_packet_over_our_maximum_is_refused_before_it_is_buffered() -> None:
    reader = Reader(max_packet_size=100)
    packets, error = reader.feed(PUBACK + PUBLISH[:5])  # only its header: 300+ bytes announced
    assert [type(p) for p in packets] == [PubAckPacket]
    assert error is not None
    assert error.reason == PACKET_TOO_LARGE
    assert reader.buffered == 0


def test_a_whole_packet_over_our_maximum_is_refused() -> None:
    _, error = Reader(max_packet_size=100).feed(PUBLISH)
    assert error is not None
    assert error.reason == PACKET_TOO_LARGE


def test_an_mqtt_3_connack_is_told_apart_from_other_malformed_bytes() -> None:
    _, error = Reader().feed(b"\x20\x02\x00\x01")  # MQTT 3.1.1: "unacceptable protocol version"
    assert error is not None
    assert (error.reason, error.v311_connack) == (MALFORMED, True)
    good = ConnAckPacket(reason_code=mqtt5.ConnAckReasonCode.SUCCESS).write()
    assert Reader().feed(good)[1] is None


# The reader calls the codec itself (not through framing.read_packet): its failures must come out
# as the same ReadError, and nothing else may escape.


def test_a_codec_refusal_ends_the_link_after_the_packets_before_it() -> None:
    packets, error = Reader().feed(PUBACK + b"\x20\x03\x00\x00\x05")  # CONNACK, bad properties
    assert [type(p) for p in packets] == [PubAckPacket]
    assert error == ReadError(MALFORMED, "malformed packet: Invalid remaining length")


def test_invalid_utf8_past_the_topic_is_malformed_not_a_crash() -> None:
    """The codec panics on a content type that is not UTF-8 (the topic check does not look
    there): the reader names it malformed, after the packets before it."""
    content_type_ff_fe = b"\x30\x09\x00\x01t\x05\x03\x00\x02\xff\xfe"
    with codec_utf8_reports() as reported:
        packets, error = Reader().feed(PUBACK + content_type_ff_fe)
    assert reported  # the codec's own report of the bad string, before its panic
    assert [type(p) for p in packets] == [PubAckPacket]
    assert error == ReadError(MALFORMED, "malformed packet: invalid UTF-8")


_VALID = [PUBLISH, PUBACK, PINGRESP, ConnAckPacket(session_present=False).write()]


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    """Valid packets with a few bytes changed, or random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(_VALID), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(_hostile())
def test_hostile_bytes_give_packets_and_at_most_a_read_error(data: bytes) -> None:
    with codec_utf8_reports():
        packets, error = Reader().feed(data)  # raises nothing
    assert error is None or error.reason in (MALFORMED, PACKET_TOO_LARGE)
    assert all(isinstance(p, mqtt5.Packet) for p in packets)


def test_on_a_3_1_1_link_a_topic_the_codec_refuses_is_malformed_not_an_escape() -> None:
    """The 3.1.1 codec builds mqtt5 packets, whose constructors raise a plain ValueError on a
    topic such as ``a/+``. It used to escape feed() (the link torn down by the connection's
    catch-all, an ERROR with a traceback, the PUBACK read before it lost); now it is the same
    ReadError as any malformed packet, after the packets before it."""
    from tars.mqtt._core import mqtt311
    from tars.mqtt._core.stats import SessionStats

    reader = Reader()
    reader.read = mqtt311.Downgrade("c", SessionStats(), [False]).read
    wildcard_topic = b"\x30\x05\x00\x03a/+"
    packets, error = reader.feed(b"\x40\x02\x00\x07" + wildcard_topic)  # PUBACK 7, then it
    assert [(type(p), p.packet_id) for p in packets] == [(PubAckPacket, 7)]
    assert error is not None
    assert error.reason == MALFORMED
    assert error.message.startswith("malformed packet: ")
