"""What the session keeps across links, as pure unit tests (issue 10: "every ``_link_up`` race
becomes a unit test without a socket").

Offline publishes under the outbox limits, TTL and policies; the resend on a resumed session and
the fresh start on a forgotten one; the subscription restore plan and the ``Ready`` event; the
waiters; the liveness deadlines; the broker's size and capability limits; ``abandon()``. The
broker is :mod:`support.session_wire`, the clock a float passed in by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mqtt5
import pytest
from mqtt5 import (
    ConnAckPacket,
    DisconnectPacket,
    DisconnectReasonCode,
    PingRespPacket,
    PubAckPacket,
    PublishPacket,
    PubRecPacket,
    QoS,
    SubAckPacket,
    SubscribePacket,
    UnsubscribePacket,
)

from support.session_wire import (
    answer_restore,
    connect,
    connected,
    feed,
    publishes,
    sent,
    suback_for,
)
from tars.mqtt._core.events import (
    Disconnected,
    Event,
    FilterGivenUp,
    PublishDone,
    Ready,
    RequestAborted,
    Settled,
    Subscribed,
)
from tars.mqtt._core.liveness import Liveness
from tars.mqtt._core.session import Session, SessionState, WaitFor
from tars.mqtt._errors import (
    ConnectionLostError,
    OutboxFullError,
    PayloadTooLarge,
    PoisonMessageError,
    SubscribeError,
)

RESUMABLE: dict[str, Any] = {"clean_start": False, "session_expiry_interval": 600}


def kinds(items: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in items]


def done(events: list[Event]) -> list[PublishDone]:
    return [e for e in events if isinstance(e, PublishDone)]


def lose(session: Session) -> list[Event]:
    """The link drops (the asyncio layer's connection_lost)."""
    events = session.connection_lost(now=0.0)
    assert session.state is SessionState.DISCONNECTED
    return events


# --- offline publishes: the outbox is part of the session -----------------------------------


def test_offline_qos1_and_qos2_are_queued_and_go_out_in_order_after_connack() -> None:
    session = Session("c")
    for n in range(3):
        assert session.publish("t", b"%d" % n, 1 + n % 2, handle=n, now=0.0) == ()
    assert (session.outgoing.store.offline_count, session.outgoing.store.unfinished) == (3, 3)
    assert session.data_to_send() == b""  # no link: nothing on any wire
    events = connect(session)
    assert kinds(events) == ["Connected", "Ready"]
    out = publishes(sent(session))
    assert [(p.payload, p.qos, p.packet_id, p.duplicate) for p in out] == [
        (b"0", 1, 1, False),
        (b"1", 2, 2, False),
        (b"2", 1, 3, False),
    ]
    assert session.outgoing.store.offline_count == 0  # on the wire now, no longer in the outbox
    assert session.outgoing.store.unfinished == 3


def test_offline_qos0_is_queued_only_when_asked() -> None:
    session = Session("c", queue_qos0_offline=True)
    session.publish("t", b"q0", 0)
    assert session.outgoing.store.offline_count == 1
    connect(session)
    [packet] = publishes(sent(session))
    assert (packet.payload, packet.qos, packet.packet_id) == (b"q0", 0, None)
    assert session.outgoing.store.unfinished == 0
    assert session.stats.dropped_offline == 0


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_a_full_outbox_drops_by_its_policy_and_fails_the_dropped_waiter(policy: Any) -> None:
    session = Session("c", outbox_max_messages=2, outbox_policy=policy)
    session.publish("t", b"a", 1, handle="a")
    session.publish("t", b"b", 1, handle="b")
    [event] = session.publish("t", b"c", 1, handle="c")
    assert isinstance(event, PublishDone)
    assert event.handle == ("a" if policy == "drop_oldest" else "c")
    assert event.reason_code >= 0x80
    assert isinstance(event.error, OutboxFullError)
    assert session.outgoing.store.dropped == 1
    connect(session)
    expected = [b"b", b"c"] if policy == "drop_oldest" else [b"a", b"b"]
    assert [p.payload for p in publishes(sent(session))] == expected


def test_the_raise_policy_refuses_the_call_and_keeps_the_queue() -> None:
    session = Session("c", outbox_max_messages=1, outbox_policy="raise")
    session.publish("t", b"a", 1, handle="a")
    with pytest.raises(OutboxFullError, match="'t'"):
        session.publish("t", b"b", 1, handle="b")
    assert (session.outgoing.store.offline_count, session.outgoing.store.dropped) == (1, 0)


def test_the_block_policy_has_no_room_until_a_link_comes() -> None:
    session = Session("c", outbox_max_messages=1, outbox_policy="block")
    assert session.has_room(1)
    session.publish("t", b"a", 1, handle="a")
    assert not session.has_room(1)
    assert session.wait("room", WaitFor.ROOM, 1) is True
    events = connect(session)
    assert Settled("room") in events
    assert session.has_room(1)


def test_ttl_expires_offline_publishes_when_the_link_comes_back() -> None:
    session = Session("c", outbox_ttl=5.0)
    session.publish("t", b"old", 1, handle="old", now=0.0)
    session.publish("t", b"edge", 1, handle="edge", now=5.0)
    session.publish("t", b"fresh", 1, handle="fresh", now=6.0)
    events = connect(session, now=10.0)  # expires_at <= now: expired
    [old, edge] = done(events)
    assert (old.handle, edge.handle) == ("old", "edge")
    assert isinstance(old.error, OutboxFullError)
    assert session.outgoing.store.expired == 2
    assert [p.payload for p in publishes(sent(session))] == [b"fresh"]


def test_what_was_in_flight_at_the_loss_does_not_count_against_the_outbox() -> None:
    session = connected(outbox_max_messages=1, outbox_policy="drop_newest")
    for n in range(3):
        session.publish("t", b"%d" % n, 1, handle=n)
    sent(session)
    lose(session)
    assert session.outgoing.store.offline_count == 0
    assert session.publish("t", b"new", 1, handle="new") == ()  # the outbox is still empty
    assert session.outgoing.store.unfinished == 4
    assert session.outgoing.store.dropped == 0


# --- reconnect: resend on a resumed session, again as new on a forgotten one ----------------


def _away_with_work() -> Session:
    """Two QoS 1 publishes unacked on link 1, then two more made while no link is up."""
    session = connected(**RESUMABLE)
    session.publish("t", b"in-flight-1", 1, handle="f1")
    session.publish("t", b"in-flight-2", 1, handle="f2")
    sent(session)
    lose(session)
    session.publish("t", b"offline-1", 1, handle="o1", now=1.0)
    session.publish("t", b"offline-2", 1, handle="o2", now=1.0)
    return session


def test_session_present_resends_in_order_with_dup_before_new_publishes() -> None:
    session = _away_with_work()
    events = connect(session, ConnAckPacket(session_present=True), now=2.0)
    assert kinds(events) == ["Connected", "Ready"]
    out = publishes(sent(session))
    assert [(p.payload, p.packet_id, p.duplicate) for p in out] == [
        (b"in-flight-1", 1, True),
        (b"in-flight-2", 2, True),
        (b"offline-1", 3, False),
        (b"offline-2", 4, False),
    ]
    acks = feed(session, *(PubAckPacket(n) for n in (1, 2, 3, 4)))
    assert [e.handle for e in done(acks)] == ["f1", "f2", "o1", "o2"]
    assert session.outgoing.store.unfinished == 0


def test_session_not_present_sends_everything_again_as_new_in_order() -> None:
    session = _away_with_work()
    connect(session, ConnAckPacket(session_present=False), now=2.0)
    out = publishes(sent(session))
    assert [(p.payload, p.duplicate) for p in out] == [
        (b"in-flight-1", False),
        (b"in-flight-2", False),
        (b"offline-1", False),
        (b"offline-2", False),
    ]
    assert len({p.packet_id for p in out}) == 4


def test_an_ack_racing_the_resend_finishes_the_publish_once() -> None:
    # The broker acks publish 1 in the same chunk as its CONNACK (it had processed it): the
    # resend must skip it, and the handle is finished once.
    session = _away_with_work()
    session.connection_made(2.0)
    sent(session)
    events = feed(session, ConnAckPacket(session_present=True, receive_max=1), PubAckPacket(1))
    assert [e.handle for e in done(events)] == ["f1"]
    resent = publishes(sent(session))
    assert [(p.payload, p.duplicate) for p in resent][-1] == (b"in-flight-2", True)
    assert all(p.payload != b"in-flight-1" or p.packet_id == 1 for p in resent)
    feed(session, PubAckPacket(2))
    assert [p.payload for p in publishes(sent(session))] == [b"offline-1"]


def test_a_link_lost_again_before_the_resend_is_acked_resends_on_the_next() -> None:
    session = _away_with_work()
    connect(session, ConnAckPacket(session_present=True, receive_max=1), now=2.0)
    [first] = publishes(sent(session))
    assert (first.payload, first.duplicate) == (b"in-flight-1", True)
    lose(session)
    connect(session, ConnAckPacket(session_present=True), now=3.0)
    out = publishes(sent(session))
    assert [(p.payload, p.duplicate) for p in out] == [
        (b"in-flight-1", True),
        (b"in-flight-2", True),
        (b"offline-1", False),
        (b"offline-2", False),
    ]


# --- the subscription restore plan and Ready -------------------------------------------------


def _with_filters(**options: Any) -> Session:
    """A session whose table holds two filters and the heartbeat topic, before any link."""
    session = Session(
        "c",
        liveness=Liveness(heartbeat_interval=5.0),
        heartbeat=("system/keepalive/c", lambda: b"beat"),
        **options,
    )
    session.add_subscription("a/#", 1)
    session.add_subscription("b", 0)
    return session


def _subscribes(packets: list[mqtt5.Packet]) -> list[tuple[str, int]]:
    return [
        (f.pattern, int(f.max_qos))
        for p in packets
        if isinstance(p, SubscribePacket)
        for f in p.topic_filters
    ]


def test_a_fresh_session_restores_every_filter_and_is_ready_after_the_last_suback() -> None:
    session = _with_filters()
    events = connect(session)
    assert kinds(events) == ["Connected"]
    assert not session.ready
    out = sent(session)
    assert sorted(_subscribes(out)) == [("a/#", 1), ("b", 0), ("system/keepalive/c", 0)]
    subscribes = [p for p in out if isinstance(p, SubscribePacket)]
    for packet in subscribes[:-1]:
        assert feed(session, suback_for(packet)) == []
        assert not session.ready
    assert feed(session, suback_for(subscribes[-1])) == [Ready(False, True)]
    assert session.ready


def test_a_resumed_session_restores_only_what_changed_while_away() -> None:
    session = _with_filters(**RESUMABLE)
    connect(session)
    answer_restore(session, sent(session))
    lose(session)
    session.add_subscription("c/+", 2)  # added while away
    session.remove_subscription("b", 0)  # removed while away
    session.add_subscription("a/#", 2)  # raised while away
    connect(session, ConnAckPacket(session_present=True))
    out = sent(session)
    assert sorted(_subscribes(out)) == [("a/#", 2), ("c/+", 2), ("system/keepalive/c", 0)]
    [unsubscribe] = [p for p in out if isinstance(p, UnsubscribePacket)]
    assert unsubscribe.patterns == ["b"]
    assert answer_restore(session, out) == Ready(True, False)


def test_a_resumed_session_the_broker_forgot_gets_the_full_plan() -> None:
    session = _with_filters(**RESUMABLE)
    connect(session)
    answer_restore(session, sent(session))
    lose(session)
    session.remove_subscription("b", 0)
    connect(session, ConnAckPacket(session_present=False))
    out = sent(session)
    assert sorted(_subscribes(out)) == [("a/#", 1), ("system/keepalive/c", 0)]
    assert not [p for p in out if isinstance(p, UnsubscribePacket)]  # it holds nothing
    assert answer_restore(session, out) == Ready(False, False)


def test_restore_subscribes_carry_the_tables_identifiers() -> None:
    session = _with_filters()
    connect(session)
    by_filter = {
        p.topic_filters[0].pattern: p.subscription_id
        for p in sent(session)
        if isinstance(p, SubscribePacket)
    }
    assert by_filter["a/#"] == session.subscription_id("a/#")
    assert by_filter["system/keepalive/c"] == session.subscription_id("system/keepalive/c")
    assert len(set(by_filter.values())) == 3


def test_no_identifiers_when_the_broker_does_not_take_them() -> None:
    session = _with_filters()
    connect(session, ConnAckPacket(subscription_id_available=False))
    ids = [p.subscription_id for p in sent(session) if isinstance(p, SubscribePacket)]
    assert ids == [None, None, None]


def test_a_publish_arriving_while_restoring_is_delivered_before_ready() -> None:
    session = _with_filters()
    connect(session)
    out = sent(session)
    subscribes = [p for p in out if isinstance(p, SubscribePacket)]
    message = PublishPacket("a/x", b"early", qos=QoS.AT_LEAST_ONCE, packet_id=7)
    events = feed(session, suback_for(subscribes[0]), message)
    assert events == [message]  # delivered (and acknowledged) though not ready yet
    assert sent(session) == [PubAckPacket(7)]
    events = feed(session, *(suback_for(p) for p in subscribes[1:]))
    assert events == [Ready(False, True)]


def test_a_publish_call_while_restoring_goes_out_at_once() -> None:
    session = _with_filters()
    connect(session)
    sent(session)
    assert session.linked
    assert not session.ready
    session.publish("t", b"now", 1, handle="h")
    [packet] = publishes(sent(session))
    assert packet.payload == b"now"


def test_a_link_lost_during_restore_gives_no_ready_and_restores_again() -> None:
    session = _with_filters(**RESUMABLE)
    connect(session)
    out = sent(session)
    subscribes = [p for p in out if isinstance(p, SubscribePacket)]
    assert subscribes[0].topic_filters[0].pattern == "a/#"
    feed(session, suback_for(subscribes[0]))
    assert lose(session) == []  # restore requests have nobody waiting: no RequestAborted
    assert not session.ready
    events = connect(session, ConnAckPacket(session_present=True))
    assert kinds(events) == ["Connected"]
    again = sent(session)
    # What the broker confirmed it holds is not asked again; the rest is, and internal topics
    # always are.
    assert sorted(_subscribes(again)) == [("b", 0), ("system/keepalive/c", 0)]
    assert answer_restore(session, again) == Ready(True, False)


def test_a_disconnect_in_the_same_chunk_as_the_last_suback() -> None:
    session = _with_filters()
    connect(session)
    subscribes = [p for p in sent(session) if isinstance(p, SubscribePacket)]
    bye = DisconnectPacket(reason_code=DisconnectReasonCode.SERVER_SHUTTING_DOWN)
    events = feed(session, *(suback_for(p) for p in subscribes), bye)
    assert kinds(events) == ["Ready", "Disconnected"]
    last = events[-1]
    assert isinstance(last, Disconnected)
    assert last.by_peer
    assert session.state is SessionState.CLOSING
    assert feed(session, PublishPacket("a/x", b"late")) == []  # nothing read after it


def test_a_protocol_error_in_the_same_chunk_as_the_last_suback() -> None:
    session = _with_filters()
    connect(session)
    subscribes = [p for p in sent(session) if isinstance(p, SubscribePacket)]
    events = session.receive_data(
        b"".join(suback_for(p).write() for p in subscribes) + b"\x00\x00", 0.0
    )
    assert kinds(events) == ["Ready", "Disconnected"]
    last = events[-1]
    assert isinstance(last, Disconnected)
    assert (last.by_peer, last.reason_code) == (False, 0x81)
    assert sent(session)[-1] == DisconnectPacket(reason_code=DisconnectReasonCode.MALFORMED_PACKET)


def test_the_ready_announcement_cut_by_a_disconnect_is_sent_on_the_next_link() -> None:
    session = Session("c", announce=lambda first: ("health/c", b"first" if first else b"again"))
    session.add_subscription("a", 0)
    connect(session)
    [subscribe] = sent(session)
    assert isinstance(subscribe, SubscribePacket)
    bye = DisconnectPacket(reason_code=DisconnectReasonCode.SERVER_SHUTTING_DOWN)
    assert kinds(feed(session, suback_for(subscribe), bye)) == ["Ready", "Disconnected"]
    lose(session)
    assert session.outgoing.store.unfinished == 1  # the QoS 1 status is owed, not forgotten
    connect(session)
    out = sent(session)
    assert [p.payload for p in out if isinstance(p, PublishPacket)] == [b"first"]
    answer_restore(session, out)
    assert [p.payload for p in publishes(sent(session))] == [b"again"]


def test_our_disconnect_during_restore_gives_no_ready() -> None:
    # Shutdown began while restoring: the answers that still come are not read.
    session = _with_filters()
    connect(session)
    subscribes = [p for p in sent(session) if isinstance(p, SubscribePacket)]
    session.disconnect()
    assert kinds(sent(session)) == ["DisconnectPacket"]
    assert feed(session, *(suback_for(p) for p in subscribes)) == []
    assert not session.ready


def test_restore_requests_go_out_before_the_offline_publishes() -> None:
    # A message we queued for a topic we also subscribe to must find the subscription there.
    session = _with_filters()
    session.publish("a/x", b"queued", 1, handle="q")
    connect(session)
    names = kinds(sent(session))
    assert names == ["SubscribePacket"] * 3 + ["PublishPacket"]


def test_a_disconnect_before_the_last_suback_gives_no_ready() -> None:
    session = _with_filters()
    connect(session)
    subscribes = [p for p in sent(session) if isinstance(p, SubscribePacket)]
    bye = DisconnectPacket(reason_code=DisconnectReasonCode.SERVER_SHUTTING_DOWN)
    events = feed(session, suback_for(subscribes[0]), bye, suback_for(subscribes[1]))
    assert kinds(events) == ["Disconnected"]
    assert not session.ready


def test_filters_refused_while_restoring_are_reported_in_ready() -> None:
    session = _with_filters()
    connect(session)
    out = sent(session)
    answers: list[SubAckPacket] = []
    for packet in out:
        assert isinstance(packet, SubscribePacket)
        refuse = packet.topic_filters[0].pattern == "a/#"
        answers.append(suback_for(packet, 0x87 if refuse else None))
    [ready] = feed(session, *answers)
    assert ready == Ready(False, True, refused=(("a/#", 0x87),))
    # The broker holds nothing for it: the next fresh link asks again.
    lose(session)
    connect(session)
    assert "a/#" in {f for f, _ in _subscribes(sent(session))}


def test_a_subscription_added_while_restoring_is_sent_at_once_and_not_counted_in_ready() -> None:
    session = _with_filters()
    connect(session)
    restore = sent(session)
    assert session.add_subscription("late", 1, handle="late") is True
    [late] = sent(session)
    assert isinstance(late, SubscribePacket)
    assert feed(session, suback_for(late)) == [Subscribed("late", (1,))]
    assert answer_restore(session, restore) == Ready(False, True)


def test_a_user_subscribe_lost_with_its_link_is_aborted_and_restored() -> None:
    session = connected()
    assert session.add_subscription("a", 1, handle="sub") is True
    sent(session)
    assert lose(session) == [RequestAborted("sub")]
    connect(session)
    assert _subscribes(sent(session)) == [("a", 1)]


def test_announce_publishes_a_retained_status_when_ready() -> None:
    firsts: list[bool] = []

    def announce(first: bool) -> tuple[str, bytes]:
        firsts.append(first)
        return "health/c", b"up"

    session = Session("c", announce=announce, **RESUMABLE)
    session.add_subscription("a", 0)
    connect(session)
    out = sent(session)
    assert publishes([p for p in out if isinstance(p, PublishPacket)]) == []
    answer_restore(session, out)
    [status] = publishes(sent(session))
    assert (status.topic, status.payload, status.qos, status.retain) == ("health/c", b"up", 1, True)
    lose(session)
    connect(session, ConnAckPacket(session_present=True))  # nothing to restore: ready at once
    assert firsts == [True, False]


def test_restart_after_abandon_starts_like_the_first_link() -> None:
    session = _with_filters(**RESUMABLE)
    connect(session)
    answer_restore(session, sent(session))
    session.disconnect()
    lose(session)
    session.abandon()
    session.restart()
    session.connection_made(1.0)
    [connect_packet] = sent(session)
    assert isinstance(connect_packet, mqtt5.ConnectPacket)
    assert connect_packet.clean_start is False  # the user asked for a resumable session
    feed(session, ConnAckPacket(session_present=True))
    # The broker may hold them, but this is a new life: everything is asked again.
    assert sorted(f for f, _ in _subscribes(sent(session))) == ["a/#", "b", "system/keepalive/c"]


# --- waiters ----------------------------------------------------------------------------------


def test_flushed_settles_when_the_last_publish_is_finished() -> None:
    session = connected()
    assert session.wait("idle", WaitFor.FLUSHED) is False  # nothing owed: holds already
    session.publish("t", b"a", 1, handle="a")
    session.publish("t", b"b", 2, handle="b")
    assert session.wait("flush", WaitFor.FLUSHED) is True
    assert Settled("flush") not in feed(session, PubAckPacket(1))
    events = feed(session, PubRecPacket(2), mqtt5.PubCompPacket(2))
    assert events == [PublishDone("b", 0), Settled("flush")]


def test_flushed_counts_offline_publishes_too() -> None:
    session = Session("c")
    session.publish("t", b"a", 1, handle="a")
    assert session.wait("flush", WaitFor.FLUSHED) is True
    assert Settled("flush") not in connect(session)
    sent(session)
    assert feed(session, PubAckPacket(1)) == [PublishDone("a", 0), Settled("flush")]


def test_capacity_settles_when_an_ack_frees_a_slot_or_the_link_goes() -> None:
    session = connected(unacked_limit=2)
    session.publish("t", b"a", 1, handle="a")
    session.publish("t", b"b", 1, handle="b")
    assert session.at_capacity
    assert session.wait("cap", WaitFor.CAPACITY) is True
    assert feed(session, PubAckPacket(1)) == [PublishDone("a", 0), Settled("cap")]
    session.publish("t", b"c", 1, handle="c")
    assert session.wait("cap2", WaitFor.CAPACITY) is True
    assert lose(session) == [Settled("cap2")]  # no link: the outbox decides now, not capacity
    assert not session.at_capacity


def test_room_settles_when_a_link_comes() -> None:
    session = Session("c", outbox_max_messages=1, outbox_policy="block")
    session.publish("t", b"a", 1, handle="a")
    assert session.wait("room", WaitFor.ROOM, 1) is True
    assert session.wait("fits", WaitFor.ROOM, 0) is True  # the message count is full too
    events = connect(session)
    assert [e for e in events if isinstance(e, Settled)] == [Settled("room"), Settled("fits")]


def test_a_forgotten_waiter_is_never_settled() -> None:
    session = connected()
    session.publish("t", b"a", 1, handle="a")
    session.wait("gave-up", WaitFor.FLUSHED)
    session.forget_waiter("gave-up")
    assert feed(session, PubAckPacket(1)) == [PublishDone("a", 0)]


# --- liveness: deadlines with a fake now -------------------------------------------------------


def _watched(**options: Any) -> tuple[Session, Callable[[float], list[mqtt5.Packet]]]:
    """A linked session with a 1 s heartbeat, missed=3, and a publish timeout of 10 s."""
    session = Session(
        "c",
        keep_alive=0,
        liveness=Liveness(heartbeat_interval=1.0, missed=3, publish_timeout=10.0),
        heartbeat=("system/keepalive/c", lambda: b"beat"),
        **options,
    )
    connect(session, now=100.0)
    answer_restore(session, sent(session), now=100.0)

    def tick(now: float) -> list[mqtt5.Packet]:
        events = session.handle_timeout(now)
        assert events == [], events
        return sent(session)

    return session, tick


def _beats(packets: list[mqtt5.Packet]) -> int:
    return sum(isinstance(p, PublishPacket) and p.topic == "system/keepalive/c" for p in packets)


def test_a_heartbeat_is_due_at_once_then_every_interval() -> None:
    session, tick = _watched()
    assert session.next_deadline() == 100.0
    assert _beats(tick(100.0)) == 1
    assert session.next_deadline() == 101.0
    assert tick(100.5) == []
    assert _beats(tick(101.0)) == 1


def test_returned_heartbeats_keep_the_link_alive() -> None:
    session, tick = _watched()
    for n in range(20):
        now = 100.0 + n
        assert _beats(tick(now)) == 1
        feed(session, PublishPacket("system/keepalive/c", b"beat"), now=now + 0.1)
    assert session.handle_timeout(120.0) == []


def test_missed_heartbeats_make_the_link_stale_only_after_their_full_interval() -> None:
    session, tick = _watched()
    for now in (100.0, 101.0, 102.0):
        assert _beats(tick(now)) == 1
    assert session.next_deadline() == 103.0  # the third one's interval is over then
    [event] = session.handle_timeout(103.0)
    assert isinstance(event, Disconnected)
    assert (event.stale, event.abort, event.reason_code) == (True, True, 0x8D)
    assert isinstance(event.error, ConnectionLostError)
    assert session.stats.stale_links == 1
    assert sent(session) == []  # a stale link gets no DISCONNECT: the broker sends our will


def test_a_stalled_loop_finds_no_heartbeats_missed_that_were_never_sent() -> None:
    # The event loop stalled for 50 s (a handler calling time.sleep): one heartbeat was sent
    # before, none during. That is no evidence against the link.
    session, tick = _watched()
    assert _beats(tick(100.0)) == 1
    assert _beats(tick(150.0)) == 1  # late, not a burst
    assert session.next_deadline() == 151.0
    assert _beats(tick(151.0)) == 1
    [event] = session.handle_timeout(152.0)  # three sent, each given its full interval
    assert isinstance(event, Disconnected)


def test_paused_reading_sends_heartbeats_but_gives_no_verdict() -> None:
    session, tick = _watched()
    session.reading_paused()
    for now in range(100, 110):
        assert _beats(tick(float(now))) == 1  # a paused socket notices a reset when it writes
    assert session.state is SessionState.CONNECTED
    session.reading_resumed(110.0)
    assert session.next_deadline() == 110.0
    for at in (110.0, 111.0, 112.0):
        assert _beats(tick(at)) == 1
    [event] = session.handle_timeout(113.0)  # watched afresh from the resume
    assert isinstance(event, Disconnected)


def test_an_unacked_publish_makes_the_link_stale_after_the_publish_timeout() -> None:
    session, tick = _watched()
    feed(session, PublishPacket("system/keepalive/c", b"beat"), now=100.0)
    session.publish("t", b"x", 1, handle="h", now=104.0)
    sent(session)
    # Heartbeats return; but nothing acks the publish for 10 s.
    for now in range(104, 114):
        tick(float(now))
        feed(session, PublishPacket("system/keepalive/c", b"beat"), now=now + 0.1)
    assert session.next_deadline() == 114.0
    [event] = session.handle_timeout(114.0)
    assert isinstance(event, Disconnected)
    assert "publish ack" in str(event.reason_string)


def test_an_ack_restarts_the_publish_timeout_and_the_last_one_ends_it() -> None:
    session = Session(
        "c", keep_alive=0, liveness=Liveness(heartbeat_interval=None, publish_timeout=10.0)
    )
    connect(session, now=100.0)
    assert session.next_deadline() is None  # no heartbeat, nothing unacked: no timer
    session.publish("t", b"a", 1, handle="a", now=100.0)
    session.publish("t", b"b", 1, handle="b", now=100.0)
    first, second = publishes(sent(session))
    assert session.next_deadline() == 110.0
    feed(session, PubAckPacket(first.packet_id), now=108.0)  # the broker is reading
    assert session.next_deadline() == 118.0
    assert session.handle_timeout(117.0) == []
    feed(session, PubAckPacket(second.packet_id), now=117.5)
    assert session.next_deadline() is None
    assert session.handle_timeout(1e6) == []
    assert session.state is SessionState.CONNECTED


def test_the_ack_clock_of_a_publish_starts_at_its_now_not_at_the_last_input() -> None:
    # Defaults: no heartbeat, keep-alive 60 s. The link read nothing after 60.01 s (PINGRESP).
    session = Session("c", keep_alive=60, liveness=Liveness(heartbeat_interval=None))
    connect(session, now=0.0)
    session.handle_timeout(60.0)
    feed(session, PingRespPacket(), now=60.01)
    session.publish("t", b"x", 1, handle="h", now=115.0)
    assert session.next_deadline() == 120.0  # the next PINGREQ, then the ack timeout
    assert session.handle_timeout(120.0) == []
    assert session.next_deadline() == 125.0
    [event] = session.handle_timeout(125.0)
    assert isinstance(event, Disconnected)


def test_publishes_resent_on_a_resumed_session_are_watched_by_the_ack_timeout() -> None:
    session = connected(
        keep_alive=0, liveness=Liveness(heartbeat_interval=None, publish_timeout=10.0), **RESUMABLE
    )
    session.publish("t", b"x", 1, handle="h", now=0.0)
    sent(session)
    lose(session)
    connect(session, ConnAckPacket(session_present=True), now=100.0)
    [resent] = publishes(sent(session))
    assert resent.duplicate
    assert session.next_deadline() == 110.0
    [event] = session.handle_timeout(110.0)
    assert isinstance(event, Disconnected)
    assert event.stale


def test_no_deadline_and_no_verdict_without_a_link() -> None:
    session, tick = _watched()
    tick(100.0)
    lose(session)
    assert session.next_deadline() is None
    assert session.handle_timeout(1e9) == []
    assert session.liveness is not None
    assert session.liveness.next_deadline() is None


def test_keep_alive_and_heartbeat_share_one_deadline() -> None:
    session = Session(
        "c",
        keep_alive=3,
        liveness=Liveness(heartbeat_interval=10.0),
        heartbeat=("system/keepalive/c", lambda: b"beat"),
    )
    connect(session, now=0.0)
    answer_restore(session, sent(session))
    assert session.next_deadline() == 0.0  # the first heartbeat
    session.handle_timeout(0.0)
    sent(session)
    assert session.next_deadline() == 3.0  # then the PINGREQ
    session.handle_timeout(3.0)
    assert [type(p).__name__ for p in sent(session)] == ["PingReqPacket"]
    feed(session, PingRespPacket(), now=3.1)
    assert session.next_deadline() == 6.0


# --- the broker's limits: size and capabilities ------------------------------------------------


def _exact_size(topic: str, payload: bytes, qos: int) -> int:
    return len(PublishPacket(topic, payload, qos=QoS(qos), packet_id=1 if qos else None).write())


def _payload_of_packet_size(size: int, topic: str, qos: int) -> bytes:
    """The largest payload whose PUBLISH is ``size`` bytes (its length field grows with it)."""
    payload = bytes(size - _exact_size(topic, b"", qos))
    while _exact_size(topic, payload, qos) > size:
        payload = payload[:-1]
    return payload


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_the_exact_encoded_size_is_held_against_the_brokers_maximum(qos: int) -> None:
    limit = 300
    session = connected(connack=ConnAckPacket(max_packet_size=limit))
    fits = _payload_of_packet_size(limit, "a/b", qos)
    assert _exact_size("a/b", fits, qos) == limit
    session.publish("a/b", fits, qos, handle="fits")
    assert len(session.data_to_send()) == limit
    with pytest.raises(PayloadTooLarge) as info:
        session.publish("a/b", fits + b"x", qos, handle="over")
    assert (info.value.size, info.value.limit) == (len(fits) + 1, len(fits))
    # Properties are part of the packet too.
    with pytest.raises(PayloadTooLarge):
        session.publish("a/b", fits, qos, properties={"content_type": "text/plain"})
    assert session.outgoing.store.unfinished == (1 if qos else 0)


def test_a_queued_message_over_the_new_brokers_maximum_fails_alone() -> None:
    session = Session("c")
    session.publish("t", b"small-1", 1, handle="s1")
    session.publish("t", bytes(500), 1, handle="big")
    session.publish("t", b"small-2", 2, handle="s2")
    events = connect(session, ConnAckPacket(max_packet_size=200))
    [failed] = done(events)
    assert (failed.handle, failed.reason_code) == ("big", 0x95)
    assert isinstance(failed.error, PayloadTooLarge)
    assert session.stats.publish_failed == 1
    assert [p.payload for p in publishes(sent(session))] == [b"small-1", b"small-2"]
    assert session.state is SessionState.CONNECTED


def test_shared_subscriptions_are_refused_when_the_broker_has_none() -> None:
    session = connected(connack=ConnAckPacket(shared_subscription_available=False))
    with pytest.raises(SubscribeError) as info:
        session.add_subscription("$share/g/a", 1, handle="h")
    assert info.value.reason_code == 0x9E
    assert session.subscription_id("$share/g/a") is None  # the table did not take it
    assert sent(session) == []
    assert session.add_subscription("a", 1) is True  # an ordinary filter is fine


def test_wildcards_are_refused_when_the_broker_has_none() -> None:
    session = connected(connack=ConnAckPacket(wildcard_subscription_available=False))
    for topic_filter in ("a/+", "a/#"):
        with pytest.raises(SubscribeError) as info:
            session.add_subscription(topic_filter, 0)
        assert info.value.reason_code == 0xA2
    assert sent(session) == []
    assert session.add_subscription("a/b", 0) is True


# --- abandon ----------------------------------------------------------------------------------


def test_abandon_returns_every_handle_and_counts_offline_drops() -> None:
    session = connected(connack=ConnAckPacket(receive_max=1), **RESUMABLE)
    session.publish("t", b"x", 1, handle="inflight")
    session.publish("t", b"y", 1, handle="pending")
    session.wait("flush", WaitFor.FLUSHED)
    lose(session)
    session.publish("t", b"z", 1, handle="offline-1")
    session.publish("t", b"w", 1, handle="offline-2")
    handles = session.abandon()
    assert sorted(map(str, handles)) == ["flush", "inflight", "offline-1", "offline-2", "pending"]
    assert session.outgoing.store.dropped == 2  # only what sat in the outbox
    assert (session.outgoing.store.unfinished, session.outgoing.store.offline_count) == (0, 0)
    assert session.abandon() == []


# --- the poison-message breaker, through the session's link ends -----------------------------


def _broker_ends_link(session: Session, now: float, reason: int | None) -> list[Event]:
    """The broker ends the link: a DISCONNECT with ``reason`` (None: a bare close)."""
    if reason is not None:
        feed(session, DisconnectPacket(reason_code=DisconnectReasonCode(reason)), now=now)
    return session.connection_lost(now=now, broker_closed=True)


def test_a_publish_blamed_by_three_disconnects_in_a_row_is_given_up() -> None:
    session = Session("c", **RESUMABLE)
    session.publish("bad", b"x", 1, handle="bad", now=0.0)
    given_up: list[PublishDone] = []
    for link in range(3):
        connect(session, ConnAckPacket(session_present=link > 0), now=float(link))
        sent(session)
        given_up += done(_broker_ends_link(session, float(link), 0x81))
    [event] = given_up
    assert (event.handle, event.reason_code) == ("bad", 0x81)
    assert session.stats.poisoned == 1


def test_a_publish_the_broker_read_past_takes_no_strike() -> None:
    """The evaluation sees the link's answers before the link's end resets them: a later
    publish answered on each link clears the oldest one (RabbitMQ's failed confirm)."""
    session = Session("c", **RESUMABLE)
    session.publish("slow", b"x", 1, handle="slow", now=0.0)
    events: list[Event] = []
    for link in range(4):
        connect(session, ConnAckPacket(session_present=link > 0), now=float(link))
        session.publish("fast", b"%d" % link, 1, handle=link, now=float(link))
        [*_, later] = publishes(sent(session))
        feed(session, PubAckPacket(later.packet_id), now=float(link))
        events += _broker_ends_link(session, float(link), None)
    assert done(events) == []
    assert session.stats.poisoned == 0
    assert session.outgoing.store.unfinished == 1  # "slow" is still there, to resend


def test_bare_closes_give_a_publish_up_only_after_ten_seconds() -> None:
    session = Session("c", **RESUMABLE)
    session.publish("bad", b"x", 1, handle="bad", now=0.0)
    given_up: list[tuple[float, list[PublishDone]]] = []
    for now in (0.0, 0.2, 0.4, 3.0, 10.5):
        connect(session, ConnAckPacket(session_present=now > 0), now=now)
        sent(session)
        given_up.append((now, done(_broker_ends_link(session, now, None))))
    assert [len(events) for _, events in given_up] == [0, 0, 0, 0, 1]
    assert given_up[-1][1][0].reason_code == 0x80


def test_a_filter_blamed_by_three_disconnects_in_a_row_is_given_up_with_its_waiting_calls() -> None:
    """The verdict names the filter and the broker's reason, and carries the subscribe calls
    still awaiting its SUBACK (here one asking a higher QoS on the last link); a call whose
    link ended before (``first``) was told so then, as for any lost link."""
    session = Session("c", **RESUMABLE)
    connect(session, ConnAckPacket(), now=0.0)
    session.add_subscription("bad/#", 1, handle="first")
    events: list[Event] = []
    for link in range(3):
        if link:
            connect(session, ConnAckPacket(session_present=True), now=float(link))
        if link == 2:
            assert session.add_subscription("bad/#", 2, handle="waiting") is True
        sent(session)
        events += _broker_ends_link(session, float(link), 0x81)
    [verdict] = [e for e in events if isinstance(e, FilterGivenUp)]
    assert verdict.topic_filter == "bad/#"
    assert verdict.handles == ("waiting",)
    error = verdict.error
    assert isinstance(error, PoisonMessageError)
    assert isinstance(error, SubscribeError)
    assert (error.topic, error.reason_code, error.broker_reason) == ("bad/#", 0x81, 0x81)
    assert error.subscription
    assert [e.handle for e in events if isinstance(e, RequestAborted)] == ["first", "waiting"]
    assert session.subscription_id("bad/#") is None  # out of the table: never restored again
    assert session.stats.poisoned == 1
    connect(session, ConnAckPacket(session_present=True), now=3.0)
    assert not [p for p in sent(session) if isinstance(p, SubscribePacket)]


def test_a_bare_close_under_a_subscribe_gives_no_filter_up() -> None:
    session = Session("c", **RESUMABLE)
    connect(session, ConnAckPacket(), now=0.0)
    session.add_subscription("maybe/#", 1, handle="h")
    events: list[Event] = []
    for link in range(5):
        if link:
            connect(session, ConnAckPacket(session_present=True), now=float(link) * 10)
        sent(session)
        events += _broker_ends_link(session, float(link) * 10, None)
    assert not [e for e in events if isinstance(e, FilterGivenUp)]
    assert session.subscription_id("maybe/#") is not None
