"""Is the current link really alive? The deadlines of the heartbeat, its watchdog and acks.

TCP can stay "up" for minutes over a dead path (a half-open link), and MQTT keep-alive only
notices after 1.5x keep-alive. So a client can also publish a heartbeat every ``interval`` on
its own keepalive topic, to which it is subscribed: a heartbeat that comes back proves the
whole path (publish, broker routing, our subscription, our receive loop). And QoS 1/2
publishes that wait too long for any acknowledgement say the same of the other direction.

:class:`Liveness` is pure: the session feeds it the time and what happened, asks
:meth:`Liveness.next_deadline` when to look again and :meth:`Liveness.check` whether the link is
stale. Only heartbeats that were actually sent count, and each only once it had its full
interval to come back: an event loop that stalled (a handler calling ``time.sleep``) sent
nothing meanwhile, so it cannot find "missed" heartbeats that were never sent.
"""

from __future__ import annotations

import math
from collections import deque

from .._errors import InvalidArgumentError

__all__ = ["Liveness"]


def _check_interval(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgumentError(f"{name} must be a finite number > 0 seconds, got {value!r}")


class Liveness:
    """Heartbeat schedule, heartbeat watchdog and publish-ack timeout of one link at a time.

    Disarmed until :meth:`link_started` and after :meth:`link_ended`: a link that is down or
    still connecting is never declared stale. While reading is paused on purpose
    (:meth:`pause`), nothing can come back, which says nothing about the link: checks stop,
    and the link is watched afresh on :meth:`resume`.
    """

    __slots__ = (
        "_ack_since",
        "_armed",
        "_interval",
        "_missed",
        "_next_beat",
        "_outstanding",
        "_paused",
        "_publish_timeout",
    )

    def __init__(
        self, *, heartbeat_interval: float | None, missed: int = 3, publish_timeout: float = 10.0
    ) -> None:
        """``heartbeat_interval`` None: no heartbeat and no watchdog (the ack timeout stays).

        Raises ``ValueError`` for a non-positive interval or timeout, or ``missed`` below 1.
        """
        if heartbeat_interval is not None:
            _check_interval("heartbeat_interval", heartbeat_interval)
        _check_interval("publish_timeout", publish_timeout)
        if missed < 1:
            raise InvalidArgumentError(f"missed must be >= 1, got {missed!r}")
        self._interval = heartbeat_interval
        self._missed = missed
        self._publish_timeout = publish_timeout
        self._armed = False
        self._paused = False
        self._next_beat = math.inf
        self._outstanding: deque[float] = deque()  # send times of heartbeats not back yet
        self._ack_since: float | None = None  # since when unacked publishes wait (or last ack)

    def __repr__(self) -> str:
        return (
            f"Liveness(heartbeat_interval={self._interval!r}, missed={self._missed!r}, "
            f"publish_timeout={self._publish_timeout!r})"
        )

    @property
    def watchdog_timeout(self) -> float | None:
        """Seconds of unanswered heartbeats that make a link stale (None: no heartbeat)."""
        return None if self._interval is None else self._interval * self._missed

    # --- what happened ------------------------------------------------------------------------

    def link_started(self, now: float) -> None:
        """A fresh link: beat at once, forget the previous link's heartbeats and acks."""
        self._armed = True
        self._paused = False
        self._outstanding.clear()
        self._ack_since = None
        self._next_beat = now if self._interval is not None else math.inf

    def link_ended(self) -> None:
        """The link is gone: nothing to watch."""
        self._armed = False
        self._outstanding.clear()
        self._ack_since = None
        self._next_beat = math.inf

    def heartbeat_due(self, now: float) -> bool:
        """Whether a heartbeat should be sent at ``now``."""
        # Also while reading is paused: a paused socket notices a reset only when it writes.
        return self._armed and now >= self._next_beat

    def heartbeat_sent(self, now: float) -> None:
        """A heartbeat went out at ``now``; the next is due one interval after it."""
        assert self._interval is not None
        self._outstanding.append(now)
        self._next_beat = now + self._interval

    def heartbeat_returned(self) -> None:
        """One of our heartbeats came back through the broker: the path works."""
        self._outstanding.clear()

    def publishes_waiting(self, now: float, waiting: bool) -> None:
        """Whether QoS 1/2 publishes are on the wire unacknowledged (called as that changes)."""
        if not waiting:
            self._ack_since = None
        elif self._ack_since is None:
            self._ack_since = now

    def acked(self, now: float) -> None:
        """An acknowledgement (or refusal) came: the broker is reading."""
        if self._ack_since is not None:
            self._ack_since = now

    def pause(self) -> None:
        """Reading stopped on purpose (backpressure): no verdict until :meth:`resume`."""
        self._paused = True

    def resume(self, now: float) -> None:
        """Reading again: give the link its full timeouts from ``now``."""
        self._paused = False
        self._outstanding.clear()
        if self._ack_since is not None:
            self._ack_since = now
        if self._armed and self._interval is not None:
            self._next_beat = min(self._next_beat, now)

    # --- verdicts -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`check` (or a heartbeat) is next due; None when nothing is."""
        if not self._armed:
            return None
        deadline = self._next_beat
        if self._paused:  # heartbeats only: no verdict while reading is paused
            return None if deadline == math.inf else deadline
        if self._interval is not None and len(self._outstanding) >= self._missed:
            deadline = min(deadline, self._outstanding[self._missed - 1] + self._interval)
        if self._ack_since is not None:
            deadline = min(deadline, self._ack_since + self._publish_timeout)
        return None if deadline == math.inf else deadline

    def check(self, now: float) -> str | None:
        """Why the link is stale at ``now``, or None while it is not."""
        if not self._armed or self._paused:
            return None
        interval = self._interval
        missed = self._missed
        if (
            interval is not None
            and len(self._outstanding) >= missed
            and now >= self._outstanding[missed - 1] + interval
        ):
            return "no heartbeat came back through the broker"
        since = self._ack_since
        if since is not None and now - since >= self._publish_timeout:
            return f"no publish ack within {self._publish_timeout:g} s"
        return None
