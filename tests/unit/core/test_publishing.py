"""The session's outgoing part alone: given an output, counters and packet ids, nothing else.

No session and no CONNECT: the part is told a link is up by the CONNACK it is handed and by the
``linked`` flag of each call, and its output is read as packets. The whole protocol, through
the session, is in ``test_session.py`` and ``test_session_links.py``.
"""

from __future__ import annotations

import itertools
from typing import Any

import mqtt5
import pytest
from mqtt5 import ConnAckPacket, PublishPacket, PubRecPacket, PubRelPacket, QoS

from tars.mqtt._core.events import Event, PublishDone
from tars.mqtt._core.outgoing import OutgoingStore
from tars.mqtt._core.publishing import Publishing
from tars.mqtt._core.stats import SessionStats
from tars.mqtt._errors import PublishError


class Part:
    """A Publishing part with its output and counters in reach."""

    def __init__(self, *, receive_max: int = 65535, **connack: Any) -> None:
        self.out: list[bytes] = []
        self.stats = SessionStats()
        ids = itertools.count(1)
        self.part = Publishing(
            OutgoingStore(),
            send=self.out.append,
            stats=self.stats,
            allocate_id=lambda: next(ids),
        )
        self.connack = ConnAckPacket(receive_max=receive_max, **connack)

    def sent(self) -> list[mqtt5.Packet]:
        packets = [mqtt5.read(memoryview(b))[0] for b in self.out]
        self.out.clear()
        return packets

    def publish(self, topic: str, qos: int, *, linked: bool = True) -> None:
        self.part.publish(topic, b"x", qos, False, topic, None, linked, 0.0)


def test_qos1_goes_out_with_an_id_and_its_puback_finishes_it() -> None:
    p = Part(receive_max=10)
    p.part.link_started(p.connack)
    p.publish("t/1", 1)
    [packet] = p.sent()
    assert isinstance(packet, PublishPacket)
    assert (packet.packet_id, p.part.send_quota, p.part.inflight_count) == (1, 9, 1)
    events: list[Event] = []
    p.part.handle_puback(1, events, 0, None, 1.0)
    assert events == [PublishDone("t/1", 0, None)]
    assert (p.part.send_quota, p.part.inflight_count, p.stats.published) == (10, 0, 1)


def test_the_brokers_receive_maximum_holds_the_rest_in_order() -> None:
    p = Part(receive_max=1)
    p.part.link_started(p.connack)
    for n in range(3):
        p.publish(f"t/{n}", 1)
    assert [pk.topic for pk in p.sent() if isinstance(pk, PublishPacket)] == ["t/0"]
    events: list[Event] = []
    p.part.handle_puback(1, events, 0, None, 1.0)  # room for exactly one more
    assert [pk.topic for pk in p.sent() if isinstance(pk, PublishPacket)] == ["t/1"]


def test_an_unknown_or_wrong_qos_ack_is_ignored() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.publish("t/2", 2)
    p.sent()
    events: list[Event] = []
    p.part.handle_puback(99, events, 0, None, 1.0)
    p.part.handle_pubcomp(1, events, 0, None, 1.0)  # PUBCOMP before PUBREC
    assert (events, p.part.inflight_count) == ([], 1)
    p.part.handle_pubrec(PubRecPacket(1), events, 1.0)
    p.part.handle_puback(1, events, 0, None, 1.0)  # after PUBREC only a PUBCOMP ends it
    assert (events, p.part.inflight_count) == ([], 1)


def test_a_puback_for_a_qos2_publish_finishes_it_as_taken_at_qos1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RabbitMQ 3.10 answers every QoS 2 PUBLISH with PUBACK: the publish is done (its slot of
    the window free again), counted, and said once, not held for a PUBREC that never comes."""
    p = Part(receive_max=1)
    p.part.link_started(p.connack)
    for n in range(3):
        p.publish(f"t/{n}", 2)
    events: list[Event] = []
    for packet_id in (1, 2, 3):
        [packet] = p.sent()
        assert isinstance(packet, PublishPacket)
        assert packet.packet_id == packet_id
        p.part.handle_puback(packet_id, events, 0, None, 1.0)
    assert events == [PublishDone(f"t/{n}", 0, None) for n in range(3)]
    assert (p.part.inflight_count, p.part.send_quota) == (0, 1)
    assert (p.stats.qos2_downgraded, p.stats.publish_failed) == (3, 0)
    said = [r.getMessage() for r in caplog.records if "QoS 2" in r.getMessage()]
    assert len(said) == 1
    assert "PUBACK" in said[0]
    assert "'t/0'" in said[0]


def test_qos2_is_released_on_pubrec_and_done_on_pubcomp() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.publish("t/2", 2)
    p.sent()
    events: list[Event] = []
    p.part.handle_pubrec(PubRecPacket(1), events, 1.0)
    assert [type(pk) for pk in p.sent()] == [PubRelPacket]
    p.part.handle_pubcomp(1, events, 0, None, 1.0)
    assert events == [PublishDone("t/2", 0, None)]


def test_a_pubrec_for_no_publish_of_ours_answers_packet_id_not_found() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.part.handle_pubrec(PubRecPacket(5), [], 1.0)
    [packet] = p.sent()
    assert isinstance(packet, PubRelPacket)
    assert int(packet.reason_code) == 0x92


def test_offline_qos0_is_dropped_and_counted_and_qos1_queued() -> None:
    p = Part()
    p.publish("t/0", 0, linked=False)
    p.publish("t/1", 1, linked=False)
    assert (p.out, p.stats.dropped_offline, p.part.store.offline_count) == ([], 1, 1)
    p.part.link_started(p.connack)
    events: list[Event] = []
    p.part.send_pending(events, 1.0)
    assert [pk.topic for pk in p.sent() if isinstance(pk, PublishPacket)] == ["t/1"]
    assert p.part.store.offline_count == 0


def test_a_resumed_session_resends_with_dup_before_anything_new() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.publish("t/old", 1)
    p.sent()
    p.part.link_ended()
    p.publish("t/new", 1, linked=False)
    p.part.link_started(p.connack)
    p.part.resume_session()
    p.part.send_pending([], 2.0)
    resent, new = p.sent()
    assert isinstance(resent, PublishPacket)
    assert isinstance(new, PublishPacket)
    assert (resent.topic, resent.duplicate, resent.packet_id) == ("t/old", True, 1)
    assert (new.topic, new.duplicate) == ("t/new", False)


def test_a_fresh_session_sends_unacked_again_as_new_and_finishes_released_qos2() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.publish("t/1", 1)
    p.publish("t/2", 2)
    p.part.handle_pubrec(PubRecPacket(2), [], 0.0)  # the broker owns t/2 now
    p.sent()
    p.part.link_ended()
    events: list[Event] = []
    p.part.restart_session(events)
    assert events == [PublishDone("t/2", 0, "session not present; PUBREC received")]
    p.part.link_started(p.connack)
    p.part.send_pending(events, 1.0)
    [again] = p.sent()
    assert isinstance(again, PublishPacket)
    assert (again.topic, again.duplicate) == ("t/1", False)


def test_what_the_connack_refuses_is_refused_before_it_is_sent() -> None:
    p = Part(max_qos=QoS.AT_MOST_ONCE)
    p.part.link_started(p.connack)
    with pytest.raises(PublishError) as info:
        p.publish("t/1", 1)
    assert info.value.reason_code == 0x9B
    assert p.out == []
