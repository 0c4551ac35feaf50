"""The sans-I/O session, packet by packet, against a fake broker made of ``mqtt5`` packets.

No socket and no clock: the tests feed the broker's packets as bytes, read what the session
wants to send by parsing :meth:`Session.data_to_send`, and pass the time in by hand
(:mod:`support.session_wire`). The protocol itself lives here; what outlives a link (offline
queue, resend, restore, waiters, liveness) is in ``test_session_links.py``.
"""

from __future__ import annotations

from typing import Any

import mqtt5
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt5 import (
    ConnAckPacket,
    ConnAckReasonCode,
    ConnectPacket,
    DisconnectPacket,
    DisconnectReasonCode,
    PingReqPacket,
    PingRespPacket,
    PubAckPacket,
    PubAckReasonCode,
    PubCompPacket,
    PubCompReasonCode,
    PublishPacket,
    PubRecPacket,
    PubRecReasonCode,
    PubRelPacket,
    PubRelReasonCode,
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

from support.session_wire import connect, connected, feed, publishes, sent
from tars.mqtt._core.events import (
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    PublishDone,
    Ready,
    RequestAborted,
    Subscribed,
    Unsubscribed,
)
from tars.mqtt._core.session import _MQTT3_ONLY, Session, SessionState
from tars.mqtt._errors import ClientStateError, PayloadTooLarge, ProtocolError

# --- CONNECT / CONNACK ----------------------------------------------------------------------


def test_connect_carries_every_session_option() -> None:
    will = Will("svc/will", payload=b"gone", qos=QoS.AT_LEAST_ONCE, retain=True)
    session = Session(
        "svc-1",
        keep_alive=15,
        session_expiry_interval=3600,
        receive_maximum=50,
        max_packet_size=4096,
        username="alice",
        password="s3cret",
        will=will,
    )
    session.connection_made(0.0)
    [packet] = sent(session)
    assert isinstance(packet, ConnectPacket)
    assert packet.client_id == "svc-1"
    assert packet.clean_start is True
    assert packet.keep_alive == 15
    assert packet.session_expiry_interval == 3600
    assert packet.receive_max == 50
    assert packet.max_packet_size == 4096
    assert packet.username == "alice"
    assert packet.password == b"s3cret"
    assert packet.will is not None
    assert (packet.will.topic, packet.will.payload, packet.will.qos, packet.will.retain) == (
        "svc/will",
        b"gone",
        QoS.AT_LEAST_ONCE,
        True,
    )
    assert session.state is SessionState.CONNECTING


def test_connect_without_credentials_or_will_sends_none() -> None:
    session = Session("svc-1", clean_start=False)
    session.connection_made(0.0)
    [packet] = sent(session)
    assert isinstance(packet, ConnectPacket)
    assert (packet.username, packet.password, packet.will) == (None, None, None)
    assert packet.clean_start is False


def test_clean_start_applies_to_the_first_accepted_link_only() -> None:
    session = Session("svc-1", clean_start=True, session_expiry_interval=60)
    session.connection_made(0.0)
    assert sent(session)[0].clean_start is True  # type: ignore[union-attr]
    # Refused: no session was opened, so the retry still asks for a clean start.
    feed(session, ConnAckPacket(reason_code=ConnAckReasonCode.SERVER_BUSY))
    session.connection_lost(now=0.0)
    connect(session)
    session.connection_lost(now=0.0)
    session.connection_made(1.0)
    [again] = sent(session)
    assert isinstance(again, ConnectPacket)
    assert again.clean_start is False


def test_connection_made_while_a_link_is_up_is_refused() -> None:
    session = connected()
    with pytest.raises(ClientStateError):
        session.connection_made(1.0)


def test_receive_maximum_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="receive_maximum"):
        Session("c", receive_maximum=0)


def test_connack_success_reports_connected_and_adopts_an_assigned_id() -> None:
    session = Session("")
    connack = ConnAckPacket(assigned_client_id="auto-42")
    event, ready = connect(session, connack)  # nothing to restore: ready at once
    assert isinstance(event, Connected)
    assert ready == Ready(session_present=False, first=True)
    assert event.session_present is False
    assert event.connack.assigned_client_id == "auto-42"
    assert session.client_id == "auto-42"
    assert session.state is SessionState.CONNECTED


def test_connack_failure_reports_connect_failed() -> None:
    session = Session("c")
    refusal = ConnAckPacket(reason_code=ConnAckReasonCode.NOT_AUTHORIZED, reason_str="no")
    events = connect(session, refusal)
    assert events == [ConnectFailed(0x87, "no")]
    assert session.state is SessionState.CLOSING
    assert session.connack is None


@pytest.mark.parametrize("answer", [b"\x20\x02\x00\x01", b"\x20\x02\x00\x00"])
def test_an_mqtt_311_connack_is_a_refusal_for_the_protocol_version(answer: bytes) -> None:
    # A 3.1.1-only broker answers our MQTT 5 CONNECT with its own CONNACK (return code 1:
    # unacceptable protocol version): no retry can fix that, unlike a malformed packet.
    session = Session("c")
    session.connection_made(0.0)
    sent(session)
    events = session.receive_data(answer[:3], 0.0) + session.receive_data(answer[3:], 0.0)
    assert events == [ConnectFailed(0x84, _MQTT3_ONLY)]
    assert "use protocol='3.1.1'" in _MQTT3_ONLY
    assert session.state is SessionState.CLOSING
    assert sent(session) == []  # nothing in MQTT 5 for a broker that does not speak it


def test_a_short_connack_once_connected_is_still_a_malformed_packet() -> None:
    session = connected()
    [event] = session.receive_data(b"\x20\x02\x00\x01", 0.0)
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x81


@pytest.mark.parametrize(
    "packet",
    [
        PublishPacket("t", b"x"),
        PubAckPacket(1),
        SubAckPacket(1, [SubAckReasonCode.GRANTED_QOS_AT_MOST_ONCE]),
        PingRespPacket(),
    ],
    ids=lambda p: type(p).__name__,
)
def test_any_packet_before_connack_is_a_protocol_error(packet: Any) -> None:
    session = Session("c")
    session.connection_made(0.0)
    sent(session)
    [event] = feed(session, packet, ConnAckPacket())
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x82
    assert isinstance(event.error, ProtocolError)
    assert event.by_peer is False
    [disconnect] = sent(session)
    assert isinstance(disconnect, DisconnectPacket)
    assert disconnect.reason_code == DisconnectReasonCode.PROTOCOL_ERROR
    assert session.state is SessionState.CLOSING


def test_disconnect_before_connack_is_reported_as_the_brokers() -> None:
    session = Session("c")
    session.connection_made(0.0)
    reason = DisconnectReasonCode.SERVER_BUSY
    events = feed(session, DisconnectPacket(reason_code=reason, reason_str="busy"))
    assert events == [Disconnected(0x89, "busy", by_peer=True)]


# --- publishing -----------------------------------------------------------------------------


def test_qos0_publish_goes_out_at_once_without_packet_id_or_event() -> None:
    session = connected()
    session.publish("a/b", b"hello", 0, retain=True, properties={"content_type": "text/plain"})
    [packet] = publishes(sent(session))
    assert (packet.topic, packet.payload, packet.qos, packet.retain) == ("a/b", b"hello", 0, True)
    assert packet.packet_id is None
    assert packet.content_type == "text/plain"
    assert session.outgoing.store.unfinished == 0


def test_qos0_publish_without_a_link_is_dropped_and_counted() -> None:
    session = Session("c")
    assert session.publish("a", b"x", 0) == ()
    assert (session.stats.dropped_offline, session.outgoing.store.unfinished) == (1, 0)
    connect(session)
    assert sent(session) == []  # not sent late either


def test_qos_outside_0_to_2_is_refused() -> None:
    session = connected()
    with pytest.raises(ValueError, match="qos"):
        session.publish("a", b"x", 3)


def test_qos1_publishes_get_fresh_ids_and_puback_finishes_them() -> None:
    session = connected()
    for n in range(3):
        session.publish("t", b"m%d" % n, 1, handle=f"h{n}")
    out = publishes(sent(session))
    assert [(p.packet_id, p.qos, p.payload) for p in out] == [
        (1, 1, b"m0"),
        (2, 1, b"m1"),
        (3, 1, b"m2"),
    ]
    assert session.inflight_count == 3
    events = feed(session, PubAckPacket(1), PubAckPacket(2))
    assert events == [PublishDone("h0", 0), PublishDone("h1", 0)]
    assert session.inflight_count == 1


def test_a_refused_qos1_publish_reports_the_reason() -> None:
    session = connected()
    session.publish("t", b"x", 1, handle="h")
    sent(session)
    refusal = PubAckPacket(1, reason_code=PubAckReasonCode.QUOTA_EXCEEDED, reason_str="full")
    assert feed(session, refusal) == [PublishDone("h", 0x97, "full")]
    assert session.outgoing.store.unfinished == 0


def test_qos2_publish_walks_pubrec_pubrel_pubcomp() -> None:
    session = connected()
    session.publish("t", b"x", 2, handle="h")
    [publish] = publishes(sent(session))
    assert (publish.qos, publish.packet_id) == (2, 1)
    assert feed(session, PubRecPacket(1)) == []
    [pubrel] = sent(session)
    assert isinstance(pubrel, PubRelPacket)
    assert (pubrel.packet_id, pubrel.reason_code) == (1, PubRelReasonCode.SUCCESS)
    assert feed(session, PubCompPacket(1)) == [PublishDone("h", 0)]
    assert session.outgoing.store.unfinished == 0


def test_pubcomp_before_pubrec_does_not_finish_a_qos2_publish() -> None:
    session = connected()
    session.publish("t", b"x", 2, handle="h")
    sent(session)
    assert feed(session, PubCompPacket(1)) == []
    assert session.inflight_count == 1
    # (A PUBACK would finish it: the broker took it at QoS 1, see test_publishing.py.)


def test_a_refused_qos2_publish_ends_at_pubrec_without_pubrel() -> None:
    session = connected(connack=ConnAckPacket(receive_max=1))
    session.publish("t", b"x", 2, handle="h")
    session.publish("t", b"y", 2, handle="next")
    sent(session)
    refusal = PubRecPacket(1, reason_code=PubRecReasonCode.NOT_AUTHORIZED)
    assert feed(session, refusal) == [PublishDone("h", 0x87)]
    # The slot it held is free again: the next publish goes out, and no PUBREL does.
    [publish] = publishes(sent(session))
    assert publish.payload == b"y"


def test_pubrec_for_an_unknown_id_gets_pubrel_0x92() -> None:
    session = connected()
    assert feed(session, PubRecPacket(77)) == []
    [pubrel] = sent(session)
    assert isinstance(pubrel, PubRelPacket)
    assert (pubrel.packet_id, pubrel.reason_code) == (77, PubRelReasonCode.PACKET_ID_NOT_FOUND)


def test_qos1_and_qos2_before_connack_wait_and_go_out_after_it() -> None:
    session = Session("c")
    session.connection_made(0.0)
    session.publish("t", b"early", 1, handle="h")
    assert (session.outgoing.store.unfinished, session.inflight_count) == (1, 0)
    assert [type(p) for p in sent(session)] == [ConnectPacket]
    feed(session, ConnAckPacket())
    [publish] = publishes(sent(session))
    assert publish.payload == b"early"


def test_receive_maximum_bounds_the_publishes_in_flight() -> None:
    session = connected(connack=ConnAckPacket(receive_max=2))
    for n in range(5):
        session.publish("t", b"%d" % n, 1 + n % 2, handle=n)
    assert [p.payload for p in publishes(sent(session))] == [b"0", b"1"]
    assert (session.inflight_count, session.outgoing.store.unfinished) == (2, 5)
    # Acks in any order free one slot each; the waiting publishes go out in call order.
    assert feed(session, PubRecPacket(2)) == []
    assert sent(session) == [PubRelPacket(2)]  # a PUBREC does not free the slot
    assert feed(session, PubAckPacket(1)) == [PublishDone(0, 0)]
    [third] = publishes(sent(session))
    assert third.payload == b"2"
    assert feed(session, PubCompPacket(2)) == [PublishDone(1, 0)]
    [fourth] = publishes(sent(session))
    assert fourth.payload == b"3"
    assert (session.inflight_count, session.outgoing.store.unfinished) == (2, 3)


def test_out_of_order_acks_finish_the_right_publishes() -> None:
    session = connected()
    for n in range(4):
        session.publish("t", b"x", 1, handle=f"h{n}")
    sent(session)
    events = feed(session, PubAckPacket(3), PubAckPacket(1), PubAckPacket(4), PubAckPacket(2))
    assert events == [PublishDone(h, 0) for h in ("h2", "h0", "h3", "h1")]


def test_an_ack_for_a_publish_we_never_sent_is_ignored() -> None:
    session = connected()
    assert feed(session, PubAckPacket(9), PubCompPacket(9)) == []
    assert session.state is SessionState.CONNECTED


def test_publish_over_the_brokers_maximum_packet_size_is_refused() -> None:
    session = connected(connack=ConnAckPacket(max_packet_size=200))
    with pytest.raises(PayloadTooLarge) as info:
        session.publish("a/b", bytes(200), 1)
    assert info.value.size == 200
    assert info.value.limit < 200
    with pytest.raises(PayloadTooLarge):
        session.publish("a/b", bytes(200), 0)
    assert session.outgoing.store.unfinished == 0
    # Just under the limit fits, and the packet on the wire respects it.
    session.publish("a/b", bytes(info.value.limit), 1)
    assert len(session.data_to_send()) <= 200


# --- receiving ------------------------------------------------------------------------------


def test_qos0_message_is_delivered_with_nothing_sent() -> None:
    session = connected()
    message = PublishPacket("a", b"x")
    assert feed(session, message) == [message]
    assert sent(session) == []


def test_qos1_message_is_delivered_and_acknowledged() -> None:
    session = connected()
    message = PublishPacket("a", b"x", qos=QoS.AT_LEAST_ONCE, packet_id=12)
    assert feed(session, message) == [message]
    assert sent(session) == [PubAckPacket(12)]


def test_qos2_message_is_delivered_once_despite_a_resend_before_pubrel() -> None:
    session = connected()
    message = PublishPacket("a", b"x", qos=QoS.EXACTLY_ONCE, packet_id=5)
    resend = PublishPacket("a", b"x", qos=QoS.EXACTLY_ONCE, packet_id=5, duplicate=True)
    assert feed(session, message) == [message]
    assert sent(session) == [PubRecPacket(5)]
    assert feed(session, resend) == []
    assert sent(session) == [PubRecPacket(5)]
    assert feed(session, PubRelPacket(5)) == []
    assert sent(session) == [PubCompPacket(5)]
    # Once released, the id is free: the broker may use it for a new message.
    again = PublishPacket("a", b"new", qos=QoS.EXACTLY_ONCE, packet_id=5)
    assert feed(session, again) == [again]


def test_pubrel_for_an_unknown_id_gets_pubcomp_0x92() -> None:
    session = connected()
    assert feed(session, PubRelPacket(40)) == []
    assert sent(session) == [PubCompPacket(40, reason_code=PubCompReasonCode.PACKET_ID_NOT_FOUND)]


def test_broker_over_our_receive_maximum_is_tolerated_counted_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mosquitto sends a QoS 2 burst past our Receive Maximum while our PUBRECs wait for
    PUBREL (seen with the config's 100): ending the link would lose more than it protects, so
    the message is accepted, acknowledged and delivered, counted, and said once at WARNING."""
    session = connected(receive_maximum=2)
    one, two, three, four = (
        PublishPacket("a", b"x", qos=QoS.EXACTLY_ONCE, packet_id=n) for n in (1, 2, 3, 4)
    )
    with caplog.at_level("WARNING", logger="tars.mqtt"):
        events = feed(session, one, two, three, four)
    assert events == [one, two, three, four]
    assert sent(session) == [PubRecPacket(1), PubRecPacket(2), PubRecPacket(3), PubRecPacket(4)]
    assert session.stats.receive_maximum_exceeded == 2
    assert (
        sum("more unacknowledged messages than our Receive" in r.message for r in caplog.records)
        == 1
    )
    assert session.linked


# --- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------


def test_subscribe_returns_the_reason_codes_with_the_handle() -> None:
    session = connected()
    filters = [TopicFilter("a/#", max_qos=QoS.AT_LEAST_ONCE), TopicFilter("b/+")]
    packet_id = session.subscribe(filters, handle="sub", subscription_id=7)
    [packet] = sent(session)
    assert isinstance(packet, SubscribePacket)
    assert packet.packet_id == packet_id
    assert [(f.pattern, f.max_qos) for f in packet.topic_filters] == [("a/#", 1), ("b/+", 2)]
    assert packet.subscription_id == 7
    codes = [SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE, SubAckReasonCode.NOT_AUTHORIZED]
    assert feed(session, SubAckPacket(packet_id, codes)) == [Subscribed("sub", (1, 0x87))]


def test_unsubscribe_returns_the_reason_codes_with_the_handle() -> None:
    session = connected()
    packet_id = session.unsubscribe(["a/#", "b/+"], handle="unsub")
    [packet] = sent(session)
    assert isinstance(packet, UnsubscribePacket)
    assert packet.patterns == ["a/#", "b/+"]
    codes = [UnsubAckReasonCode.SUCCESS, UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED]
    assert feed(session, UnsubAckPacket(packet_id, codes)) == [Unsubscribed("unsub", (0, 0x11))]


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_an_ack_with_the_wrong_number_of_codes_is_a_protocol_error(kind: str) -> None:
    session = connected()
    ack: Any
    if kind == "subscribe":
        packet_id = session.subscribe([TopicFilter("a"), TopicFilter("b")], handle="h")
        ack = SubAckPacket(packet_id, [SubAckReasonCode.GRANTED_QOS_EXACTLY_ONCE])
    else:
        packet_id = session.unsubscribe(["a", "b"], handle="h")
        ack = UnsubAckPacket(packet_id, [UnsubAckReasonCode.SUCCESS])
    sent(session)
    [event] = feed(session, ack)
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x82
    assert isinstance(event.error, ProtocolError)


def test_a_suback_for_an_unknown_request_is_a_protocol_error() -> None:
    session = connected()
    packet_id = session.unsubscribe(["a"], handle="h")
    sent(session)
    # An UNSUBSCRIBE is not answered by a SUBACK, even with its packet id.
    [event] = feed(session, SubAckPacket(packet_id, [SubAckReasonCode.UNSPECIFIED_ERROR]))
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x82


def test_subscribe_without_a_link_is_refused() -> None:
    session = Session("c")
    session.connection_made(0.0)
    with pytest.raises(ClientStateError):
        session.subscribe([TopicFilter("a")])
    with pytest.raises(ClientStateError):
        session.unsubscribe(["a"])


# --- keep alive -----------------------------------------------------------------------------


def test_pingreq_is_sent_every_keep_alive_while_pingresps_come() -> None:
    session = Session("c", keep_alive=10)
    connect(session, now=100.0)
    sent(session)
    assert session.next_deadline() == 110.0
    assert session.handle_timeout(109.9) == []
    assert sent(session) == []
    assert session.handle_timeout(110.0) == []
    assert sent(session) == [PingReqPacket()]
    feed(session, PingRespPacket(), now=110.2)
    assert session.next_deadline() == 120.0
    assert session.handle_timeout(120.0) == []
    assert sent(session) == [PingReqPacket()]


def test_a_missing_pingresp_ends_the_link_with_0x8d() -> None:
    session = Session("c", keep_alive=10, ping_timeout=3)
    connect(session, now=0.0)
    sent(session)
    session.handle_timeout(10.0)
    assert sent(session) == [PingReqPacket()]
    assert session.next_deadline() == 13.0
    assert session.handle_timeout(12.9) == []
    [event] = session.handle_timeout(13.0)
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x8D
    assert isinstance(event.error, ProtocolError)
    assert event.error.reason_code == 0x8D
    assert sent(session) == []  # the link is presumed dead: no DISCONNECT
    assert session.state is SessionState.CLOSING


def test_the_brokers_server_keep_alive_overrides_ours() -> None:
    session = Session("c", keep_alive=60)
    connect(session, ConnAckPacket(server_keep_alive=5), now=0.0)
    assert session.next_deadline() == 5.0


def test_keep_alive_zero_needs_no_timer() -> None:
    session = connected(keep_alive=0)
    assert session.next_deadline() is None
    assert session.handle_timeout(1e9) == []
    assert sent(session) == []


# --- the broker ends the link ---------------------------------------------------------------


def test_disconnect_from_the_broker_is_reported_and_ends_input() -> None:
    session = connected()
    reason = DisconnectReasonCode.SERVER_SHUTTING_DOWN
    events = feed(session, DisconnectPacket(reason_code=reason, reason_str="bye"))
    assert events == [Disconnected(0x8B, "bye", by_peer=True)]
    assert session.state is SessionState.CLOSING
    assert feed(session, PublishPacket("a", b"late")) == []


def test_malformed_bytes_queue_disconnect_0x81_and_report_a_protocol_error() -> None:
    session = connected()
    message = PublishPacket("a", b"x")
    events = session.receive_data(message.write() + b"\x00\x00" + message.write(), 0.0)
    assert events[0] == message
    [event] = events[1:]  # nothing after the garbage is read
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x81
    assert isinstance(event.error, ProtocolError)
    assert event.error.reason_code == 0x81
    assert sent(session) == [DisconnectPacket(reason_code=DisconnectReasonCode.MALFORMED_PACKET)]


def test_a_packet_only_a_server_receives_is_a_protocol_error() -> None:
    session = connected()
    [event] = feed(session, SubscribePacket(1, [TopicFilter("a")]))
    assert isinstance(event, Disconnected)
    assert event.reason_code == 0x82


# --- framing --------------------------------------------------------------------------------


def _busy_stream() -> tuple[Session, bytes]:
    """A connected session with requests in flight, and the broker's answer to all of them."""
    session = connected(connack=ConnAckPacket(receive_max=3))
    for n in range(5):
        session.publish("out", b"%d" % n, 1 + n % 2, handle=n)
    sub_id = session.subscribe([TopicFilter("in/#")], handle="sub")
    sent(session)
    answer: list[mqtt5.Packet] = [
        SubAckPacket(sub_id, [SubAckReasonCode.GRANTED_QOS_EXACTLY_ONCE]),
        PubAckPacket(1),
        PubRecPacket(2),
        PublishPacket("in/a", b"q0"),
        PublishPacket("in/b", b"q1" * 300, qos=QoS.AT_LEAST_ONCE, packet_id=9),
        PubCompPacket(2),
        PublishPacket("in/c", b"q2", qos=QoS.EXACTLY_ONCE, packet_id=10),
        PubRelPacket(10),
        PubAckPacket(3),
        PingRespPacket(),
        PubRecPacket(5),  # ids 5 and 6: the SUBSCRIBE took 4
        PubCompPacket(5),
        PubAckPacket(6),
    ]
    return session, b"".join(p.write() for p in answer)


def _replay(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    session, _ = _busy_stream()
    events: list[Event] = []
    for chunk in chunks:
        events += session.receive_data(chunk, 0.0)
    return events, session.data_to_send()


def test_many_packets_in_one_chunk_give_every_event_in_order() -> None:
    _, stream = _busy_stream()
    events, _ = _replay([stream])
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Subscribed",
        "PublishDone",
        "PublishPacket",
        "PublishPacket",
        "PublishDone",
        "PublishPacket",
        "PublishDone",
        "PublishDone",
        "PublishDone",
    ]
    assert [e.handle for e in events if isinstance(e, PublishDone)] == [0, 1, 2, 3, 4]


def test_byte_at_a_time_gives_the_same_events_and_output_as_one_chunk() -> None:
    _, stream = _busy_stream()
    whole = _replay([stream])
    assert _replay([stream[i : i + 1] for i in range(len(stream))]) == whole


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1), min_size=1))
def test_any_chunking_gives_the_same_events_and_output(cuts: list[int]) -> None:
    _, stream = _busy_stream()
    # Hypothesis picks, byte by byte, where a TCP segment ends.
    chunks: list[bytes] = []
    start = 0
    for i in range(1, len(stream)):
        if cuts[i % len(cuts)]:
            chunks.append(stream[start:i])
            start = i
    chunks.append(stream[start:])
    assert _replay(chunks) == _replay([stream])


def test_a_one_megabyte_publish_arrives_whole_from_many_chunks() -> None:
    session = connected()
    payload = bytes(range(256)) * 4096
    data = PublishPacket("big", payload, qos=QoS.AT_LEAST_ONCE, packet_id=3).write()
    events: list[Event] = []
    for start in range(0, len(data), 65536):
        events += session.receive_data(data[start : start + 65536], 0.0)
    [message] = events
    assert isinstance(message, PublishPacket)
    assert message.payload == payload
    assert sent(session) == [PubAckPacket(3)]


def test_a_split_fixed_header_is_completed_by_the_next_chunk() -> None:
    session = connected()
    message = PublishPacket("t", bytes(300))  # two-byte remaining length
    data = message.write()
    assert session.receive_data(data[:2], 0.0) == []
    assert session.receive_data(data[2:], 0.0) == [message]


# --- resumption -----------------------------------------------------------------------------


def _session_with_unfinished_work() -> Session:
    """QoS 1 unacked (id 1), QoS 2 unacked (id 2), QoS 2 PUBREC-ed (id 3), QoS 1 pending."""
    session = connected(
        clean_start=False, session_expiry_interval=600, connack=ConnAckPacket(receive_max=3)
    )
    session.publish("t", b"q1", 1, handle="q1")
    session.publish("t", b"q2", 2, handle="q2")
    session.publish("t", b"q2-rec", 2, handle="q2-rec")
    session.publish("t", b"waiting", 1, handle="waiting")
    sent(session)
    feed(session, PubRecPacket(3))
    sent(session)
    assert session.connection_lost(now=0.0) == []
    assert session.state is SessionState.DISCONNECTED
    assert session.outgoing.store.unfinished == 4
    return session


def test_resumed_session_resends_publishes_with_dup_and_pubrel_in_order() -> None:
    session = _session_with_unfinished_work()
    session.connection_made(5.0)
    [connect_packet] = sent(session)
    assert isinstance(connect_packet, ConnectPacket)
    assert connect_packet.clean_start is False
    event, ready = feed(session, ConnAckPacket(session_present=True, receive_max=3), now=5.0)
    assert isinstance(event, Connected)
    assert ready == Ready(session_present=True, first=False)
    assert event.session_present is True
    out = sent(session)
    assert [type(p).__name__ for p in out] == ["PublishPacket", "PublishPacket", "PubRelPacket"]
    first, second, pubrel = out
    assert isinstance(first, PublishPacket)
    assert isinstance(second, PublishPacket)
    assert (first.packet_id, first.payload, first.qos, first.duplicate) == (1, b"q1", 1, True)
    assert (second.packet_id, second.payload, second.qos, second.duplicate) == (2, b"q2", 2, True)
    assert pubrel == PubRelPacket(3)
    # The same handles come back, whatever link they were sent on.
    assert feed(session, PubCompPacket(3), PubAckPacket(1)) == [
        PublishDone("q2-rec", 0),
        PublishDone("q1", 0),
    ]
    [waiting] = publishes(sent(session))
    assert (waiting.payload, waiting.duplicate) == (b"waiting", False)


def test_resumption_respects_a_smaller_receive_maximum() -> None:
    session = _session_with_unfinished_work()
    session.connection_made(5.0)
    sent(session)
    feed(session, ConnAckPacket(session_present=True, receive_max=1))
    [first] = publishes(sent(session))
    assert (first.packet_id, first.duplicate) == (1, True)
    feed(session, PubAckPacket(1))
    [second] = publishes(sent(session))
    assert (second.packet_id, second.duplicate) == (2, True)
    feed(session, PubRecPacket(2))
    assert sent(session) == [PubRelPacket(2)]
    feed(session, PubCompPacket(2))
    assert sent(session) == [PubRelPacket(3)]  # the old link's work before the new publish
    feed(session, PubCompPacket(3))
    [waiting] = publishes(sent(session))
    assert (waiting.payload, waiting.duplicate) == (b"waiting", False)


def test_a_forgotten_session_gets_unacked_publishes_again_as_new() -> None:
    session = _session_with_unfinished_work()
    session.connection_made(5.0)
    sent(session)
    events = feed(session, ConnAckPacket(session_present=False))
    # The broker owned the PUBREC-ed QoS 2 message already: it is finished.
    assert [type(e) for e in events] == [PublishDone, Connected, Ready]
    done = events[0]
    assert isinstance(done, PublishDone)
    assert (done.handle, done.reason_code) == ("q2-rec", 0)
    out = publishes(sent(session))
    assert [(p.payload, p.qos, p.duplicate) for p in out] == [
        (b"q1", 1, False),
        (b"q2", 2, False),
        (b"waiting", 1, False),
    ]
    assert len({p.packet_id for p in out}) == 3


def test_a_resumed_session_remembers_incoming_qos2_ids() -> None:
    session = connected(clean_start=False, session_expiry_interval=600)
    message = PublishPacket("a", b"x", qos=QoS.EXACTLY_ONCE, packet_id=8)
    assert feed(session, message) == [message]
    session.connection_lost(now=0.0)  # our PUBREC may not have arrived
    connect(session, ConnAckPacket(session_present=True))
    sent(session)
    resend = PublishPacket("a", b"x", qos=QoS.EXACTLY_ONCE, packet_id=8, duplicate=True)
    assert feed(session, resend) == []
    assert feed(session, PubRelPacket(8)) == []
    assert sent(session) == [PubRecPacket(8), PubCompPacket(8)]


def test_a_forgotten_session_forgets_incoming_qos2_ids() -> None:
    session = connected(clean_start=False, session_expiry_interval=600)
    feed(session, PublishPacket("a", b"x", qos=QoS.EXACTLY_ONCE, packet_id=8))
    session.connection_lost(now=0.0)
    connect(session, ConnAckPacket(session_present=False))
    sent(session)
    feed(session, PubRelPacket(8))
    assert sent(session) == [PubCompPacket(8, reason_code=PubCompReasonCode.PACKET_ID_NOT_FOUND)]


def test_connection_lost_aborts_subscribe_and_unsubscribe_but_keeps_publishes() -> None:
    session = connected()
    session.subscribe([TopicFilter("a")], handle="sub")
    session.unsubscribe(["b"], handle="unsub")
    session.publish("t", b"x", 1, handle="pub")
    events = session.connection_lost(now=0.0)
    assert events == [RequestAborted("sub"), RequestAborted("unsub")]
    assert session.outgoing.store.unfinished == 1


def test_abandon_returns_every_handle_and_forgets_them() -> None:
    session = connected(connack=ConnAckPacket(receive_max=1))
    session.publish("t", b"x", 1, handle="inflight")
    session.publish("t", b"y", 2, handle="pending")
    session.subscribe([TopicFilter("a")], handle="sub")
    assert sorted(map(str, session.abandon())) == ["inflight", "pending", "sub"]
    assert session.outgoing.store.unfinished == 0
    assert feed(session, PubAckPacket(1)) == []


def test_disconnect_queues_disconnect_and_a_new_link_can_follow() -> None:
    session = connected()
    session.disconnect(0x04, session_expiry_interval=0)
    [packet] = sent(session)
    assert isinstance(packet, DisconnectPacket)
    assert packet.reason_code == DisconnectReasonCode.DISCONNECT_WITH_WILL_MESSAGE
    assert packet.session_expiry_interval == 0
    assert session.state is SessionState.CLOSING
    session.connection_lost(now=0.0)
    session.disconnect()  # no link: nothing to send, and nothing to block the next link
    assert sent(session) == []
    assert [type(e) for e in connect(session)] == [Connected, Ready]


# --- packet ids -----------------------------------------------------------------------------


def test_packet_ids_wrap_around_and_never_reuse_one_in_flight() -> None:
    session = connected()
    for _ in range(65535):
        session.publish("t", b"", 1)
    session.data_to_send()
    assert session.inflight_count == 65535
    with pytest.raises(ClientStateError, match="packet ids"):
        session.subscribe([TopicFilter("a")])
    feed(session, PubAckPacket(7), PubAckPacket(3))
    # After 65535 the ids start again at 1, skipping those still in flight.
    assert session.subscribe([TopicFilter("a")]) == 3
    session.publish("t", b"", 1)
    [publish] = publishes(sent(session)[1:])
    assert publish.packet_id == 7


def test_requests_and_publishes_share_the_packet_id_space() -> None:
    session = connected()
    session.publish("t", b"", 1)
    assert session.subscribe([TopicFilter("a")]) == 2
    assert session.unsubscribe(["a"]) == 3


# --- secrets --------------------------------------------------------------------------------


def test_repr_never_shows_the_password() -> None:
    session = Session("c", username="alice", password="hunter2-secret")
    assert "hunter2-secret" not in repr(session)
    session.connection_made(0.0)
    assert "hunter2-secret" not in repr(session)


def _connected_session() -> Session:
    session = Session("cid")
    session.connection_made(0.0)
    session.data_to_send()
    session.receive_data(mqtt5.ConnAckPacket().write(), 0.0)
    return session


# The codec reports the UnicodeDecodeError to sys.unraisablehook before it panics: a side effect
# of mqtt5 0.8 itself, which pytest would otherwise turn into an error.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_invalid_utf8_topic_from_broker_is_a_protocol_error_not_a_crash() -> None:
    # mqtt5 0.8 panics (a BaseException) on invalid UTF-8; the session must turn that into a
    # DISCONNECT 0x81, or a broken broker could kill the service.
    session = _connected_session()
    body = b"\x00\x02\xff\xfe" + b"\x00" + b"payload"  # topic b"\xff\xfe", no properties
    events = session.receive_data(bytes([0x30, len(body)]) + body, 1.0)
    assert len(events) == 1
    assert isinstance(events[0], Disconnected)
    assert events[0].reason_code == 0x81
    sent, _ = mqtt5.read(memoryview(session.data_to_send()))
    assert isinstance(sent, mqtt5.DisconnectPacket)
    assert int(sent.reason_code) == 0x81


def test_complete_packet_whose_fields_overrun_it_is_malformed_not_incomplete() -> None:
    # A PUBLISH that declares 3 bytes but whose topic length says 200: all its bytes are there,
    # so waiting for more would hang the link forever.
    session = _connected_session()
    events = session.receive_data(b"\x30\x03\x00\xc8a", 1.0)
    assert len(events) == 1
    assert isinstance(events[0], Disconnected)
    assert events[0].reason_code == 0x81


def test_a_packet_over_our_maximum_size_is_refused_before_it_is_buffered() -> None:
    session = Session("cid", max_packet_size=1000)
    session.connection_made(0.0)
    connect, _ = mqtt5.read(memoryview(session.data_to_send()))
    assert isinstance(connect, mqtt5.ConnectPacket)
    assert connect.max_packet_size == 1000  # the broker is told
    session.receive_data(mqtt5.ConnAckPacket().write(), 0.0)
    big = mqtt5.PublishPacket("t", b"x" * 5000).write()
    events = session.receive_data(big[:100], 1.0)  # its header says 5000+: no buffering
    assert len(events) == 1
    assert isinstance(events[0], Disconnected)
    assert events[0].reason_code == 0x95
