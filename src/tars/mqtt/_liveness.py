"""Deadlines for the heartbeat round trip: when to send one, and when the link counts as dead.

MQTT's own PINGREQ only proves the TCP link to the broker is alive. A client also publishes a
heartbeat every ``interval`` on its own keepalive topic and is subscribed to it, so a heartbeat
that comes back proves the whole path (publish, broker routing, our subscription, our receive
loop). :class:`HeartbeatSchedule` says when the next one is due; :class:`Watchdog` says when too
many have failed to come back. Both are pure: the caller passes ``now`` from a monotonic clock and
sleeps until the returned deadlines.
"""

from __future__ import annotations

import math

from ._errors import InvalidArgumentError

__all__ = ["HeartbeatSchedule", "Watchdog"]


def _check_interval(interval: float) -> None:
    if not (math.isfinite(interval) and interval > 0):
        raise InvalidArgumentError(
            f"interval must be a finite number > 0 seconds, got {interval!r}"
        )


class Watchdog:
    """Declares the link stale when no heartbeat came back for ``missed * interval`` seconds.

    Disarmed until :meth:`start` (a disarmed watchdog is never stale), so a link that is down or
    still connecting cannot be declared dead by it. Each fresh link calls :meth:`start` again,
    which forgets heartbeats returned on the previous one.
    """

    __slots__ = ("_interval", "_last", "_missed")

    def __init__(self, interval: float, missed: int = 3) -> None:
        """Create a disarmed watchdog.

        Raises:
            ValueError: ``interval`` is not a positive finite number or ``missed`` is below 1.
        """
        _check_interval(interval)
        if missed < 1:
            raise InvalidArgumentError(f"missed must be >= 1, got {missed!r}")
        self._interval = interval
        self._missed = missed
        self._last: float | None = None  # the later of start and the last returned heartbeat

    @property
    def timeout(self) -> float:
        """How long (seconds) without a returned heartbeat makes the link stale."""
        return self._missed * self._interval

    @property
    def armed(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._last is not None

    def start(self, now: float) -> None:
        """Arm the watchdog for a fresh link: the link has ``timeout`` seconds from ``now``."""
        self._last = now

    def stop(self) -> None:
        """Disarm the watchdog (the link is gone; there is nothing to watch)."""
        self._last = None

    def heartbeat_returned(self, now: float) -> None:
        """Record that one of our heartbeats came back through the broker at ``now``.

        Ignored while disarmed: a heartbeat from a link that is already gone proves nothing
        about the next one.
        """
        if self._last is not None and now > self._last:
            self._last = now

    def deadline(self) -> float:
        """When (on the caller's clock) the link becomes stale; ``math.inf`` while disarmed."""
        if self._last is None:
            return math.inf
        return self._last + self.timeout

    def is_stale(self, now: float) -> bool:
        """True when no heartbeat came back for more than ``timeout`` seconds before ``now``."""
        return now > self.deadline()

    def __repr__(self) -> str:
        return f"Watchdog(interval={self._interval!r}, missed={self._missed!r})"


class HeartbeatSchedule:
    """When the next heartbeat is due: every ``interval`` seconds after the last one sent.

    A new (or :meth:`reset`) schedule is due at once, so the first heartbeat of a fresh link goes
    out immediately. The next one is timed from when this one was actually sent, so a late
    send never causes a burst of catch-up heartbeats.
    """

    __slots__ = ("_interval", "_next")

    def __init__(self, interval: float) -> None:
        """Create a schedule that is due at once.

        Raises:
            ValueError: ``interval`` is not a positive finite number.
        """
        _check_interval(interval)
        self._interval = interval
        self._next = -math.inf

    @property
    def interval(self) -> float:
        """Seconds between two heartbeats."""
        return self._interval

    def due(self, now: float) -> bool:
        """True when a heartbeat should be sent at ``now``."""
        return now >= self._next

    def sent(self, now: float) -> None:
        """Record that a heartbeat was sent at ``now``; the next is due ``interval`` later."""
        self._next = now + self._interval

    def next_due(self) -> float:
        """When the next heartbeat is due (``-math.inf`` until the first one is sent)."""
        return self._next

    def reset(self) -> None:
        """Make a heartbeat due at once (a fresh link should prove itself without waiting)."""
        self._next = -math.inf

    def __repr__(self) -> str:
        return f"HeartbeatSchedule(interval={self._interval!r})"
