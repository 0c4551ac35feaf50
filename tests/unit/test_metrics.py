"""The handler-time histogram and the call counts of ``ClientMetrics`` (no broker, no clock)."""

from __future__ import annotations

import math

import pytest
from mqtt5 import PublishPacket

from tars.mqtt import HandlerCall, Message, OutgoingPublish, Subscription
from tars.mqtt._metrics import ClientMetrics, Histogram


async def _handler(payload: bytes) -> None:
    return None


def _call(topic_filter: str, outcome: str, duration: float) -> HandlerCall:
    sub = Subscription(
        topic_filter,
        _handler,
        qos=0,
        queue_size=1,
        overflow="block",
        concurrency=1,
        timeout=None,
        dedup=None,
        pause=lambda: None,
        resume=lambda: None,
    )
    msg = Message(PublishPacket("a/b", b"{}"))
    return HandlerCall("c", sub, msg, outcome, duration)  # type: ignore[arg-type]


def test_a_bucket_counts_what_is_at_or_below_its_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert histogram.sum == pytest.approx(4.65)
    assert histogram.count == 5


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        ClientMetrics(bounds)


def test_handler_calls_are_counted_per_filter_and_outcome() -> None:
    metrics = ClientMetrics((0.01, 0.1))
    for topic_filter, outcome, duration in [
        ("a/#", "handled", 0.005),
        ("a/#", "failed", 0.05),
        ("a/#", "handled", 0.5),
        ("b/+", "timed_out", 0.2),
        ("b/+", "invalid", 0.0),
    ]:
        metrics.handler_finished(_call(topic_filter, outcome, duration), None)
    snap = metrics.snapshot()
    assert snap.handler_calls == {
        ("a/#", "handled"): 2,
        ("a/#", "failed"): 1,
        ("b/+", "timed_out"): 1,
        ("b/+", "invalid"): 1,
    }
    buckets, total = snap.handler_seconds["a/#"]
    assert buckets == [(0.01, 1), (0.1, 2), (math.inf, 3)]
    assert total == pytest.approx(0.555)
    assert snap.handler_seconds["b/+"][0][-1] == (math.inf, 1)  # "invalid" ran no handler


def test_publishes_are_counted_per_qos_and_outcome() -> None:
    metrics = ClientMetrics()
    publish = OutgoingPublish("c", "a/b", b"x", 1, False, [])
    metrics.publish_finished(publish, None, None)
    metrics.publish_finished(publish, None, None)
    metrics.publish_finished(publish, None, TimeoutError())
    assert metrics.snapshot().publishes == {(1, "ok"): 2, (1, "TimeoutError"): 1}
