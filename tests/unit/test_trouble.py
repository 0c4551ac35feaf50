"""ConnectTrouble: which failed connection attempts are worth a WARNING (pure, fake clock)."""

from __future__ import annotations

import pytest

from tars.mqtt._trouble import ConnectTrouble, Healed


def test_the_first_failure_warns_then_at_most_once_per_period() -> None:
    trouble = ConnectTrouble(warn_every=60.0)
    times = [100.0, 100.5, 101.0, 159.9, 160.0, 160.5, 219.9, 220.0]
    assert [trouble.failed(t) for t in times] == [
        True,  # trouble starts: say it
        False,
        False,
        False,
        True,  # 60 s after the last warning
        False,
        False,
        True,
    ]
    assert trouble.attempts == len(times)
    assert trouble.seconds(220.0) == 120.0


def test_connected_reports_the_series_once_and_starts_afresh() -> None:
    trouble = ConnectTrouble()
    assert trouble.connected(5.0) is None  # no trouble: nothing to report
    trouble.failed(10.0)
    trouble.failed(11.0)
    trouble.failed(12.0)
    assert trouble.connected(13.5) == Healed(attempts=3, seconds=3.5)
    assert trouble.connected(14.0) is None
    assert trouble.seconds(14.0) == 0.0
    assert trouble.failed(20.0) is True  # a new series warns again at once
    assert trouble.attempts == 1


def test_warn_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="warn_every"):
        ConnectTrouble(warn_every=0)
