"""What the counters of ``stats`` cannot say: how long handlers take, and how publishes end.

:class:`ClientMetrics` is an :class:`~tars.mqtt.Instrument` that keeps, per subscription filter,
a histogram of handler durations and a count of calls by outcome, and counts publishes by QoS
and outcome. Plain numbers in plain containers, with no metrics library: an exporter reads them
when it is scraped (:mod:`tars.mqtt.prometheus` does). Scrapes may come from another thread
(``prometheus_client.start_http_server``): readers take copies (:meth:`snapshot`), and each
update is a single store under the GIL.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

from ._instrument import HandlerCall, Instrument, Outcome, OutgoingPublish

__all__ = ["DEFAULT_BUCKETS", "ClientMetrics", "Histogram", "MetricsSnapshot"]

# Seconds. From half a millisecond (a handler that only queues work) to ten seconds (past any
# sensible handler_timeout): the same span as Prometheus' own default buckets, a bit finer low.
DEFAULT_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Counts of observations at or below each bound (plus one for "above all"), and the sum."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if not bounds or any(b >= c for b, c in pairwise(bounds)):
            raise ValueError(f"histogram bounds must be increasing and not empty: {bounds!r}")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (a bucket's bound is inclusive, as in Prometheus)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)``, ending with ``(inf, count)``."""
        total = 0
        out: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += count
            out.append((bound, total))
        return out


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A copy of :class:`ClientMetrics`' numbers, safe to read in another thread."""

    handler_seconds: dict[str, tuple[list[tuple[float, int]], float]]  # filter -> buckets, sum
    handler_calls: dict[tuple[str, Outcome], int]  # (filter, outcome) -> calls
    publishes: dict[tuple[int, str], int]  # (qos, "ok" or the error's class name) -> calls


class ClientMetrics(Instrument):
    """Handler durations per filter, handler calls per filter and outcome, publishes per QoS
    and outcome. Add it with ``client.add_instrument(ClientMetrics())``."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        Histogram(buckets)  # checks the bounds now, not at the first handler call
        self._buckets = tuple(buckets)
        self._handler_seconds: dict[str, Histogram] = {}
        self._handler_calls: dict[tuple[str, Outcome], int] = {}
        self._publishes: dict[tuple[int, str], int] = {}

    def handler_finished(self, call: HandlerCall, state: Any) -> None:
        """Count the call and, when the handler ran, observe its duration."""
        topic_filter = call.subscription.topic_filter
        outcome = call.outcome or "cancelled"
        key = (topic_filter, outcome)
        self._handler_calls[key] = self._handler_calls.get(key, 0) + 1
        if outcome == "invalid":
            return  # the handler was not called: no duration to speak of
        histogram = self._handler_seconds.get(topic_filter)
        if histogram is None:
            histogram = self._handler_seconds[topic_filter] = Histogram(self._buckets)
        histogram.observe(call.duration)

    def publish_finished(
        self, publish: OutgoingPublish, state: Any, error: BaseException | None
    ) -> None:
        """Count the publish by QoS and outcome (``ok`` or the error's class name)."""
        key = (publish.qos, "ok" if error is None else type(error).__name__)
        self._publishes[key] = self._publishes.get(key, 0) + 1

    def snapshot(self) -> MetricsSnapshot:
        """Copies of every number (taken under the GIL: a scrape thread may call this)."""
        return MetricsSnapshot(
            handler_seconds={
                topic_filter: (histogram.cumulative(), histogram.sum)
                for topic_filter, histogram in list(self._handler_seconds.items())
            },
            handler_calls=dict(self._handler_calls),
            publishes=dict(self._publishes),
        )
