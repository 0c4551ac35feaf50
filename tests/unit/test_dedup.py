"""The dedup window, driven by a fake clock (plain floats)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tars.mqtt._dedup import DedupWindow


def test_first_sight_is_not_a_duplicate() -> None:
    window = DedupWindow(ttl=10.0, max_entries=100)
    assert window.seen("a", 0.0) is False
    assert len(window) == 1


def test_same_key_within_ttl_is_a_duplicate() -> None:
    window = DedupWindow(ttl=10.0, max_entries=100)
    window.seen("a", 100.0)
    assert window.seen("a", 100.0) is True
    assert window.seen("a", 109.999) is True


def test_same_key_after_ttl_is_new_again() -> None:
    window = DedupWindow(ttl=10.0, max_entries=100)
    window.seen("a", 100.0)
    assert window.seen("a", 110.0) is False  # exactly ttl later: expired
    assert window.seen("a", 115.0) is True  # re-recorded at 110


def test_a_duplicate_does_not_extend_the_window() -> None:
    window = DedupWindow(ttl=10.0, max_entries=100)
    window.seen("a", 0.0)
    assert window.seen("a", 9.0) is True
    assert window.seen("a", 10.5) is False


def test_other_keys_are_independent() -> None:
    window = DedupWindow(ttl=10.0, max_entries=100)
    window.seen("a", 0.0)
    assert window.seen("b", 1.0) is False
    assert window.seen("a", 2.0) is True
    assert window.seen("b", 3.0) is True


def test_expired_keys_are_dropped() -> None:
    window = DedupWindow(ttl=5.0, max_entries=100)
    for i in range(10):
        window.seen(f"k{i}", float(i))
    window.seen("late", 12.0)  # k0..k7 recorded at or before 7.0: expired
    assert window.seen("k8", 12.0) is True
    assert window.seen("k0", 12.0) is False
    assert len(window) <= 2 * 6  # at most two ttl of keys are held: k5..k9, late, k0
    window.seen("after-silence", 30.0)  # everything else is older than ttl: all dropped
    assert len(window) == 1


def test_the_newest_half_is_kept_and_never_more_than_max_entries() -> None:
    window = DedupWindow(ttl=1000.0, max_entries=4)
    for key in ("a", "b", "c", "d", "e"):
        window.seen(key, 1.0)
    assert len(window) <= 4
    assert window.seen("e", 2.0) is True  # the newest max_entries // 2 are always kept
    assert window.seen("d", 2.0) is True
    assert window.seen("a", 2.0) is False  # pushed out by the newer keys, so new again


@given(
    keys=st.lists(st.integers(0, 30), max_size=300),
    max_entries=st.integers(1, 12),
)
def test_bounds_hold_for_any_stream(keys: list[int], max_entries: int) -> None:
    window = DedupWindow(ttl=1e6, max_entries=max_entries)
    recorded: list[str] = []  # first sightings, newest last (a duplicate is not refreshed)
    for n, key in enumerate(keys):
        name = str(key)
        if not window.seen(name, float(n)):
            if name in recorded:
                recorded.remove(name)
            recorded.append(name)
        assert len(window) <= max_entries
    for name in recorded[-max(1, max_entries // 2) :]:
        assert window.seen(name, float(len(keys))) is True


def test_max_entries_of_one_remembers_only_the_last_key() -> None:
    window = DedupWindow(ttl=1000.0, max_entries=1)
    window.seen("a", 0.0)
    window.seen("b", 0.0)
    assert window.seen("b", 0.0) is True
    assert window.seen("a", 0.0) is False


def test_size_stays_bounded_over_a_million_keys() -> None:
    window = DedupWindow(ttl=1e9, max_entries=1000)
    peak = 0
    for i in range(1_000_000):
        assert window.seen(str(i), i * 1e-3) is False
        if i % 1000 == 0:
            peak = max(peak, len(window))
    assert peak <= 1000
    assert len(window) == 1000
    assert window.seen("999999", 1e6) is True
    assert window.seen("0", 1e6) is False


def test_size_follows_ttl_under_a_steady_stream() -> None:
    window = DedupWindow(ttl=1.0, max_entries=1_000_000)
    for i in range(100_000):
        window.seen(str(i), i * 0.01)  # 100 keys per second, each remembered for 1 s
    assert 100 <= len(window) <= 200  # between one and two ttl of keys


def test_clear_forgets_everything() -> None:
    window = DedupWindow(ttl=10.0, max_entries=10)
    window.seen("a", 0.0)
    window.clear()
    assert len(window) == 0
    assert window.seen("a", 1.0) is False
    assert window.seen("a", 2.0) is True


@pytest.mark.parametrize(
    ("ttl", "max_entries", "message"),
    [
        (0.0, 10, "ttl"),
        (-1.0, 10, "ttl"),
        (float("nan"), 10, "ttl"),
        (float("inf"), 10, "ttl"),
        (1.0, 0, "max_entries"),
        (1.0, -5, "max_entries"),
    ],
)
def test_invalid_arguments_are_refused(ttl: float, max_entries: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DedupWindow(ttl, max_entries)


def test_repr_shows_the_configuration() -> None:
    window = DedupWindow(ttl=2.5, max_entries=7)
    window.seen("a", 0.0)
    assert repr(window) == "DedupWindow(ttl=2.5, max_entries=7, size=1)"
