"""Reconnection delays, with seeded random generators."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tars.mqtt._backoff import BackoffPolicy, ExponentialBackoff, NoRetry


def test_both_policies_satisfy_the_protocol() -> None:
    assert isinstance(ExponentialBackoff(), BackoffPolicy)
    assert isinstance(NoRetry(), BackoffPolicy)


def test_without_jitter_delays_double_up_to_the_cap() -> None:
    policy = ExponentialBackoff(min_delay=0.5, max_delay=5.0, multiplier=2.0, jitter=0.0)
    delays = [policy.next_delay(n, refused=False) for n in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_jittered_delays_stay_within_bounds() -> None:
    policy = ExponentialBackoff(jitter=0.5, rng=random.Random(1))
    for attempt in range(30):
        base = min(5.0, 0.5 * 2.0**attempt)
        for _ in range(50):
            delay = policy.next_delay(attempt, refused=False)
            assert delay is not None
            assert base * 0.5 <= delay <= base


def test_delays_grow_with_the_attempt_number() -> None:
    policy = ExponentialBackoff(jitter=0.5, rng=random.Random(2))
    means = []
    for attempt in range(4):
        samples = [policy.next_delay(attempt, refused=False) for _ in range(200)]
        means.append(sum(d for d in samples if d is not None) / 200)
    assert means == sorted(means)
    assert means[3] > 6 * means[0]


def test_the_cap_holds_for_huge_attempt_numbers() -> None:
    policy = ExponentialBackoff(max_delay=30.0, jitter=0.0)
    assert policy.next_delay(10_000, refused=False) == 30.0


def test_fifty_clients_spread_their_reconnects() -> None:
    delays = [
        ExponentialBackoff(rng=random.Random(seed)).next_delay(3, refused=False)
        for seed in range(50)
    ]
    values = [d for d in delays if d is not None]
    assert len(set(values)) == 50
    assert max(values) - min(values) > 1.5  # jitter spans [2, 4) seconds at attempt 3


def test_default_generator_is_used_without_rng() -> None:
    policy = ExponentialBackoff()
    delays = {policy.next_delay(4, refused=False) for _ in range(20)}
    assert all(d is not None and 2.5 <= d <= 5.0 for d in delays)
    assert len(delays) > 1


def test_gives_up_at_max_attempts() -> None:
    policy = ExponentialBackoff(max_attempts=3, rng=random.Random(0))
    assert [policy.next_delay(n, refused=False) is not None for n in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert policy.next_delay(3, refused=True) is None


def test_max_attempts_zero_never_retries() -> None:
    assert ExponentialBackoff(max_attempts=0).next_delay(0, refused=False) is None


def test_refused_connection_is_retried_within_refused_delay() -> None:
    policy = ExponentialBackoff(max_delay=30.0, refused_delay=1.0, rng=random.Random(3))
    for attempt in range(20):
        delay = policy.next_delay(attempt, refused=True)
        assert delay is not None
        assert delay <= 1.0


def test_refused_cap_does_not_lengthen_short_delays() -> None:
    policy = ExponentialBackoff(min_delay=0.5, refused_delay=1.0, jitter=0.0)
    assert policy.next_delay(0, refused=True) == 0.5
    assert policy.next_delay(5, refused=True) == 1.0


def test_refused_delays_are_still_spread_across_clients() -> None:
    delays = [
        ExponentialBackoff(rng=random.Random(seed)).next_delay(8, refused=True)
        for seed in range(50)
    ]
    values = [d for d in delays if d is not None]
    assert len(set(values)) == 50
    assert min(values) >= 0.5
    assert max(values) - min(values) > 0.3


def test_no_retry_always_gives_up() -> None:
    policy = NoRetry()
    assert policy.next_delay(0, refused=False) is None
    assert policy.next_delay(7, refused=True) is None


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        ExponentialBackoff().next_delay(-1, refused=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_delay": 0.0}, "min_delay"),
        ({"min_delay": -1.0}, "min_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"min_delay": 3.0, "max_delay": 2.0}, "max_delay"),
        ({"refused_delay": 0.0}, "refused_delay"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"multiplier": float("nan")}, "multiplier"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_attempts": -1}, "max_attempts"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExponentialBackoff(**kwargs)


def test_repr_shows_the_schedule() -> None:
    assert repr(ExponentialBackoff(max_attempts=4)) == (
        "ExponentialBackoff(min_delay=0.5, max_delay=5.0, multiplier=2.0, jitter=0.5, "
        "max_attempts=4, refused_delay=1.0)"
    )
    assert repr(NoRetry()) == "NoRetry()"
