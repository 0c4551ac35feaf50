"""The subscription table: filters, their identifiers, what the broker holds, the restore plan.

Pure: no session, no packets. The session's use of the plan (SUBSCRIBE packets, Ready) is in
test_session_links.py.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tars.mqtt._core.subtable import RestorePlan, SubscriptionTable


def confirmed(table: SubscriptionTable) -> SubscriptionTable:
    """The broker granted every filter at the QoS the table asks."""
    for topic_filter, entry in table.filters.items():
        table.confirmed(topic_filter, entry.qos)
    return table


def test_a_new_filter_is_sent_and_shares_one_entry_at_the_highest_qos() -> None:
    table = SubscriptionTable()
    sid, send = table.add("a/b", 0)
    assert send is True
    # Not confirmed yet: a second caller asks again and gets an answer of its own.
    assert table.add("a/b", 0) == (sid, True)
    table.confirmed("a/b", 0)
    assert table.add("a/b", 0) == (sid, False)  # the broker holds it
    assert table.add("a/b", 2) == (sid, True)  # a higher QoS: SUBSCRIBE again
    table.confirmed("a/b", 2)
    assert table.add("a/b", 1) == (sid, False)
    assert table.filters["a/b"].qos == 2


def test_remove_unsubscribes_only_when_the_last_subscription_goes() -> None:
    table = SubscriptionTable()
    table.add("a/b", 0)
    table.add("a/b", 2)
    assert table.remove("a/b", 2) is False  # one left
    assert table.filters["a/b"].qos == 0
    assert table.remove("a/b", 0) is True
    assert table.sid("a/b") is None
    assert table.remove("a/b", 0) is False  # unknown: nothing to do
    assert table.remove("never", 1) is False


def test_identifiers_are_stable_across_processes_and_orders() -> None:
    one, two = SubscriptionTable(), SubscriptionTable()
    filters = ["a/#", "b/+", "c", "sensors/+/temp"]
    for f in filters:
        one.add(f, 1)
    for f in reversed(filters):
        two.add(f, 1)
    assert [one.sid(f) for f in filters] == [two.sid(f) for f in filters]
    assert len({one.sid(f) for f in filters}) == len(filters)


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60, unique=True))
def test_identifiers_are_unique_and_in_the_mqtt_range(filters: list[str]) -> None:
    table = SubscriptionTable()
    for f in filters:
        table.add(f, 0)
    sids = [table.sid(f) for f in filters]
    assert len(set(sids)) == len(filters)
    assert all(s is not None and 1 <= s <= 268_435_455 for s in sids)


def test_internal_topics_have_identifiers_of_their_own() -> None:
    table = SubscriptionTable()
    sid, new = table.add_internal("system/keepalive/me")
    assert new is True
    assert table.add_internal("system/keepalive/me") == (sid, False)
    assert table.sid("system/keepalive/me") == sid
    assert sid != table.add("system/keepalive/me/#", 0)[0]  # a filter's differs


def test_a_fresh_plan_has_every_filter_and_internal_topic() -> None:
    table = confirmed(SubscriptionTable())
    a, _ = table.add("a", 1)
    b, _ = table.add("b/#", 2)
    hb, _ = table.add_internal("hb")
    confirmed(table)
    table.add("gone", 0)
    table.confirmed("gone", 0)
    table.remove("gone", 0)
    plan = table.restore_plan(fresh=True)
    assert plan == RestorePlan(
        subscribe=(("a", 1, a), ("b/#", 2, b)), internal=(("hb", hb),), unsubscribe=()
    )


def test_a_resumed_plan_has_only_what_changed_while_away() -> None:
    table = SubscriptionTable()
    table.add("kept", 1)
    table.add("raised", 0)
    table.add("removed", 0)
    hb, _ = table.add_internal("hb")
    confirmed(table)  # the link is lost here; the broker keeps the session
    new, _ = table.add("new", 1)
    raised, _ = table.add("raised", 2)
    table.remove("removed", 0)
    plan = table.restore_plan(fresh=False)
    assert plan.subscribe == (("raised", 2, raised), ("new", 1, new))
    assert plan.internal == (("hb", hb),)  # always: cheap, and a stale one breaks a feature
    assert plan.unsubscribe == ("removed",)
    # Once answered, the next resumed link has nothing to do but the internal topics.
    confirmed(table)
    table.unsubscribed("removed")
    assert table.restore_plan(fresh=False) == RestorePlan((), (("hb", hb),), ())


def test_a_session_not_kept_forgets_what_the_broker_held() -> None:
    table = SubscriptionTable()
    table.add("a", 1)
    table.add("gone", 0)
    confirmed(table)
    table.remove("gone", 0)
    table.forget_broker()  # the broker lost our session (a restart(), a fresh CONNACK)
    plan = table.restore_plan(fresh=False)
    assert [f for f, _, _ in plan.subscribe] == ["a"]
    assert plan.unsubscribe == ()  # the broker holds nothing to unsubscribe


def test_a_refused_filter_is_asked_again_on_the_next_link() -> None:
    table = SubscriptionTable()
    table.add("a", 1)
    table.refused("a")
    assert [f for f, _, _ in table.restore_plan(fresh=False).subscribe] == ["a"]
    table.confirmed("a", 1)
    assert table.restore_plan(fresh=False).subscribe == ()


def test_re_adding_a_removed_filter_cancels_its_unsubscribe() -> None:
    table = SubscriptionTable()
    table.add("a", 1)
    confirmed(table)
    table.remove("a", 1)
    table.add("a", 1)
    plan = table.restore_plan(fresh=False)
    assert plan.unsubscribe == ()
    assert [f for f, _, _ in plan.subscribe] == ["a"]  # a new entry: sent again


def test_a_removed_filter_the_broker_never_held_needs_no_unsubscribe() -> None:
    table = SubscriptionTable()
    table.add("a", 1)
    table.remove("a", 1)
    assert table.restore_plan(fresh=False) == RestorePlan((), (), ())


def test_a_grant_below_the_asked_qos_is_asked_again_on_the_next_link() -> None:
    table = SubscriptionTable()
    sid, _ = table.add("a", 2)
    table.confirmed("a", 1)  # the broker's maximum QoS is 1
    assert table.restore_plan(fresh=False).subscribe == (("a", 2, sid),)


def test_a_filter_struck_links_in_a_row_leaves_the_table_and_the_restore() -> None:
    table = SubscriptionTable()
    table.add("bad/#", 1)
    table.add("good/#", 1)
    assert not table.strike("bad/#", 3)
    table.confirmed("bad/#", 1)  # a SUBACK between: not in a row any more
    assert not table.strike("bad/#", 3)
    assert not table.strike("bad/#", 3)
    assert table.strike("bad/#", 3)
    assert [f for f, _, _ in table.restore_plan(fresh=True).subscribe] == ["good/#"]
    assert table.sid("bad/#") is None
    assert not table.strike("unknown", 1)
