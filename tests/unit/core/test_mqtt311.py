"""The MQTT 3.1.1 codec against the specification's packet layouts (OASIS MQTT 3.1.1, sections
2 and 3), byte for byte, and the session speaking 3.1.1 through it.

The expected bytes are written out by hand from the spec's figures, not produced by the codec
itself, so a layout mistake cannot hide behind a round trip.
"""

from __future__ import annotations

import contextlib

import mqtt5
import pytest
from hypothesis import given
from hypothesis import strategies as st
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
    UnsubscribePacket,
    Will,
)

from tars.mqtt._core import mqtt311
from tars.mqtt._core.events import Connected, ConnectFailed, PublishDone, Subscribed, Unsubscribed
from tars.mqtt._core.framing import FramingError
from tars.mqtt._core.session import Session, SessionState
from tars.mqtt._core.stats import SessionStats

# --- fixed header and remaining length (2.2.3) -------------------------------------------------


@pytest.mark.parametrize(
    ("size", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_remaining_length_matches_the_spec_table(size: int, encoded: str) -> None:
    assert mqtt311._length(size).hex() == encoded


def test_a_fifth_length_byte_is_malformed() -> None:
    with pytest.raises(FramingError, match="four bytes"):
        mqtt311.read(bytes.fromhex("30ffffffff01"))


@pytest.mark.parametrize("partial", ["", "30", "3080", "300500036162"])
def test_an_incomplete_packet_asks_for_more_bytes(partial: str) -> None:
    with pytest.raises(IndexError):
        mqtt311.read(bytes.fromhex(partial))


@pytest.mark.parametrize(
    "first", [0x00, 0xF0, 0x41, 0x60, 0x80, 0xA0, 0xC1, 0x36, 0x11], ids=lambda b: f"{b:#04x}"
)
def test_reserved_types_and_bad_flags_are_malformed(first: int) -> None:
    with pytest.raises(FramingError):
        mqtt311.read(bytes((first, 0x02, 0x00, 0x01)))


# --- CONNECT (3.1) -------------------------------------------------------------------------------


def test_connect_is_written_as_in_the_spec() -> None:
    packet = ConnectPacket(
        "c",
        username="user",
        password=b"pw",
        keep_alive=10,
        will=Will("w", payload=b"by", qos=QoS.AT_LEAST_ONCE, retain=True),
        session_expiry_interval=0,
    )
    expected = bytes.fromhex(
        "10" "1e" "00044d515454" "04" "ee" "000a" "000163" "000177" "00026279"
        "000475736572" "00027077"
    )  # fmt: skip
    assert mqtt311.write(packet) == expected
    back, size = mqtt311.read(expected)
    assert size == len(expected)
    assert isinstance(back, ConnectPacket)
    fields = (back.client_id, back.username, back.password, back.keep_alive)
    assert fields == ("c", "user", b"pw", 10)
    assert back.clean_start is True
    assert back.session_expiry_interval == 0
    assert back.will is not None
    assert back.will.topic == "w"
    assert back.will.payload == b"by"
    assert back.will.qos == QoS.AT_LEAST_ONCE
    assert back.will.retain is True


def test_a_persistent_session_is_a_connect_without_clean_session() -> None:
    wire = mqtt311.write(ConnectPacket("c", clean_start=False, session_expiry_interval=3600))
    assert wire == bytes.fromhex("100d00044d51545404000000000163")
    back, _ = mqtt311.read(wire)
    assert isinstance(back, ConnectPacket)
    assert back.clean_start is False
    assert back.session_expiry_interval == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("00044d5154540502003c000163", "level 5"),  # MQTT 5's level
        ("00064d514973647003020000000163", "MQIsdp"),  # MQTT 3.1
        ("00044d5154540403003c000163", "reserved"),
        ("00044d5154540418003c000163", "will QoS"),  # will QoS 3 with no will
        ("00044d5154540442003c000163", "password"),  # password flag without user name
        ("00044d5154540402003c000163ff", "after"),
        ("00044d5154540402003c0002ff", "UTF-8|overruns"),
    ],
)
def test_bad_connects_are_refused(body: str, why: str) -> None:
    raw = bytes.fromhex(body)
    with pytest.raises(FramingError):
        mqtt311.read(bytes((0x10, len(raw))) + raw)


def test_connect_level_tells_the_codec_a_broker_needs() -> None:
    assert mqtt311.connect_level(mqtt311.write(ConnectPacket("c"))) == 4
    assert mqtt311.connect_level(ConnectPacket("c").write()) == 5
    assert mqtt311.connect_level(bytes.fromhex("10110006")) is None
    assert mqtt311.connect_level(bytes.fromhex("10")) is None


# --- CONNACK (3.2): return codes 0-5 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (0, ConnAckReasonCode.SUCCESS),
        (1, ConnAckReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
        (2, ConnAckReasonCode.CLIENT_ID_NOT_VALID),
        (3, ConnAckReasonCode.SERVER_UNAVAILABLE),
        (4, ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD),
        (5, ConnAckReasonCode.NOT_AUTHORIZED),
    ],
)
def test_connack_return_codes_are_the_mqtt5_reasons_of_the_same_meaning(
    code: int, reason: ConnAckReasonCode
) -> None:
    wire = bytes((0x20, 0x02, 0x00, code))
    packet, size = mqtt311.read(wire)
    assert size == 4
    assert isinstance(packet, ConnAckPacket)
    assert packet.reason_code == reason
    assert mqtt311.write(ConnAckPacket(reason_code=reason)) == wire


def test_connack_session_present_and_what_3_1_1_cannot_announce() -> None:
    packet, _ = mqtt311.read(bytes.fromhex("20020100"))
    assert isinstance(packet, ConnAckPacket)
    assert packet.session_present is True
    assert packet.subscription_id_available is False  # routing by topic matching instead
    assert packet.max_packet_size is None
    assert packet.topic_alias_max == 0
    refused = ConnAckPacket(reason_code=ConnAckReasonCode.BANNED, session_present=True)
    assert mqtt311.write(refused) == bytes.fromhex("20020005")  # never "present" when refused


@pytest.mark.parametrize("wire", ["20020006", "20020200", "2003000000", "200100"])
def test_bad_connacks_are_malformed(wire: str) -> None:
    with pytest.raises(FramingError):
        mqtt311.read(bytes.fromhex(wire))


# --- PUBLISH (3.3) and its acknowledgements (3.4-3.7) ------------------------------------------


def test_publish_layouts() -> None:
    qos0 = PublishPacket("a/b", b"hi", retain=True)
    assert mqtt311.write(qos0) == bytes.fromhex("31070003612f626869")
    qos2 = PublishPacket("a/b", b"hi", qos=QoS.EXACTLY_ONCE, packet_id=10, duplicate=True)
    wire = bytes.fromhex("3c090003612f62000a6869")
    assert mqtt311.write(qos2) == wire
    back, size = mqtt311.read(wire)
    assert size == len(wire)
    assert isinstance(back, PublishPacket)
    assert (back.topic, back.payload, int(back.qos), back.packet_id) == ("a/b", b"hi", 2, 10)
    assert back.duplicate is True
    assert back.retain is False


def test_publish_with_a_zero_packet_id_or_a_bad_topic_is_malformed() -> None:
    with pytest.raises(FramingError, match="packet id"):
        mqtt311.read(bytes.fromhex("32070003612f620000"))
    with pytest.raises(FramingError, match="UTF-8"):
        mqtt311.read(bytes.fromhex("30050002ff6100"))
    with pytest.raises(FramingError, match="QoS 3"):
        mqtt311.read(bytes.fromhex("36050001610001"))


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (PubAckPacket(7), "40020007"),
        (PubRecPacket(7), "50020007"),
        (PubRelPacket(7), "62020007"),
        (PubCompPacket(7), "70020007"),
    ],
)
def test_acknowledgements_are_a_packet_id(packet: mqtt5.Packet, wire: str) -> None:
    assert mqtt311.write(packet) == bytes.fromhex(wire)
    back, _ = mqtt311.read(bytes.fromhex(wire))
    assert type(back) is type(packet)
    with pytest.raises(FramingError):
        mqtt311.read(bytes.fromhex(wire[:2] + "03" + wire[4:] + "00"))  # a reason code: 5 only


# --- SUBSCRIBE / SUBACK (3.8, 3.9), UNSUBSCRIBE / UNSUBACK (3.10, 3.11) -----------------------


def test_subscribe_and_suback_layouts() -> None:
    packet = SubscribePacket(
        10, [TopicFilter("a/b", max_qos=QoS.AT_LEAST_ONCE), TopicFilter("c/d", max_qos=QoS(2))]
    )
    wire = bytes.fromhex("820e000a0003612f62010003632f6402")
    assert mqtt311.write(packet) == wire
    back, _ = mqtt311.read(wire)
    assert isinstance(back, SubscribePacket)
    assert [(f.pattern, int(f.max_qos)) for f in back.topic_filters] == [("a/b", 1), ("c/d", 2)]
    suback = SubAckPacket(10, [SubAckReasonCode(1), SubAckReasonCode.NOT_AUTHORIZED])
    assert mqtt311.write(suback) == bytes.fromhex("9004000a0180")  # any refusal is 0x80
    back_ack, _ = mqtt311.read(bytes.fromhex("9004000a0180"))
    assert isinstance(back_ack, SubAckPacket)
    assert [int(c) for c in back_ack.reason_codes] == [1, 0x80]


@pytest.mark.parametrize(
    "wire",
    ["8202000a", "8206000a00016104", "8206000a00016103", "9003000a03", "9002000a", "a202000a"],
)
def test_bad_subscriptions_are_malformed(wire: str) -> None:
    with pytest.raises(FramingError):
        mqtt311.read(bytes.fromhex(wire))


def test_unsubscribe_and_unsuback_layouts() -> None:
    wire = bytes.fromhex("a20c000b0003612f620003632f64")
    assert mqtt311.write(UnsubscribePacket(11, ["a/b", "c/d"])) == wire
    back, _ = mqtt311.read(wire)
    assert isinstance(back, UnsubscribePacket)
    assert back.patterns == ["a/b", "c/d"]
    assert mqtt311.write(UnsubAckPacket(11, [])) == bytes.fromhex("b002000b")


# --- PINGREQ, PINGRESP, DISCONNECT (3.12-3.14), AUTH ---------------------------------------------


def test_bodyless_packets() -> None:
    for packet, wire in (
        (PingReqPacket(), "c000"),
        (PingRespPacket(), "d000"),
        (DisconnectPacket(), "e000"),
    ):
        assert mqtt311.write(packet) == bytes.fromhex(wire)
        assert type(mqtt311.read(bytes.fromhex(wire))[0]) is type(packet)
    with pytest.raises(FramingError):
        mqtt311.read(bytes.fromhex("e00100"))  # MQTT 5's reason code: not in 3.1.1
    with pytest.raises(ValueError, match="Auth"):
        mqtt311.write(mqtt5.AuthPacket())


# --- the client's stream: MQTT 5 bytes rewritten as 3.1.1 --------------------------------------


def _downgrade() -> mqtt311.Downgrade:
    return mqtt311.Downgrade("c", SessionStats(), [False])


def test_the_session_output_is_rewritten_packet_by_packet() -> None:
    stream = b"".join(
        p.write()
        for p in (
            PublishPacket("t", b"x", qos=QoS(1), packet_id=3, user_properties=[("k", "v")]),
            PubAckPacket(4),
            PubRecPacket(5, reason_code=mqtt5.PubRecReasonCode.UNSPECIFIED_ERROR),
            PingReqPacket(),
            DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.NORMAL_DISCONNECTION),
            UnsubscribePacket(6, ["a", "b"]),
        )
    )  # fmt: skip
    expected = bytes.fromhex(
        "3206" "000174" "0003" "78" "40020004" "50020005" "c000" "e000" "a208" "0006" "000161"
        "000162"
    )  # fmt: skip
    assert _downgrade()(stream) == expected


def test_dropped_properties_are_counted_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    stats = SessionStats()
    downgrade = mqtt311.Downgrade("c", stats, [False])
    wire = PublishPacket("t", b"x", content_type="application/json").write()
    assert downgrade(wire + wire) == bytes.fromhex("300400017478300400017478")
    assert stats.properties_dropped == 2
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "MQTT 3.1.1" in caplog.records[0].message


def test_unsuback_gets_one_success_per_filter_of_its_unsubscribe() -> None:
    downgrade = _downgrade()
    downgrade(UnsubscribePacket(6, ["a", "b"]).write())
    packet, _ = downgrade.read(bytes.fromhex("b0020006"))
    assert isinstance(packet, UnsubAckPacket)
    assert [int(c) for c in packet.reason_codes] == [0, 0]


@given(
    topic=st.text(min_size=1, max_size=40).filter(lambda t: not set(t) & {"\x00", "+", "#"}),
    payload=st.binary(max_size=300),
    qos=st.integers(0, 2),
    retain=st.booleans(),
)
def test_any_publish_survives_the_rewrite(
    topic: str, payload: bytes, qos: int, retain: bool
) -> None:
    pid = 1 if qos else None
    mqtt5_wire = PublishPacket(topic, payload, qos=QoS(qos), retain=retain, packet_id=pid).write()
    back, _size = mqtt311.read(_downgrade()(mqtt5_wire))
    assert isinstance(back, PublishPacket)
    assert (back.topic, back.payload, int(back.qos), back.retain) == (topic, payload, qos, retain)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_the_error_contract(data: bytes) -> None:
    with contextlib.suppress(IndexError, FramingError):
        mqtt311.read(data)


# --- the session on a 3.1.1 link ----------------------------------------------------------------


def _session_311(**kwargs: object) -> Session:
    session = Session("c", **kwargs)  # type: ignore[arg-type]
    session.use_protocol(4)
    session.connection_made(0.0)
    return session


def test_the_session_speaks_3_1_1_end_to_end() -> None:
    session = _session_311(keep_alive=30)
    connect, _ = mqtt311.read(session.data_to_send())  # a 3.1.1 CONNECT, level 4
    assert isinstance(connect, ConnectPacket)
    assert connect.client_id == "c"
    events = session.receive_data(bytes.fromhex("20020000"), 1.0)
    assert any(isinstance(e, Connected) for e in events)
    assert session.state is SessionState.CONNECTED
    session.publish("t", b"x", 1, handle="h")
    sent, _ = mqtt311.read(session.data_to_send())
    assert isinstance(sent, PublishPacket)
    assert sent.packet_id is not None
    done = session.receive_data(bytes((0x40, 2, 0, sent.packet_id)), 2.0)
    assert [e.handle for e in done if isinstance(e, PublishDone)] == ["h"]
    # An incoming 3.1.1 PUBLISH is delivered and acknowledged with a 3.1.1 PUBACK.
    incoming = session.receive_data(bytes.fromhex("3206000174000979"), 3.0)
    assert [p.payload for p in incoming if isinstance(p, PublishPacket)] == [b"y"]
    assert session.data_to_send() == bytes.fromhex("40020009")


def test_subscribe_on_3_1_1_carries_no_subscription_identifier() -> None:
    session = _session_311()
    session.data_to_send()
    session.receive_data(bytes.fromhex("20020000"), 1.0)
    session.subscribe([TopicFilter("a/+")], handle="s")
    wire = session.data_to_send()
    packet, _ = mqtt311.read(wire)
    assert isinstance(packet, SubscribePacket)
    events = session.receive_data(bytes((0x90, 3)) + wire[2:4] + b"\x80", 2.0)
    assert [e.reason_codes for e in events if isinstance(e, Subscribed)] == [(0x80,)]
    session.unsubscribe(["a/+"], handle="u")
    unsub, _ = mqtt311.read(session.data_to_send())
    assert isinstance(unsub, UnsubscribePacket)
    ack = bytes((0xB0, 2)) + unsub.packet_id.to_bytes(2, "big")
    events = session.receive_data(ack, 3.0)
    assert [e.reason_codes for e in events if isinstance(e, Unsubscribed)] == [(0,)]


def test_a_refusal_on_3_1_1_is_the_same_connect_failure() -> None:
    session = _session_311()
    events = session.receive_data(bytes.fromhex("20020005"), 1.0)
    assert [(e.reason_code) for e in events if isinstance(e, ConnectFailed)] == [0x87]


def test_an_mqtt5_session_meeting_a_3_1_1_broker_says_how_to_fix_it() -> None:
    session = Session("c")
    session.connection_made(0.0)
    events = session.receive_data(bytes.fromhex("20020001"), 1.0)
    failed = [e for e in events if isinstance(e, ConnectFailed)]
    assert failed
    assert failed[0].reason_code == 0x84
    assert "protocol='3.1.1'" in (failed[0].reason_string or "")


def test_the_level_is_checked() -> None:
    with pytest.raises(ValueError, match="protocol level"):
        Session("c").use_protocol(3)


def test_a_311_broker_is_not_held_to_a_receive_maximum_it_was_never_told() -> None:
    session = _session_311(receive_maximum=2)
    session.data_to_send()
    session.receive_data(bytes.fromhex("20020000"), 1.0)
    for packet_id in (1, 2, 3):  # three QoS 2 messages awaiting PUBREL: more than 2
        events = session.receive_data(bytes((0x34, 6, 0, 1, 0x74, 0, packet_id, 0x78)), 2.0)
        assert [type(e) for e in events] == [PublishPacket]
    assert session.state is SessionState.CONNECTED
    assert session.data_to_send() == bytes.fromhex("500200015002000250020003")


@pytest.mark.parametrize("reason", [0x04, 0x81, 0x82, 0x8D, 0x93])
def test_a_disconnect_with_a_reason_is_a_close_so_the_will_goes_out(reason: int) -> None:
    # On 3.1.1 any DISCONNECT discards the will: one that MQTT 5 would send with a reason
    # (an error, or 0x04 "with will") is left out, and the link just closes.
    wire = DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode(reason)).write()
    assert _downgrade()(wire) == b""
    assert _downgrade()(DisconnectPacket(session_expiry_interval=0).write()) == b"\xe0\x00"
