"""The session's subscriptions part alone: the table's traffic, the restore, the answers.

No session: the part is handed a CONNACK and told by each call whether a link is up; its
output is read as packets. The table's own rules are in ``test_subtable.py``.
"""

from __future__ import annotations

import itertools
from typing import Any

import mqtt5
import pytest
from mqtt5 import (
    ConnAckPacket,
    SubAckPacket,
    SubAckReasonCode,
    SubscribePacket,
    TopicFilter,
    UnsubAckPacket,
    UnsubAckReasonCode,
    UnsubscribePacket,
)

from tars.mqtt._core.codes import PROTOCOL_ERROR, Violation
from tars.mqtt._core.events import Event, Subscribed, Unsubscribed
from tars.mqtt._core.subscribing import Subscribing
from tars.mqtt._errors import SubscribeError


class Part:
    def __init__(self, **connack: Any) -> None:
        self.out: list[bytes] = []
        ids = itertools.count(1)
        self.part = Subscribing(send=self.out.append, allocate_id=lambda: next(ids))
        self.connack = ConnAckPacket(**connack)

    def sent(self) -> list[mqtt5.Packet]:
        packets = [mqtt5.read(memoryview(b))[0] for b in self.out]
        self.out.clear()
        return packets


def granted(packet: mqtt5.Packet, code: int = 1) -> SubAckPacket:
    assert isinstance(packet, SubscribePacket)
    return SubAckPacket(packet.packet_id, [SubAckReasonCode(code)] * len(packet.topic_filters))


def test_without_a_link_nothing_is_sent_and_the_restore_sends_it() -> None:
    p = Part()
    assert p.part.add_subscription("a/#", 1, "h", False) is False
    assert p.out == []
    p.part.link_started(p.connack)
    p.part.restore(fresh=True)
    [subscribe] = p.sent()
    assert isinstance(subscribe, SubscribePacket)
    assert [f.pattern for f in subscribe.topic_filters] == ["a/#"]
    assert p.part.restoring == 1
    events: list[Event] = []
    assert p.part.handle_request_ack(granted(subscribe), events) is True  # the last answer
    assert (events, p.part.restoring) == ([], 0)  # a restore has no caller to tell


def test_on_a_link_a_subscription_goes_out_and_its_answer_carries_the_handle() -> None:
    p = Part()
    p.part.link_started(p.connack)
    assert p.part.add_subscription("a/b", 1, "h", True) is True
    [subscribe] = p.sent()
    events: list[Event] = []
    assert p.part.handle_request_ack(granted(subscribe), events) is False
    assert events == [Subscribed("h", (1,))]
    assert p.part.add_subscription("a/b", 1, "h2", True) is False  # the broker holds it


def test_the_last_unsubscribe_goes_out_and_is_answered() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.part.add_subscription("a/b", 0, None, True)
    p.part.handle_request_ack(granted(p.sent()[0], 0), [])
    assert p.part.remove_subscription("a/b", 0, "bye", True) is True
    [unsubscribe] = p.sent()
    assert isinstance(unsubscribe, UnsubscribePacket)
    events: list[Event] = []
    answer = UnsubAckPacket(unsubscribe.packet_id, [UnsubAckReasonCode.SUCCESS])
    p.part.handle_request_ack(answer, events)
    assert events == [Unsubscribed("bye", (0,))]


def test_an_answer_to_no_request_of_ours_is_a_violation() -> None:
    p = Part()
    p.part.link_started(p.connack)
    with pytest.raises(Violation) as info:
        p.part.handle_request_ack(SubAckPacket(9, [SubAckReasonCode.GRANTED_QOS_AT_MOST_ONCE]), [])
    assert info.value.reason == PROTOCOL_ERROR


def test_an_answer_with_the_wrong_number_of_codes_is_a_violation() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.part.subscribe([TopicFilter("a"), TopicFilter("b")], handle="raw")
    [subscribe] = p.sent()
    assert isinstance(subscribe, SubscribePacket)
    with pytest.raises(Violation, match="1 reason codes"):
        p.part.handle_request_ack(
            SubAckPacket(subscribe.packet_id, [SubAckReasonCode.GRANTED_QOS_AT_MOST_ONCE]), []
        )


def test_a_filter_the_connack_refuses_is_refused_at_once_and_noted_in_the_restore() -> None:
    p = Part(shared_subscription_available=False)
    p.part.add_subscription("$share/g/t", 1, None, False)
    p.part.add_subscription("t/ok", 1, None, False)
    p.part.link_started(p.connack)
    with pytest.raises(SubscribeError):
        p.part.add_subscription("$share/g/u", 1, None, True)
    p.part.restore(fresh=True)
    [subscribe] = p.sent()  # only the filter this broker can serve
    assert isinstance(subscribe, SubscribePacket)
    assert [f.pattern for f in subscribe.topic_filters] == ["t/ok"]
    assert p.part.refused == (("$share/g/t", 0x9E),)


def test_a_lost_link_aborts_the_requests_awaiting_an_answer() -> None:
    p = Part()
    p.part.link_started(p.connack)
    p.part.add_subscription("a", 1, "waiting", True)
    p.part.add_internal("me/keepalive", None, True)  # nobody awaits it: not aborted
    assert p.part.link_ended() == ["waiting"]
    assert p.part.requests == {}
