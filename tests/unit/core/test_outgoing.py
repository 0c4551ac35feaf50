"""The outgoing store and its offline part, the outbox: a bounded FIFO of publishes made while
no link is up (pure; the time passed in). The session's use of it is in test_session_links.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tars.mqtt import OutboxFullError
from tars.mqtt._core.outgoing import OutboxPolicy, Outgoing, OutgoingStore

POLICIES: list[OutboxPolicy] = ["drop_oldest", "drop_newest", "block", "raise"]


def item(name: str, size: int = 1) -> Outgoing:
    return Outgoing(name, b"x" * size, 1, False, None, None)


def topics(items: list[Outgoing]) -> list[str]:
    return [i.topic for i in items]


def drain(store: OutgoingStore, now: float = 0.0) -> tuple[list[Outgoing], list[Outgoing]]:
    """What a new link would send (in order) and what expired meanwhile."""
    expired = store.take_expired(now)
    ready: list[Outgoing] = []
    while store.pending:
        ready.append(store.pop_pending())
    return ready, expired


@pytest.mark.parametrize(
    "options",
    [
        {"max_messages": -1, "max_bytes": 10},
        {"max_messages": 1, "max_bytes": -1},
        {"max_messages": 1, "max_bytes": 10, "ttl": 0},
        {"max_messages": 1, "max_bytes": 10, "ttl": -1.0},
        {"max_messages": 1, "max_bytes": 10, "policy": "drop_everything"},
    ],
)
def test_bad_settings(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        OutgoingStore(**options)  # type: ignore[arg-type]


def test_keeps_order_and_counts_bytes() -> None:
    store = OutgoingStore(max_messages=10, max_bytes=15)
    for name, size in (("a", 3), ("b", 5), ("c", 7)):
        assert store.queue_offline(item(name, size), 0.0) == []
    assert (store.offline_count, store.unfinished) == (3, 3)
    assert store.has_room(0)
    assert not store.has_room(1)  # 15 bytes of 15 are taken
    ready, expired = drain(store)
    assert (topics(ready), expired) == (["a", "b", "c"], [])
    assert (store.offline_count, store.unfinished, store.dropped) == (0, 0, 0)
    assert store.has_room(15)
    assert not any(i.offline for i in ready)  # sent: no longer in the outbox


def test_drop_oldest_by_count() -> None:
    store = OutgoingStore(max_messages=2, max_bytes=100, policy="drop_oldest")
    store.queue_offline(item("a"), 0.0)
    store.queue_offline(item("b"), 0.0)
    assert topics(store.queue_offline(item("c"), 0.0)) == ["a"]
    assert store.dropped == 1
    assert topics(drain(store)[0]) == ["b", "c"]


def test_drop_oldest_by_bytes_drops_as_many_as_needed() -> None:
    store = OutgoingStore(max_messages=100, max_bytes=10, policy="drop_oldest")
    for name in "abc":
        store.queue_offline(item(name, 3), 0.0)
    assert topics(store.queue_offline(item("d", 7), 0.0)) == ["a", "b"]
    assert (store.dropped, store.offline_count) == (2, 2)
    assert not store.has_room(1)  # 3 + 7 bytes: full
    assert topics(drain(store)[0]) == ["c", "d"]


def test_drop_oldest_never_drops_what_was_accepted_while_connected() -> None:
    """Records pending from a link (over the broker's Receive Maximum) are not the outbox's."""
    store = OutgoingStore(max_messages=1, max_bytes=100, policy="drop_oldest")
    accepted = item("accepted")
    store.pending.append(accepted)
    store.queue_offline(item("a"), 0.0)
    assert topics(store.queue_offline(item("b"), 0.0)) == ["a"]
    assert topics(drain(store)[0]) == ["accepted", "b"]


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_drop_newest_and_block_refuse_the_new_message(policy: OutboxPolicy) -> None:
    """With ``block`` the client waits for :meth:`has_room` before queueing; a message that
    does not fit anyway is refused like ``drop_newest``."""
    store = OutgoingStore(max_messages=2, max_bytes=100, policy=policy)
    store.queue_offline(item("a"), 0.0)
    store.queue_offline(item("b"), 0.0)
    assert not store.has_room(1)
    new = item("c")
    assert store.queue_offline(new, 0.0) == [new]
    assert store.dropped == 1
    assert topics(drain(store)[0]) == ["a", "b"]
    assert store.has_room(1)


def test_raise_policy() -> None:
    store = OutgoingStore(max_messages=1, max_bytes=100, policy="raise")
    store.queue_offline(item("a"), 0.0)
    with pytest.raises(OutboxFullError, match="'b'"):
        store.queue_offline(item("b"), 0.0)
    assert (store.dropped, topics(drain(store)[0])) == (0, ["a"])


@pytest.mark.parametrize("policy", POLICIES)
def test_a_message_larger_than_the_outbox_is_refused_whatever_the_policy(
    policy: OutboxPolicy,
) -> None:
    store = OutgoingStore(max_messages=10, max_bytes=10, policy=policy)
    store.queue_offline(item("small", 4), 0.0)
    huge = item("huge", 11)
    assert store.queue_offline(huge, 0.0) == [huge]
    assert store.dropped == 1
    assert topics(drain(store)[0]) == ["small"]  # nothing was evicted for it


@pytest.mark.parametrize("policy", POLICIES)
def test_max_messages_zero_keeps_nothing(policy: OutboxPolicy) -> None:
    store = OutgoingStore(max_messages=0, max_bytes=100, policy=policy)
    new = item("a")
    assert store.queue_offline(new, 0.0) == [new]
    assert (store.offline_count, store.unfinished) == (0, 0)


def test_ttl_expires_at_link_up_and_keeps_order() -> None:
    store = OutgoingStore(max_messages=10, max_bytes=100, ttl=5.0)
    store.queue_offline(item("old"), 5.0)  # expires at 10
    store.pending.append(item("from-a-link"))  # never expires: accepted while connected
    store.queue_offline(item("edge"), 15.0)  # expires at 20
    store.queue_offline(item("fresh"), 25.0)  # expires at 30
    ready, expired = drain(store, now=20.0)
    assert topics(ready) == ["from-a-link", "fresh"]
    assert topics(expired) == ["old", "edge"]  # expires_at <= now: expired
    assert store.expired == 2
    assert store.offline_count == 0


def test_without_ttl_nothing_expires() -> None:
    store = OutgoingStore(max_messages=10, max_bytes=100)
    store.queue_offline(item("a"), 0.0)
    assert store.take_expired(1e12) == []
    assert store.expired == 0


def test_take_all_empties_every_part_in_flight_first() -> None:
    store = OutgoingStore(max_messages=10, max_bytes=100)
    flying = item("flying")
    store.inflight[1] = flying
    store.resend.append(flying)
    store.pending.append(item("pending"))
    store.queue_offline(item("offline"), 0.0)
    assert topics(list(store.take_all())) == ["flying", "pending", "offline"]
    assert (store.unfinished, store.offline_count, len(store.resend)) == (0, 0, 0)
    assert store.has_room(100)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=20), max_size=40),
    max_messages=st.integers(min_value=0, max_value=8),
    max_bytes=st.integers(min_value=0, max_value=60),
    policy=st.sampled_from(["drop_oldest", "drop_newest", "block"]),
)
def test_limits_always_hold_and_nothing_is_lost_silently(
    sizes: list[int], max_messages: int, max_bytes: int, policy: OutboxPolicy
) -> None:
    store = OutgoingStore(max_messages=max_messages, max_bytes=max_bytes, policy=policy)
    returned = 0
    for n, size in enumerate(sizes):
        returned += len(store.queue_offline(item(str(n), size), 0.0))
        assert store.offline_count <= max_messages
        assert sum(len(i.payload) for i in store.pending) <= max_bytes
    ready, _ = drain(store)
    assert returned == store.dropped
    assert len(ready) + store.dropped == len(sizes)
    assert [int(t) for t in topics(ready)] == sorted(int(t) for t in topics(ready))


# --- the poison-message breaker's part (issue 19) ------------------------------------------------


class RecordingJournal:
    """A journal that remembers what was removed."""

    def __init__(self) -> None:
        self.removed: list[int] = []
        self.unreadable = 0

    def append(self, item: Outgoing) -> int:
        return 1

    def remove(self, seq: int) -> None:
        self.removed.append(seq)

    def load(self) -> Iterator[Outgoing]:
        return iter(())

    def close(self) -> None:
        pass


def on_wire(store: OutgoingStore, *names: str) -> list[Outgoing]:
    items = [item(name) for name in names]
    for packet_id, it in enumerate(items, 1):
        it.packet_id = packet_id
        store.inflight[packet_id] = it
        store.sends = it.order = store.sends + 1  # as Publishing puts it on the wire
    return items


def test_the_suspect_is_the_oldest_publish_without_any_acknowledgement() -> None:
    store = OutgoingStore()
    first, second, third = on_wire(store, "a", "b", "c")
    first.released = True  # QoS 2, PUBREC came: the broker read it
    assert store.suspect() is second
    store.resend.append(second)  # not sent again on this link yet: no evidence against it
    assert store.suspect() is third


def test_a_record_is_given_up_at_the_limit_and_leaves_the_journal() -> None:
    store = OutgoingStore()
    journal = RecordingJournal()
    store.attach(journal)
    poison, innocent = on_wire(store, "poison", "innocent")
    poison.seq = 7
    assert store.strike(3, 0.0, bare=False, span=10.0) is None
    assert store.strike(3, 0.0, bare=False, span=10.0) is None
    assert store.strike(3, 0.0, bare=False, span=10.0) is poison  # DISCONNECTs: no span
    assert list(store.inflight.values()) == [innocent]  # out of the resend set
    assert journal.removed == [7]  # and out of the durable outbox
    assert innocent.strikes == 0


def test_nothing_on_the_wire_takes_no_strike() -> None:
    assert OutgoingStore().strike(1, 0.0, bare=False, span=0.0) is None


def test_a_publish_the_broker_read_past_is_no_suspect() -> None:
    """RabbitMQ confirms out of order and ends a publisher's link when one confirm fails (its
    queue's node just died): a later publish answered on the link clears the oldest one."""
    store = OutgoingStore()
    oldest, later = on_wire(store, "oldest", "later")
    assert store.suspect() is oldest
    store.answered_upto = later.order  # the broker answered "later" (Publishing.finish)
    del store.inflight[later.packet_id]
    assert store.suspect() is None
    assert store.strike(1, 0.0, bare=False, span=0.0) is None
    assert oldest.strikes == 0


def test_bare_closes_give_a_publish_up_only_after_the_span() -> None:
    """Closes without a DISCONNECT may be transient: the limit of strikes is not enough, the
    first strike must also be ``span`` seconds old."""
    store = OutgoingStore()
    [poison] = on_wire(store, "poison")
    strikes = [store.strike(3, t, bare=True, span=10.0) for t in (0.0, 0.5, 1.0, 4.0)]
    assert strikes == [None] * 4
    assert poison.strikes == 4
    assert store.strike(3, 10.5, bare=True, span=10.0) is poison
    assert not store.inflight


def test_one_disconnect_that_blames_it_drops_the_span() -> None:
    store = OutgoingStore()
    [poison] = on_wire(store, "poison")
    assert store.strike(3, 0.0, bare=True, span=10.0) is None
    assert store.strike(3, 0.1, bare=False, span=10.0) is None
    assert store.strike(3, 0.2, bare=True, span=10.0) is poison


def test_strikes_count_links_in_a_row() -> None:
    """A link that ends on another suspect (or on none) starts the count again."""
    store = OutgoingStore()
    first, second = on_wire(store, "first", "second")
    assert store.strike(3, 0.0, bare=False, span=0.0) is None
    assert store.strike(3, 0.0, bare=False, span=0.0) is None
    store.answered_upto = second.order  # a link where the broker read past "first"
    assert store.strike(3, 0.0, bare=False, span=0.0) is None
    assert first.strikes == 0
    store.answered_upto = 0
    assert store.strike(3, 0.0, bare=False, span=0.0) is None  # one strike: a new run
    assert first.strikes == 1
