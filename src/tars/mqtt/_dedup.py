"""A bounded, time-limited memory of message ids, so redelivered events are handled once.

QoS 1 is "at least once": after a reconnect the broker may deliver an event again, and a bridge or
a retrying producer may publish it twice. The receive path asks :meth:`DedupWindow.seen` for each
envelope id and drops the event when it answers True.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["DedupWindow"]


class DedupWindow:
    """Remembers keys for ``ttl`` seconds, at most ``max_entries`` of them.

    Pure: the caller passes ``now`` (from a monotonic clock). Keys are kept in the order they were
    first recorded, which is also the order of their timestamps as long as ``now`` never goes
    back, so expiry and eviction only ever look at the oldest end. That end is an
    :class:`~collections.OrderedDict` on purpose: removing the first key of a plain ``dict`` over
    and over costs time proportional to the keys removed so far (measured 30 us per call at 100k
    keys), while ``OrderedDict.popitem(last=False)`` stays O(1).

    A key seen again within the window is not refreshed: the window measures time since the
    first delivery, so a key cannot be kept alive forever by redeliveries.
    """

    __slots__ = ("_entries", "_max_entries", "_next_expiry", "_ttl")

    def __init__(self, ttl: float, max_entries: int) -> None:
        """Create an empty window.

        Raises:
            ValueError: ``ttl`` is not positive or ``max_entries`` is below 1.
        """
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a finite number > 0 seconds, got {ttl!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._next_expiry = math.inf  # no key can expire before this time

    @property
    def ttl(self) -> float:
        """How long (seconds) a key is remembered after it was first recorded."""
        return self._ttl

    @property
    def max_entries(self) -> int:
        """How many keys are remembered at most; the oldest is forgotten first."""
        return self._max_entries

    def seen(self, key: str, now: float) -> bool:
        """Return True if ``key`` was recorded less than ``ttl`` before ``now``, else record it.

        O(1) amortized: each key is inserted once and removed once, and the expiry scan only
        runs once the oldest key may have expired.
        """
        entries = self._entries
        if now >= self._next_expiry:
            self._expire(now)
        if key in entries:
            return True
        if not entries:
            self._next_expiry = now + self._ttl
        entries[key] = now
        if len(entries) > self._max_entries:
            # The new oldest key expires no earlier than the evicted one, so _next_expiry stays
            # a safe (early) bound.
            entries.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        """Drop the keys whose ``recorded + ttl`` is not after ``now``; note the next expiry."""
        entries = self._entries
        ttl = self._ttl
        while entries:
            oldest_key = next(iter(entries))
            expires = entries[oldest_key] + ttl
            if expires > now:
                self._next_expiry = expires
                return
            del entries[oldest_key]
        self._next_expiry = math.inf

    def clear(self) -> None:
        """Forget every key."""
        self._entries.clear()
        self._next_expiry = math.inf

    def __len__(self) -> int:
        """How many keys are currently remembered (expired ones may linger until the next call)."""
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"DedupWindow(ttl={self._ttl!r}, max_entries={self._max_entries!r}, size={len(self)})"
        )
