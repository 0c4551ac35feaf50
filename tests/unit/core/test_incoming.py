"""The session's incoming part, alone: a received QoS 1/2 message from arrival to its
acknowledgement (order, holders, the unrouted backlog), with ``now`` passed in by hand."""

from __future__ import annotations

from tars.mqtt._core.incoming import Incoming


def arrived(*ids_and_qos: tuple[int, int], holders: int = 1) -> tuple[Incoming[str], list[int]]:
    """Messages arrived and routed, each to ``holders`` subscriptions; their tokens."""
    incoming: Incoming[str] = Incoming()
    tokens = []
    for packet_id, qos in ids_and_qos:
        incoming.arrive(packet_id, qos)
        token = incoming.hold(packet_id, holders)
        assert token is not None
        tokens.append(token)
    return incoming, tokens


def test_a_message_finished_first_is_acknowledged_first() -> None:
    incoming, (one, two) = arrived((1, 1), (2, 2))
    assert incoming.done(one) == [(1, 1)]
    assert incoming.done(two) == [(2, 2)]
    assert len(incoming) == 0


def test_acknowledgements_go_in_arrival_order_whatever_order_handlers_finish() -> None:
    incoming, (one, two, three) = arrived((1, 1), (2, 1), (3, 2))
    assert incoming.done(three) == []
    assert incoming.done(two) == []
    assert 1 in incoming
    assert 3 in incoming
    assert incoming.done(one) == [(1, 1), (2, 1), (3, 2)]
    assert 1 not in incoming


def test_every_holder_must_be_done_before_the_acknowledgement() -> None:
    incoming, (token,) = arrived((7, 1), holders=3)
    assert incoming.done(token) == []
    assert incoming.done(token) == []
    assert incoming.done(token) == [(7, 1)]


def test_an_unknown_or_finished_token_does_nothing() -> None:
    incoming, (one,) = arrived((1, 1))
    assert incoming.done(12345) == []
    assert incoming.done(one) == [(1, 1)]
    assert incoming.done(one) == []


def test_a_packet_id_can_be_used_again_once_acknowledged_with_a_new_token() -> None:
    incoming, (first,) = arrived((1, 1))
    incoming.done(first)
    incoming.arrive(1, 1)
    second = incoming.hold(1, 1)
    assert second is not None
    assert second != first
    assert incoming.done(first) == []
    assert incoming.done(second) == [(1, 1)]


def test_holding_an_id_that_was_not_withheld_gives_no_token() -> None:
    incoming: Incoming[str] = Incoming()
    assert incoming.hold(9, 1) is None


def test_a_link_that_ends_voids_every_token_of_it() -> None:
    incoming, (one,) = arrived((1, 1))
    incoming.link_ended()
    assert len(incoming) == 0
    incoming.arrive(1, 1)  # the broker's resend on the next link
    assert incoming.done(one) == []  # the first link's handler finishing late
    resend = incoming.hold(1, 1)
    assert resend is not None
    assert incoming.done(resend) == [(1, 1)]


# --- the unrouted backlog ----------------------------------------------------------------------


def parked(
    *packet_ids: int, now: float = 0.0, **options: float | None
) -> tuple[Incoming[str], list[int]]:
    incoming: Incoming[str] = Incoming(**options)  # type: ignore[arg-type]
    for packet_id in packet_ids:
        incoming.arrive(packet_id, 1)
        incoming.park(packet_id, f"m{packet_id}", now)
    return incoming, list(packet_ids)


def test_a_parked_message_waits_for_ever_by_default_and_says_so() -> None:
    incoming, _ = parked(1, 2, now=100.0)
    assert incoming.waiting == 2
    assert incoming.next_deadline() == 105.0  # warn_after
    report = incoming.check(104.9)
    assert (report.waiting, report.overdue, report.remind, report.due) == (2, 0, False, [])
    report = incoming.check(105.0)
    assert (report.waiting, report.overdue, report.remind) == (2, 2, True)
    assert report.discarded == []
    assert report.due == []
    assert incoming.overdue == 2
    # It keeps saying it, every remind_every seconds, counting each message once.
    assert incoming.next_deadline() == 135.0
    assert incoming.check(120.0).remind is False
    report = incoming.check(135.0)
    assert (report.remind, report.oldest, incoming.overdue) == (True, 35.0, 2)
    assert incoming.check(10_000.0).due == []
    assert len(incoming) == 2  # still withheld


def test_a_parked_message_holds_the_acknowledgements_after_it() -> None:
    incoming: Incoming[str] = Incoming()
    incoming.arrive(1, 1)
    incoming.park(1, "m1", 0.0)
    incoming.arrive(2, 1)
    later = incoming.hold(2, 1)
    assert later is not None
    assert incoming.done(later) == []  # handled, but message 1 goes first
    ((token, item),) = incoming.claim(lambda m: m == "m1")
    assert (item, incoming.waiting) == ("m1", 0)
    assert token is not None
    assert incoming.done(token) == [(1, 1), (2, 1)]


def test_a_subscription_claims_only_what_it_wants_in_arrival_order() -> None:
    incoming, _ = parked(1, 2, 3)
    taken = incoming.claim(lambda m: m != "m2")
    assert [item for _, item in taken] == ["m1", "m3"]
    assert incoming.first_parked() == "m2"
    assert incoming.claim(lambda m: False) == []
    assert incoming.waiting == 1


def test_claimed_in_time_is_not_overdue_and_the_report_clears() -> None:
    incoming, _ = parked(1, now=0.0)
    assert incoming.check(6.0).overdue == 1
    incoming.claim(lambda m: True)
    report = incoming.check(7.0)
    assert (report.waiting, report.overdue, report.remind) == (0, 0, False)
    assert incoming.next_deadline() is None


def test_the_opt_in_timeout_gives_up_what_waited_too_long_and_makes_its_ack_due() -> None:
    incoming, _ = parked(1, now=0.0, unrouted_timeout=30.0)
    incoming.arrive(2, 1)
    incoming.park(2, "m2", 20.0)
    assert incoming.next_deadline() == 5.0  # the warning comes first
    incoming.check(5.0)
    assert incoming.next_deadline() == 25.0  # then m2's warning
    incoming.check(25.0)
    assert incoming.next_deadline() == 30.0  # then m1's timeout
    report = incoming.check(30.0)
    assert (report.discarded, report.due, report.waiting) == (["m1"], [(1, 1)], 1)
    assert incoming.discarded == 1
    report = incoming.check(50.0)
    assert (report.discarded, report.due, report.waiting) == (["m2"], [(2, 1)], 0)
    assert len(incoming) == 0


def test_a_link_that_ends_forgets_the_parked_messages_it_withheld() -> None:
    incoming, _ = parked(1, 2)
    incoming.link_ended()
    assert (incoming.waiting, incoming.next_deadline()) == (0, None)


def test_on_arrival_messages_are_parked_without_a_token_and_bounded() -> None:
    incoming: Incoming[str] = Incoming(max_parked=2)
    assert incoming.park(None, "a", 0.0) == []
    assert incoming.park(None, "b", 0.0) == []
    assert incoming.park(None, "c", 0.0) == ["a"]  # the oldest goes
    assert incoming.discarded == 1
    assert incoming.claim(lambda m: True) == [(None, "b"), (None, "c")]
    incoming.park(None, "d", 0.0)
    incoming.link_ended()  # acknowledged already: kept for a later subscription
    assert incoming.waiting == 1
