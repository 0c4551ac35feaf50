"""A bounded, time-limited memory of message keys, so redelivered events are handled once.

QoS 1 is "at least once": after a reconnect the broker may deliver an event again, and a bridge or
a retrying producer may publish it twice. The receive path asks :meth:`DedupWindow.seen` for each
envelope's :func:`content_key` and drops the event when it answers True.

Why not the id alone: the fleet's original format reuses one id for several distinct messages
(an answer carries its request's id; the chunks of a stream share one id and differ in
``data.seq``; a retained state is re-published under the same id when it changes). The key is
the id plus a hash of everything in the envelope but its ``ts``, so those stay distinct, while a
redelivery (the same bytes) and a producer's retry of the same event (same id and content, a
later ``ts``) are still recognized.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from ._errors import InvalidArgumentError

__all__ = ["DedupWindow", "content_key"]

DedupKey = tuple[str, int]


def content_key(payload: bytes, msg_id: str, parsed: Callable[[], Any]) -> DedupKey:
    """The dedup key of an envelope whose id is ``msg_id``: ``(id, hash of all but its ts)``.

    Envelopes laid out as tars-core and the original client write them (``ts`` a number before
    ``data``) take the fast path: the ``ts`` value is cut out of the bytes and the rest hashed,
    with no parse. Anything else is parsed (``parsed()``, the caller's cached parse) and its
    fields but ``ts`` hashed in a canonical order. A redelivery is byte-identical, so it takes
    the same path and gets the same key.
    """
    at = payload.find(b'"ts":')
    if at > 0:
        start = at + 5
        end = payload.find(b",", start)
        if (
            end > start
            and payload.find(b'"', start, end) < 0  # a bare number, not a string
            and payload.find(b'"data":', 0, at) < 0  # the envelope's ts, not one inside data
        ):
            return msg_id, hash(payload[:start] + payload[end:])
    obj = parsed()
    rest = {k: v for k, v in obj.items() if k != "ts"} if isinstance(obj, dict) else obj
    return msg_id, hash(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS))


class DedupWindow:
    """Remembers keys for ``ttl`` seconds, never more than ``max_entries`` of them.

    Pure: the caller passes ``now`` (from a monotonic clock). Keys live in two generations of
    plain dicts. New keys go into the current one; when it holds ``max_entries // 2`` keys, or
    its first key is ``ttl`` old, the previous generation is dropped whole and the current one
    takes its place. Nothing is ever deleted one key at a time: a dict that has keys inserted
    and deleted one by one (an ``OrderedDict`` used as a FIFO) leaves its deleted slots behind
    and, when it compacts, sizes itself for three times its live keys; measured, that grew a
    service's memory by 17 MB between its 100,000th and 1,000,000th message, where two
    generations grow it by nothing.

    What it promises: a key recorded less than ``ttl`` before ``now`` is a duplicate, unless it
    was pushed out by more than the newest ``max_entries // 2`` keys (at least 1) recorded after
    it; at most ``max_entries`` keys are held; under a steady stream it holds between one and
    two ``ttl`` of keys. A key seen again within the window is not refreshed: the window measures
    time since the first delivery, so a key cannot be kept alive forever by redeliveries.
    O(1) per call.
    """

    __slots__ = (
        "_current",
        "_current_start",
        "_generation_size",
        "_last",
        "_max_entries",
        "_previous",
        "_previous_last",
        "_ttl",
    )

    def __init__(self, ttl: float, max_entries: int) -> None:
        """Create an empty window.

        Raises:
            InvalidArgumentError: ``ttl`` is not positive or ``max_entries`` is below 1.
        """
        if not (math.isfinite(ttl) and ttl > 0):
            raise InvalidArgumentError(f"ttl must be a finite number > 0 seconds, got {ttl!r}")
        if max_entries < 1:
            raise InvalidArgumentError(f"max_entries must be >= 1, got {max_entries!r}")
        self._ttl = ttl
        self._max_entries = max_entries
        # With max_entries == 1 there is room for one generation of one key only.
        self._generation_size = max(1, max_entries // 2)
        self._current: dict[Hashable, float] = {}
        self._previous: dict[Hashable, float] = {}
        self._current_start = math.inf  # when the current generation got its first key
        self._last = -math.inf  # when the newest key was recorded
        self._previous_last = -math.inf  # when the previous generation got its newest key

    @property
    def ttl(self) -> float:
        """How long (seconds) a key is remembered after it was first recorded."""
        return self._ttl

    def seen(self, key: Hashable, now: float) -> bool:
        """Return True if ``key`` was recorded less than ``ttl`` before ``now``, else record it."""
        recorded = self._current.get(key)
        if recorded is None:
            recorded = self._previous.get(key)
        ttl = self._ttl
        if recorded is not None and now - recorded < ttl:
            return True
        current = self._current
        if (
            len(current) >= self._generation_size
            or now - self._current_start >= ttl
            or now - self._last >= ttl
        ):
            current = self._rotate(now)
        elif self._previous and now - self._previous_last >= ttl:
            self._previous = {}  # every key in it has expired
        if not current:
            self._current_start = now
        current[key] = now  # an expired key is overwritten in place: no delete, no growth
        self._last = now
        return False

    def _rotate(self, now: float) -> dict[Hashable, float]:
        """Drop the previous generation; the current one becomes previous (or goes too)."""
        keep = (
            self._max_entries > 1
            and now - self._last < self._ttl  # else every key in it has expired
        )
        self._previous = self._current if keep else {}
        self._previous_last = self._last
        self._current = {}
        self._current_start = math.inf
        return self._current

    def clear(self) -> None:
        """Forget every key."""
        self._current = {}
        self._previous = {}
        self._current_start = math.inf
        self._last = self._previous_last = -math.inf

    def __len__(self) -> int:
        """How many keys are held (an expired key may be counted until its generation goes)."""
        return len(self._current) + len(self._previous)

    def __repr__(self) -> str:
        return (
            f"DedupWindow(ttl={self._ttl!r}, max_entries={self._max_entries!r}, size={len(self)})"
        )
