"""A producer's bounded QoS 1 stream, paced so that faults injected mid-stream land mid-stream.

The failover tests publish thousands of numbered events (``{"n": 0}``, ``{"n": 1}``...) while
they kill broker nodes, at points given as event counts: :meth:`PacedStream.passed` is an event
set once that many events were handed to the client, and :meth:`PacedStream.hold_at` stops
the stream at a count until the test lets it go on (a broker node started again meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tars.mqtt import Message, MQTTClient

__all__ = ["PacedStream", "queue_backlog"]


class PacedStream:
    """``events`` QoS 1 events ``{"n": i}`` of type ``job`` on ``topic_of(i)``, published
    ``batch`` at a time (without waiting for their PUBACKs) with a ``pause`` between batches."""

    def __init__(
        self,
        producer: MQTTClient,
        topic_of: Callable[[int], str],
        *,
        events: int,
        batch: int,
        pause: float,
    ) -> None:
        self.producer = producer
        self.topic_of = topic_of
        self.events = events
        self.batch = batch
        self.pause = pause
        self.sent = 0
        self._marks: dict[int, asyncio.Event] = {}
        self._holds: dict[int, asyncio.Event] = {}

    def passed(self, count: int) -> asyncio.Event:
        """An event set once ``count`` events were published (call before :meth:`run`)."""
        return self._marks.setdefault(count, asyncio.Event())

    def hold_at(self, count: int) -> asyncio.Event:
        """An event the stream waits for once ``count`` events were published: it goes on when
        the test sets it (call before :meth:`run`)."""
        return self._holds.setdefault(count, asyncio.Event())

    async def run(self) -> None:
        while self.sent < self.events:
            for _ in range(min(self.batch, self.events - self.sent)):
                n = self.sent
                await self.producer.publish_event(
                    self.topic_of(n), "job", {"n": n}, qos=1, wait=False
                )
                self.sent += 1
            for count, mark in self._marks.items():
                if self.sent >= count:
                    mark.set()
            for count, hold in self._holds.items():
                if self.sent >= count:
                    await hold.wait()
            await asyncio.sleep(self.pause)  # traffic pacing, not a wait for an outcome


async def queue_backlog(url: str, client_id: str, topic: str, events: int) -> None:
    """Leave a persistent session ``client_id`` on the broker at ``url``, subscribed to
    ``topic`` at QoS 1, with ``events`` events queued for it while it is away (what a resumed
    session's backlog is made of)."""

    async def ignore(message: Message) -> None:
        pass

    first = MQTTClient(url, client_id, clean_start=False, session_expiry_interval=300)
    await first.subscribe(topic, ignore, qos=1)
    async with first:
        pass  # the session and its subscription stay on the broker
    producer = MQTTClient(url, f"{client_id}-producer")
    async with producer:
        await PacedStream(producer, lambda n: topic, events=events, batch=500, pause=0.0).run()
        await producer.flush(timeout=20)
