"""Heartbeat schedule, heartbeat watchdog and publish-ack timeout, driven by a fake clock (plain
floats). The session's use of them (what it sends, the Disconnected it reports) is in
test_session_links.py."""

from __future__ import annotations

import math

import pytest

from tars.mqtt._core.liveness import Liveness


def started(now: float = 0.0, **options: float) -> Liveness:
    interval = options.pop("heartbeat_interval", 1.0)
    liveness = Liveness(heartbeat_interval=interval, **options)  # type: ignore[arg-type]
    liveness.link_started(now)
    return liveness


def beat(liveness: Liveness, now: float) -> None:
    """What the session does at a deadline: send the heartbeat if it is due."""
    assert liveness.heartbeat_due(now)
    liveness.heartbeat_sent(now)


# --- armed or not ------------------------------------------------------------------------------


def test_a_disarmed_liveness_has_no_deadline_and_no_verdict() -> None:
    liveness = Liveness(heartbeat_interval=1.0)
    assert liveness.next_deadline() is None
    assert not liveness.heartbeat_due(1e12)
    assert liveness.check(1e12) is None


def test_link_ended_disarms() -> None:
    liveness = started(missed=1)
    beat(liveness, 0.0)
    liveness.link_ended()
    assert liveness.check(100.0) is None
    assert liveness.next_deadline() is None
    assert not liveness.heartbeat_due(100.0)


def test_link_started_forgets_the_previous_link() -> None:
    liveness = started(missed=3)
    for now in (0.0, 1.0, 2.0):
        beat(liveness, now)
    assert liveness.check(3.0) is not None
    liveness.link_started(10.0)
    assert liveness.check(12.5) is None
    assert liveness.next_deadline() == 10.0  # a heartbeat at once on the fresh link


# --- the heartbeat schedule --------------------------------------------------------------------


def test_first_heartbeat_is_due_at_once() -> None:
    liveness = started(5.0, heartbeat_interval=5.0)
    assert liveness.heartbeat_due(5.0)
    assert liveness.next_deadline() == 5.0


def test_next_heartbeat_is_due_one_interval_after_sending() -> None:
    liveness = started(heartbeat_interval=5.0)
    beat(liveness, 10.0)
    assert liveness.next_deadline() == 15.0
    assert not liveness.heartbeat_due(14.99)
    assert liveness.heartbeat_due(15.0)


def test_a_late_send_does_not_cause_a_burst() -> None:
    liveness = started(heartbeat_interval=1.0)
    beat(liveness, 0.0)
    beat(liveness, 7.5)  # the loop was late by 6.5 s
    assert not liveness.heartbeat_due(8.0)
    assert liveness.next_deadline() == 8.5


def test_no_heartbeat_interval_means_no_heartbeat_and_no_watchdog() -> None:
    liveness = started(heartbeat_interval=None)  # type: ignore[arg-type]
    assert liveness.watchdog_timeout is None
    assert not liveness.heartbeat_due(1e9)
    assert liveness.next_deadline() is None
    assert liveness.check(1e9) is None


# --- the watchdog --------------------------------------------------------------------------------


def test_stale_once_missed_heartbeats_each_had_their_full_interval() -> None:
    liveness = started(100.0, heartbeat_interval=2.0, missed=3)
    for now in (100.0, 102.0, 104.0):
        beat(liveness, now)
    assert liveness.next_deadline() == 106.0
    assert liveness.check(105.999) is None
    assert liveness.check(106.0) == "no heartbeat came back through the broker"


def test_only_heartbeats_actually_sent_count() -> None:
    # A stalled event loop sent nothing for a minute: no "missed" heartbeats to count.
    liveness = started(heartbeat_interval=1.0, missed=3)
    beat(liveness, 0.0)
    assert liveness.check(60.0) is None
    beat(liveness, 60.0)
    assert liveness.check(61.0) is None
    beat(liveness, 61.0)
    assert liveness.check(61.999) is None  # the third one has not had its interval yet
    assert liveness.check(62.0) is not None


def test_a_returned_heartbeat_clears_what_was_outstanding() -> None:
    liveness = started(heartbeat_interval=1.0, missed=3)
    for now in (0.0, 1.0):
        beat(liveness, now)
    liveness.heartbeat_returned()
    beat(liveness, 2.0)
    assert liveness.check(3.0) is None
    beat(liveness, 3.0)
    beat(liveness, 4.0)
    assert liveness.next_deadline() == 5.0
    assert liveness.check(5.0) is not None


def test_regular_returns_keep_the_link_alive() -> None:
    liveness = started(heartbeat_interval=1.0, missed=2)
    for tick in range(100):
        beat(liveness, float(tick))
        liveness.heartbeat_returned()
        assert liveness.check(tick + 0.9) is None


def test_watchdog_timeout_is_missed_times_interval() -> None:
    assert Liveness(heartbeat_interval=0.5, missed=4).watchdog_timeout == 2.0


# --- the publish-ack timeout -----------------------------------------------------------------


def test_unacked_publishes_make_the_link_stale_after_the_timeout() -> None:
    liveness = started(heartbeat_interval=None, publish_timeout=10.0)  # type: ignore[arg-type]
    liveness.publishes_waiting(5.0, True)
    liveness.publishes_waiting(6.0, True)  # still waiting: the clock is not restarted
    assert liveness.next_deadline() == 15.0
    assert liveness.check(14.9) is None
    assert liveness.check(15.0) == "no publish ack within 10 s"


def test_an_ack_restarts_the_timeout_and_none_waiting_ends_it() -> None:
    liveness = started(heartbeat_interval=None, publish_timeout=10.0)  # type: ignore[arg-type]
    liveness.acked(1.0)  # nothing was waiting: nothing to restart
    assert liveness.next_deadline() is None
    liveness.publishes_waiting(0.0, True)
    liveness.acked(8.0)
    assert liveness.next_deadline() == 18.0
    liveness.publishes_waiting(9.0, False)
    assert liveness.next_deadline() is None
    assert liveness.check(1e9) is None


def test_the_earliest_deadline_wins() -> None:
    liveness = started(heartbeat_interval=5.0, publish_timeout=3.0)
    beat(liveness, 0.0)
    liveness.publishes_waiting(1.0, True)
    assert liveness.next_deadline() == 4.0  # the ack timeout, before the next heartbeat (5)


# --- paused reading --------------------------------------------------------------------------


def test_paused_reading_sends_heartbeats_but_gives_no_verdict() -> None:
    liveness = started(heartbeat_interval=1.0, missed=2, publish_timeout=3.0)
    liveness.publishes_waiting(0.0, True)
    liveness.pause()
    for now in range(10):
        beat(liveness, float(now))  # still due: a paused socket notices a reset when it writes
        assert liveness.check(float(now)) is None
    assert liveness.next_deadline() == 10.0  # only the next heartbeat


def test_resume_gives_the_link_its_full_timeouts_from_then() -> None:
    liveness = started(heartbeat_interval=1.0, missed=2, publish_timeout=3.0)
    liveness.publishes_waiting(0.0, True)
    liveness.pause()
    for now in range(10):
        beat(liveness, float(now))
    liveness.resume(20.0)
    assert liveness.heartbeat_due(20.0)
    assert liveness.check(20.0) is None
    deadline = liveness.next_deadline()
    assert deadline is not None
    assert deadline <= 20.0  # due now
    beat(liveness, 20.0)
    assert liveness.next_deadline() == 21.0
    assert liveness.check(22.9) is None  # one heartbeat out only, the ack clock from 20
    assert liveness.check(23.0) == "no publish ack within 3 s"


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"heartbeat_interval": 0.0}, "heartbeat_interval"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval"),
        ({"heartbeat_interval": math.inf}, "heartbeat_interval"),
        ({"heartbeat_interval": math.nan}, "heartbeat_interval"),
        ({"heartbeat_interval": 1.0, "missed": 0}, "missed"),
        ({"heartbeat_interval": 1.0, "publish_timeout": 0.0}, "publish_timeout"),
        ({"heartbeat_interval": None, "publish_timeout": math.inf}, "publish_timeout"),
    ],
)
def test_invalid_arguments_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Liveness(**options)  # type: ignore[arg-type]


def test_repr_shows_the_configuration() -> None:
    text = repr(Liveness(heartbeat_interval=2.0, missed=4, publish_timeout=7.0))
    assert text == "Liveness(heartbeat_interval=2.0, missed=4, publish_timeout=7.0)"
