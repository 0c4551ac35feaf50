"""The measured cases: what is timed, and how, identically for every client.

Every case runs both ends in one process on two connections to the same broker, so CPU time
(``getrusage(RUSAGE_SELF)``, user + system, every thread) covers publishing *and* receiving.

Throughput cases time from the first publish to the N-th message received. Pipelined cases
publish with ``wait=False``; sequential cases await each publish's completion (for gmqtt, which
has none, a QoS 1 publish counts as complete when the subscriber has received it). In every
case the publisher never runs more than ``window`` messages ahead of the subscriber: without it
a fire-and-forget client fills the broker's queues (and gmqtt its packet ids) instead of
measuring a steady state.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bench.adapters import Adapter, Event
from bench.payloads import large_event, payload_size, small_event

__all__ = ["CASES", "Case", "CaseFailed", "Metrics", "run_case"]

Metrics = dict[str, float]
Kind = Literal["throughput", "rtt", "rss"]

TOPIC = "bench/t"
REQ_TOPIC = "bench/req"
RESP_TOPIC = "bench/resp"


@dataclass(frozen=True, slots=True)
class Case:
    """One measured scenario, with its message counts for a full and a quick run."""

    name: str
    title: str
    kind: Kind
    qos: int
    pipelined: bool = True
    large: bool = False
    n: int = 50_000
    quick_n: int = 300
    budget_ms: float = 3.0
    """Time allowed per message (on top of a fixed minute) before a run counts as failed."""
    max_repeat: int | None = None
    """Cap on repeats: a long run whose figure does not vary much is run fewer times."""


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("qos0_pipelined", "Throughput, QoS 0, pipelined", "throughput", 0, n=100_000),
        Case("qos1_pipelined", "Throughput, QoS 1, pipelined", "throughput", 1),
        Case("qos0_sequential", "Throughput, QoS 0, sequential", "throughput", 0, False),
        Case(
            "qos1_sequential",
            "Throughput, QoS 1, sequential",
            "throughput",
            1,
            False,
            n=10_000,
            quick_n=200,
        ),
        Case(
            "rtt_qos0",
            "Request/response round trip, QoS 0",
            "rtt",
            0,
            False,
            n=2_000,
            quick_n=20,
            budget_ms=250.0,
        ),
        Case(
            "rtt_qos1",
            "Request/response round trip, QoS 1",
            "rtt",
            1,
            False,
            n=2_000,
            quick_n=20,
            budget_ms=250.0,
        ),
        Case(
            "rss",
            "Memory after N messages through a QoS 1 subscription",
            "rss",
            1,
            n=1_000_000,
            quick_n=1_000,
            max_repeat=1,
        ),
        Case(
            "large_qos0",
            "64 KiB payloads, QoS 0, pipelined",
            "throughput",
            0,
            large=True,
            n=2_000,
            quick_n=50,
            budget_ms=20.0,
        ),
    )
}


class CaseFailed(Exception):
    """The client could not complete the case; the message says how far it got."""


class Progress:
    """Counts received messages and wakes whoever waits for a given count.

    ``stage``, ``base`` and ``total`` only serve the message of a run that times out.
    ``deadline`` (event-loop time) is checked by the publishing loops too: Python 3.11's
    ``asyncio.wait_for`` (used inside aiomqtt) can swallow the cancellation that
    ``asyncio.timeout`` relies on.
    """

    def __init__(self) -> None:
        self.count = 0
        self.stage = "connecting"
        self.base = 0
        self.total = 0
        self.deadline = math.inf

    def check_deadline(self) -> None:
        if asyncio.get_running_loop().time() > self.deadline:
            raise TimeoutError
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def tick(self) -> None:
        self.count += 1
        while self._waiters and self._waiters[0][0] <= self.count:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)

    async def reached(self, count: int) -> None:
        if self.count >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (count, next(self._order), waiter))
        await waiter


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


async def _pump(
    pub: Adapter,
    progress: Progress,
    case: Case,
    make: Callable[[int], Event],
    first: int,
    count: int,
    window: int,
) -> None:
    """Publish messages ``first .. first+count-1`` the way ``case`` says."""
    qos = case.qos
    by_receipt = qos > 0 and not case.pipelined and not pub.has_completion
    for seq in range(first, first + count):
        progress.check_deadline()
        if seq - progress.count >= window:
            await progress.reached(seq - window // 2)
        await pub.publish(TOPIC, make(seq), qos, wait=not case.pipelined)
        if by_receipt:
            await progress.reached(seq + 1)


async def _close(*adapters: Adapter) -> None:
    for adapter in adapters:
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(10):
                await adapter.close()


async def _throughput(
    case: Case,
    factory: type[Adapter],
    host: str,
    port: int,
    n: int,
    checkpoint: int,
    progress: Progress,
) -> Metrics:
    sub, pub = factory(), factory()
    pid = os.getpid()
    marks: dict[str, float] = {}
    make = large_event if case.large else small_event
    window = 64 if case.large else 1_000
    warm = min(200, max(10, n // 10))
    mark_at = warm + checkpoint if checkpoint else -1

    def on_message(event: Event) -> None:
        progress.tick()
        if progress.count == mark_at:
            marks["peak"], marks["now"] = peak_rss_mb(), current_rss_mb()

    try:
        await sub.connect(host, port, f"bench-sub-{pid}")
        await pub.connect(host, port, f"bench-pub-{pid}")
        await sub.subscribe(TOPIC, case.qos, on_message)
        progress.stage = "warming up"
        await _pump(pub, progress, case, make, 0, warm, window)
        await progress.reached(warm)
        progress.stage, progress.base, progress.total = "measuring", warm, n
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        await _pump(pub, progress, case, make, warm, n, window)
        await progress.reached(warm + n)
        elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        metrics: Metrics = {
            "msgs_per_s": n / elapsed,
            "cpu_us_per_msg": cpu / n * 1e6,
            "elapsed_s": elapsed,
        }
        if case.large:
            metrics["mb_per_s"] = metrics["msgs_per_s"] * payload_size(make(n)) / 1e6
        if checkpoint:
            metrics["rss_peak_mb_checkpoint"] = marks["peak"]
            metrics["rss_mb_checkpoint"] = marks["now"]
            metrics["rss_peak_mb_end"] = peak_rss_mb()
            metrics["rss_mb_end"] = current_rss_mb()
            metrics["rss_growth_mb"] = metrics["rss_peak_mb_end"] - marks["peak"]
        await pub.flush()
        return metrics
    finally:
        await _close(pub, sub)


async def _rtt(
    case: Case, factory: type[Adapter], host: str, port: int, n: int, progress: Progress
) -> Metrics:
    requester, responder = factory(), factory()
    pid = os.getpid()
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[Event] = asyncio.Queue()
    pending: dict[int, asyncio.Future[None]] = {}
    qos = case.qos

    def on_response(event: Event) -> None:
        waiter = pending.pop(event["seq"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def echo() -> None:
        while True:
            event = await requests.get()
            await responder.publish(RESP_TOPIC, event, qos, wait=True)

    echo_task: asyncio.Task[None] | None = None
    warm = min(50, max(5, n // 10))
    samples: list[float] = []
    try:
        await responder.connect(host, port, f"bench-responder-{pid}")
        await requester.connect(host, port, f"bench-requester-{pid}")
        await responder.subscribe(REQ_TOPIC, qos, requests.put_nowait)
        await requester.subscribe(RESP_TOPIC, qos, on_response)
        echo_task = asyncio.create_task(echo(), name="bench-echo")
        progress.stage, progress.base, progress.total = "exchanging", warm, n
        cpu0 = 0.0
        for seq in range(warm + n):
            progress.check_deadline()
            if seq == warm:
                cpu0 = _cpu_seconds()
            waiter = loop.create_future()
            pending[seq] = waiter
            t0 = time.perf_counter()
            await requester.publish(REQ_TOPIC, small_event(seq), qos, wait=True)
            await waiter
            progress.tick()
            if seq >= warm:
                samples.append((time.perf_counter() - t0) * 1e3)
        cpu = _cpu_seconds() - cpu0
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        return {
            "p50_ms": cuts[49],
            "p90_ms": cuts[89],
            "p99_ms": cuts[98],
            "mean_ms": statistics.fmean(samples),
            "cpu_us_per_exchange": cpu / n * 1e6,
        }
    finally:
        if echo_task is not None:
            echo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await echo_task
        await _close(requester, responder)


async def run_case(
    case: Case, factory: type[Adapter], host: str, port: int, n: int, timeout: float
) -> Metrics:
    """Run ``case`` with ``n`` measured messages; CaseFailed when it cannot finish in time."""
    progress = Progress()
    progress.deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout(timeout):
            if case.kind == "rtt":
                return await _rtt(case, factory, host, port, n, progress)
            checkpoint = max(1, n // 10) if case.kind == "rss" else 0
            return await _throughput(case, factory, host, port, n, checkpoint, progress)
    except TimeoutError:
        done = max(0, progress.count - progress.base)
        detail = f" ({done} of {progress.total})" if progress.total else ""
        raise CaseFailed(f"timed out after {timeout:g} s while {progress.stage}{detail}") from None
