"""Heartbeat schedule and watchdog deadlines, driven by a fake clock (plain floats)."""

from __future__ import annotations

import math

import pytest

from tars.mqtt._liveness import HeartbeatSchedule, Watchdog

# --- Watchdog ------------------------------------------------------------------------------------


def test_a_disarmed_watchdog_is_never_stale() -> None:
    watchdog = Watchdog(interval=1.0)
    assert not watchdog.armed
    assert watchdog.deadline() == math.inf
    assert not watchdog.is_stale(1e12)


def test_stale_after_missed_intervals_without_a_return() -> None:
    watchdog = Watchdog(interval=2.0, missed=3)
    watchdog.start(100.0)
    assert watchdog.armed
    assert watchdog.deadline() == 106.0
    assert not watchdog.is_stale(106.0)
    assert watchdog.is_stale(106.001)


def test_a_returned_heartbeat_pushes_the_deadline() -> None:
    watchdog = Watchdog(interval=1.0, missed=3)
    watchdog.start(0.0)
    watchdog.heartbeat_returned(2.5)
    assert watchdog.deadline() == 5.5
    assert not watchdog.is_stale(5.0)
    assert watchdog.is_stale(5.6)


def test_regular_returns_keep_the_link_alive() -> None:
    watchdog = Watchdog(interval=1.0, missed=2)
    watchdog.start(0.0)
    for tick in range(1, 100):
        watchdog.heartbeat_returned(float(tick))
        assert not watchdog.is_stale(tick + 1.9)


def test_a_late_report_of_an_earlier_return_does_not_move_the_deadline_back() -> None:
    watchdog = Watchdog(interval=1.0, missed=3)
    watchdog.start(0.0)
    watchdog.heartbeat_returned(5.0)
    watchdog.heartbeat_returned(4.0)
    assert watchdog.deadline() == 8.0


def test_returns_before_start_are_ignored() -> None:
    watchdog = Watchdog(interval=1.0, missed=3)
    watchdog.heartbeat_returned(50.0)
    assert not watchdog.armed
    watchdog.start(10.0)
    assert watchdog.deadline() == 13.0


def test_start_on_a_fresh_link_forgets_the_previous_one() -> None:
    watchdog = Watchdog(interval=1.0, missed=3)
    watchdog.start(0.0)
    assert watchdog.is_stale(10.0)
    watchdog.start(10.0)
    assert not watchdog.is_stale(12.0)
    assert watchdog.deadline() == 13.0


def test_stop_disarms() -> None:
    watchdog = Watchdog(interval=1.0, missed=1)
    watchdog.start(0.0)
    watchdog.stop()
    assert not watchdog.is_stale(100.0)
    watchdog.heartbeat_returned(100.0)
    assert watchdog.deadline() == math.inf


def test_timeout_is_missed_times_interval() -> None:
    assert Watchdog(interval=0.5, missed=4).timeout == 2.0


@pytest.mark.parametrize(
    ("interval", "missed", "message"),
    [
        (0.0, 3, "interval"),
        (-1.0, 3, "interval"),
        (math.inf, 3, "interval"),
        (math.nan, 3, "interval"),
        (1.0, 0, "missed"),
    ],
)
def test_watchdog_refuses_invalid_arguments(interval: float, missed: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Watchdog(interval, missed)


# --- HeartbeatSchedule ---------------------------------------------------------------------------


def test_first_heartbeat_is_due_at_once() -> None:
    schedule = HeartbeatSchedule(5.0)
    assert schedule.due(0.0)
    assert schedule.next_due() == -math.inf


def test_next_heartbeat_is_due_one_interval_after_sending() -> None:
    schedule = HeartbeatSchedule(5.0)
    schedule.sent(10.0)
    assert schedule.next_due() == 15.0
    assert not schedule.due(14.99)
    assert schedule.due(15.0)


def test_a_late_send_does_not_cause_a_burst() -> None:
    schedule = HeartbeatSchedule(1.0)
    schedule.sent(0.0)
    schedule.sent(7.5)  # the loop was late by 6.5 s
    assert not schedule.due(8.0)
    assert schedule.next_due() == 8.5


def test_reset_makes_a_heartbeat_due_at_once() -> None:
    schedule = HeartbeatSchedule(5.0)
    schedule.sent(10.0)
    schedule.reset()
    assert schedule.due(10.1)


@pytest.mark.parametrize("interval", [0.0, -2.0, math.inf, math.nan])
def test_schedule_refuses_invalid_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        HeartbeatSchedule(interval)
