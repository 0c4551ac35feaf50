"""The outbox: a bounded FIFO of publishes made while disconnected (pure; time passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tars.mqtt import OutboxFullError
from tars.mqtt._outbox import Outbox, OutboxItem, OutboxPolicy

POLICIES: list[OutboxPolicy] = ["drop_oldest", "drop_newest", "block", "raise"]


def item(name: str, size: int = 1, expires_at: float | None = None) -> OutboxItem:
    return OutboxItem(name, b"x" * size, 1, False, None, None, expires_at)


def topics(items: list[OutboxItem]) -> list[str]:
    return [i.topic for i in items]


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
        Outbox(**options)  # type: ignore[arg-type]


def test_keeps_order_and_counts_bytes() -> None:
    box = Outbox(max_messages=10, max_bytes=100)
    for name, size in (("a", 3), ("b", 5), ("c", 7)):
        assert box.put(item(name, size)) == []
    assert (len(box), box.size_bytes) == (3, 15)
    ready, expired = box.take_all(now=0.0)
    assert (topics(ready), expired) == (["a", "b", "c"], [])
    assert (len(box), box.size_bytes, box.dropped) == (0, 0, 0)


def test_drop_oldest_by_count() -> None:
    box = Outbox(max_messages=2, max_bytes=100, policy="drop_oldest")
    box.put(item("a"))
    box.put(item("b"))
    assert topics(box.put(item("c"))) == ["a"]
    assert box.dropped == 1
    assert topics(box.take_all(0.0)[0]) == ["b", "c"]


def test_drop_oldest_by_bytes_drops_as_many_as_needed() -> None:
    box = Outbox(max_messages=100, max_bytes=10, policy="drop_oldest")
    for name in "abc":
        box.put(item(name, 3))
    assert topics(box.put(item("d", 7))) == ["a", "b"]
    assert (box.dropped, box.size_bytes) == (2, 10)
    assert topics(box.take_all(0.0)[0]) == ["c", "d"]


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_drop_newest_and_block_refuse_the_new_message(policy: OutboxPolicy) -> None:
    """With ``block`` the client waits for :meth:`has_room` before putting; a put that does
    not fit anyway is refused like ``drop_newest``."""
    box = Outbox(max_messages=2, max_bytes=100, policy=policy)
    box.put(item("a"))
    box.put(item("b"))
    assert not box.has_room(1)
    new = item("c")
    assert box.put(new) == [new]
    assert box.dropped == 1
    assert topics(box.take_all(0.0)[0]) == ["a", "b"]
    assert box.has_room(1)


def test_raise_policy() -> None:
    box = Outbox(max_messages=1, max_bytes=100, policy="raise")
    box.put(item("a"))
    with pytest.raises(OutboxFullError, match="'b'"):
        box.put(item("b"))
    assert (box.dropped, topics(box.take_all(0.0)[0])) == (0, ["a"])


@pytest.mark.parametrize("policy", POLICIES)
def test_a_message_larger_than_the_outbox_is_refused_whatever_the_policy(
    policy: OutboxPolicy,
) -> None:
    box = Outbox(max_messages=10, max_bytes=10, policy=policy)
    box.put(item("small", 4))
    huge = item("huge", 11)
    assert box.put(huge) == [huge]
    assert box.dropped == 1
    assert topics(box.take_all(0.0)[0]) == ["small"]  # nothing was evicted for it


@pytest.mark.parametrize("policy", POLICIES)
def test_max_messages_zero_keeps_nothing(policy: OutboxPolicy) -> None:
    box = Outbox(max_messages=0, max_bytes=100, policy=policy)
    new = item("a")
    assert box.put(new) == [new]
    assert len(box) == 0


def test_ttl_expires_at_take_time_and_keeps_order() -> None:
    box = Outbox(max_messages=10, max_bytes=100, ttl=5.0)
    box.put(item("old", expires_at=10.0))
    box.put(item("forever"))
    box.put(item("edge", expires_at=20.0))
    box.put(item("fresh", expires_at=30.0))
    ready, expired = box.take_all(now=20.0)
    assert topics(ready) == ["forever", "fresh"]
    assert topics(expired) == ["old", "edge"]  # expires_at <= now: expired
    assert box.expired == 2


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=20), max_size=40),
    max_messages=st.integers(min_value=0, max_value=8),
    max_bytes=st.integers(min_value=0, max_value=60),
    policy=st.sampled_from(["drop_oldest", "drop_newest", "block"]),
)
def test_limits_always_hold_and_nothing_is_lost_silently(
    sizes: list[int], max_messages: int, max_bytes: int, policy: OutboxPolicy
) -> None:
    box = Outbox(max_messages=max_messages, max_bytes=max_bytes, policy=policy)
    returned = 0
    for n, size in enumerate(sizes):
        returned += len(box.put(item(str(n), size)))
        assert len(box) <= max_messages
        assert box.size_bytes <= max_bytes
    ready, _ = box.take_all(0.0)
    assert returned == box.dropped
    assert len(ready) + box.dropped == len(sizes)
    assert [int(t) for t in topics(ready)] == sorted(int(t) for t in topics(ready))
