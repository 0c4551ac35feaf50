"""Fault test: 50 clients lose the broker at once and do not come back in lockstep (issue 4, 5).

Each client has the default jitter with a seeded generator (``ExponentialBackoff(rng=
random.Random(i))``), so the planned delays are known; what is measured is when each client
really reconnected after ``kill -9``. A loaded machine can only make a reconnection late, never
early, so the test asserts each one waited at least its planned delay, and that the reconnection
times are spread (a standard deviation and a range), never a wall-clock deadline.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Awaitable, Callable

import pytest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ExponentialBackoff, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

CLIENTS = 50
# Longer than the default first delay (0.5 s) so that the spread the jitter makes (half the
# delay) dwarfs how long 50 connections take on a busy 2-core machine.
MIN_DELAY = 2.0


class TimedBackoff:
    """ExponentialBackoff with a seeded generator, remembering when it was asked and what it
    answered (the answers are the policy's own)."""

    def __init__(self, seed: int) -> None:
        self.inner = ExponentialBackoff(min_delay=MIN_DELAY, max_delay=4.0, rng=random.Random(seed))
        self.asked: list[tuple[float, float | None]] = []

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        delay = self.inner.next_delay(attempt, refused=refused)
        self.asked.append((asyncio.get_running_loop().time(), delay))
        return delay


async def test_fifty_clients_spread_their_reconnections(mosquitto_broker: MosquittoBroker) -> None:
    loop = asyncio.get_running_loop()
    policies = [TimedBackoff(seed) for seed in range(CLIENTS)]
    clients = [
        MQTTClient(mosquitto_broker.url, unique(f"herd{i}"), backoff=policy)
        for i, policy in enumerate(policies)
    ]
    reconnected: list[float | None] = [None] * CLIENTS
    back: Inbox[int] = Inbox()

    def hook(i: int) -> Callable[[], Awaitable[None]]:
        async def on_connect() -> None:
            if clients[i].stats.connects == 2:
                reconnected[i] = loop.time()
                back.add(i)

        return on_connect

    for i, client in enumerate(clients):
        client.on_connect(hook(i))
    await asyncio.gather(*(client.connect() for client in clients))
    try:
        await mosquitto_broker.arestart(kill=True)
        await back.wait_for(CLIENTS, timeout=4.0 + 5.0)
    finally:
        await asyncio.gather(*(client.shutdown() for client in clients))

    lost_at = [policy.asked[0][0] for policy in policies]
    planned = [policy.asked[0][1] for policy in policies]
    assert all(delay is not None for delay in planned)
    waited = [r - t for r, t in zip(reconnected, lost_at, strict=True) if r is not None]
    offsets = [r - min(lost_at) for r in reconnected if r is not None]
    spread, span = statistics.stdev(offsets), max(offsets) - min(offsets)
    print(
        f"\n[{CLIENTS} clients] all lost the link within {max(lost_at) - min(lost_at):.3f} s; "
        f"reconnections spread over {span:.3f} s (stdev {spread:.3f} s)"
    )
    # Every client lost the link at (nearly) the same moment...
    assert max(lost_at) - min(lost_at) < MIN_DELAY / 4
    # ...and waited at least its own jittered delay before coming back...
    assert all(w >= d - 0.01 for w, d in zip(waited, planned, strict=True) if d is not None)
    # ...so the herd is spread out. Jitter 0.5 spreads the first delay uniformly over
    # [MIN_DELAY / 2, MIN_DELAY]: a stdev near 0.29 s. Without jitter it would be the few
    # milliseconds 50 connections take.
    assert spread > 0.15
    assert span > MIN_DELAY / 4
