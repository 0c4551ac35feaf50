"""The subscription table: what the client wants subscribed, and what the broker holds.

Pure. One entry per MQTT topic filter (however many handlers share it): the highest QoS asked,
a stable subscription identifier, and whether the broker's session is known to hold it. The
session (:mod:`.session`) asks the table what to send when a filter is added or removed on a
live link, and for the restore plan when a new link comes up:

- a fresh broker session (or our first link) gets every filter again;
- a resumed broker session already has what it held: it gets only the filters added (or raised
  in QoS) while no link was up, and an UNSUBSCRIBE for those removed meanwhile.

Internal topics (the heartbeat echo, request/response answers) are always restored: they are
cheap, exact topics at QoS 0, and a stale one would silently break the watchdog or
``request()``.

Identifiers are derived from the filter (a checksum), not counted 1, 2, 3: what a persistent
session queued while the service was away carries the identifiers the previous process chose,
so every process must choose the same ones whatever its subscription order.
"""

from __future__ import annotations

import zlib
from typing import Final

from .._record import Frozen, Record, _set

__all__ = ["FilterEntry", "RestorePlan", "SubscriptionTable"]

_MAX_SUBSCRIPTION_ID: Final = 268_435_455  # MQTT 5: a Variable Byte Integer, 1 .. 2**28 - 1


class FilterEntry(Record):
    """One filter the client wants: handlers per QoS, its identifier, the broker's copy."""

    __slots__ = ("broker_qos", "counts", "sid", "strikes")
    sid: int
    counts: list[int]  # subscriptions per QoS
    broker_qos: int | None  # the QoS the broker holds it at, as far as we know
    strikes: int  # links in a row the broker ended with this filter's SUBSCRIBE unanswered

    def __init__(
        self,
        sid: int,
        counts: list[int] | None = None,
        broker_qos: int | None = None,
        strikes: int = 0,
    ) -> None:
        self.sid = sid
        self.counts = [0, 0, 0] if counts is None else counts
        self.broker_qos = broker_qos
        self.strikes = strikes

    @property
    def qos(self) -> int:
        """The highest QoS any of its subscriptions asks."""
        counts = self.counts
        return 2 if counts[2] else 1 if counts[1] else 0

    @property
    def empty(self) -> bool:
        return not any(self.counts)


class RestorePlan(Frozen):
    """What a new link must send: SUBSCRIBE per (filter, qos, sid), internal topics, and one
    UNSUBSCRIBE for the filters a resumed session still holds but nobody wants."""

    __slots__ = ("internal", "subscribe", "unsubscribe")
    subscribe: tuple[tuple[str, int, int], ...]
    internal: tuple[tuple[str, int], ...]
    unsubscribe: tuple[str, ...]

    def __init__(
        self,
        subscribe: tuple[tuple[str, int, int], ...],
        internal: tuple[tuple[str, int], ...],
        unsubscribe: tuple[str, ...],
    ) -> None:
        _set(self, "subscribe", subscribe)
        _set(self, "internal", internal)
        _set(self, "unsubscribe", unsubscribe)


class SubscriptionTable:
    """Filters and internal topics with their identifiers (see the module docstring)."""

    def __init__(self) -> None:
        self.filters: dict[str, FilterEntry] = {}
        self.internal: dict[str, int] = {}
        self._ids: set[int] = set()
        # Removed while the broker may still hold them (no link, or not answered yet).
        self._stale: set[str] = set()

    def __repr__(self) -> str:
        return f"<SubscriptionTable filters={len(self.filters)} internal={len(self.internal)}>"

    def sid(self, topic_filter: str) -> int | None:
        """The identifier of a user filter or internal topic, if it has one."""
        entry = self.filters.get(topic_filter)
        if entry is not None:
            return entry.sid
        return self.internal.get(topic_filter)

    def add(self, topic_filter: str, qos: int) -> tuple[int, bool]:
        """One more subscription on ``topic_filter`` at ``qos``.

        Returns ``(sid, send)``: the filter's identifier, and whether the broker must be sent a
        SUBSCRIBE (the filter is new to it, or asks a higher QoS than it holds).
        """
        entry = self.filters.get(topic_filter)
        if entry is None:
            entry = self.filters[topic_filter] = FilterEntry(self._new_id(topic_filter))
        entry.counts[qos] += 1
        self._stale.discard(topic_filter)
        held = entry.broker_qos
        return entry.sid, held is None or qos > held

    def remove(self, topic_filter: str, qos: int) -> bool:
        """One subscription fewer; True when the filter has none left (UNSUBSCRIBE it)."""
        entry = self.filters.get(topic_filter)
        if entry is None or entry.counts[qos] == 0:
            return False
        entry.counts[qos] -= 1
        if not entry.empty:
            return False
        del self.filters[topic_filter]
        self._ids.discard(entry.sid)
        if entry.broker_qos is not None:
            self._stale.add(topic_filter)
        return True

    def confirmed(self, topic_filter: str, granted: int) -> None:
        """The broker granted ``topic_filter`` (SUBACK reason code < 0x80 is the QoS)."""
        entry = self.filters.get(topic_filter)
        if entry is not None:
            entry.broker_qos = max(granted, entry.broker_qos or 0)
            entry.strikes = 0

    def refused(self, topic_filter: str) -> None:
        """The broker refused it: it holds nothing for this filter (a later add retries)."""
        entry = self.filters.get(topic_filter)
        if entry is not None:
            entry.broker_qos = None

    def unsubscribed(self, topic_filter: str) -> None:
        """The broker answered our UNSUBSCRIBE: it holds the filter no more."""
        self._stale.discard(topic_filter)

    def strike(self, topic_filter: str, limit: int) -> bool:
        """The poison-message breaker: the broker ended a link while ``topic_filter``'s
        SUBSCRIBE was its oldest unanswered one. At ``limit`` strikes in a row (a SUBACK resets
        them) the filter leaves the table, so no restore sends it again; returns True then."""
        entry = self.filters.get(topic_filter)
        if entry is None:
            return False
        entry.strikes += 1
        if entry.strikes < limit:
            return False
        del self.filters[topic_filter]
        self._ids.discard(entry.sid)
        return True

    def add_internal(self, topic: str) -> tuple[int, bool]:
        """An internal consumer's topic; returns ``(sid, new)``."""
        sid = self.internal.get(topic)
        if sid is not None:
            return sid, False
        sid = self.internal[topic] = self._new_id(topic)
        return sid, True

    def forget_broker(self) -> None:
        """The broker holds nothing of ours (a fresh session)."""
        for entry in self.filters.values():
            entry.broker_qos = None
        self._stale.clear()

    def restore_plan(self, *, fresh: bool) -> RestorePlan:
        """What a new link sends (see the module docstring); ``fresh``: the broker has nothing."""
        if fresh:
            self.forget_broker()
        subscribe = tuple(
            (f, e.qos, e.sid)
            for f, e in self.filters.items()
            if e.broker_qos is None or e.qos > e.broker_qos
        )
        internal = tuple(self.internal.items())
        gone = tuple(sorted(self._stale))
        return RestorePlan(subscribe, internal, gone)

    def _new_id(self, topic_filter: str) -> int:
        sid = zlib.crc32(topic_filter.encode()) % _MAX_SUBSCRIPTION_ID + 1
        while sid in self._ids:  # a collision within one client: the next free identifier
            sid = sid % _MAX_SUBSCRIPTION_ID + 1
        self._ids.add(sid)
        return sid
