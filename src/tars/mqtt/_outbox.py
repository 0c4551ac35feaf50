"""The outbox: publishes made while the link is down, kept in order until it is up again.

Pure and synchronous (the time is passed in). Bounded by message count and by bytes; an
optional per-message TTL; a policy for when it is full:

- ``drop_oldest`` (default): make room by dropping the oldest queued message;
- ``drop_newest``: refuse the new message (it is dropped, counted, and its waiter failed);
- ``block``: the caller waits for room (:meth:`Outbox.has_room`, the client does the waiting);
- ``raise``: :class:`~tars.mqtt.OutboxFullError`.

A dropped or expired QoS 1/2 message fails its waiter, so ``await publish(...)`` never hangs on
a message that will not be sent. What exactly can be lost is listed in ``docs/resilience.md``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import InvalidArgumentError, OutboxFullError

__all__ = ["Outbox", "OutboxItem", "OutboxPolicy"]

OutboxPolicy = Literal["drop_oldest", "drop_newest", "block", "raise"]


@dataclass(slots=True, eq=False)
class OutboxItem:
    """One publish waiting for a link."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] | None
    future: asyncio.Future[int] | None  # the caller's ack waiter, if it waits
    expires_at: float | None


class Outbox:
    """A bounded FIFO of :class:`OutboxItem`."""

    def __init__(
        self,
        *,
        max_messages: int,
        max_bytes: int,
        ttl: float | None = None,
        policy: OutboxPolicy = "drop_oldest",
    ) -> None:
        if max_messages < 0 or max_bytes < 0:
            raise InvalidArgumentError("outbox limits must be >= 0")
        if ttl is not None and ttl <= 0:
            raise InvalidArgumentError("outbox ttl must be > 0")
        if policy not in ("drop_oldest", "drop_newest", "block", "raise"):
            raise InvalidArgumentError(f"unknown outbox policy {policy!r}")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.policy: OutboxPolicy = policy
        self._items: deque[OutboxItem] = deque()
        self._bytes = 0
        self.dropped = 0  # dropped by the policy or for being too large
        self.expired = 0  # older than the TTL when the link came back

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """Payload bytes queued."""
        return self._bytes

    def has_room(self, size: int) -> bool:
        """Whether a message of ``size`` payload bytes fits without dropping anything."""
        return len(self._items) < self.max_messages and self._bytes + size <= self.max_bytes

    def put(self, item: OutboxItem) -> list[OutboxItem]:
        """Queue ``item``; return the items dropped to make room (or ``[item]`` if refused).

        Raises :class:`~tars.mqtt.OutboxFullError` with the ``raise`` policy. With ``block``
        the caller must wait for :meth:`has_room` first; a message larger than the whole outbox
        is refused whatever the policy.
        """
        size = len(item.payload)
        if self.max_messages == 0 or size > self.max_bytes:
            self.dropped += 1
            return [item]
        if self.has_room(size):
            self._append(item)
            return []
        if self.policy == "raise":
            raise OutboxFullError(
                f"outbox full ({len(self._items)} messages, {self._bytes} bytes) "
                f"while disconnected; message for {item.topic!r} refused"
            )
        if self.policy in ("drop_newest", "block"):
            self.dropped += 1
            return [item]
        dropped: list[OutboxItem] = []
        while self._items and not self.has_room(size):
            old = self._items.popleft()
            self._bytes -= len(old.payload)
            dropped.append(old)
        self.dropped += len(dropped)
        self._append(item)
        return dropped

    def take_all(self, now: float) -> tuple[list[OutboxItem], list[OutboxItem]]:
        """Empty the outbox: (items to send in order, items expired by the TTL)."""
        ready: list[OutboxItem] = []
        expired: list[OutboxItem] = []
        for item in self._items:
            if item.expires_at is not None and item.expires_at <= now:
                expired.append(item)
            else:
                ready.append(item)
        self._items.clear()
        self._bytes = 0
        self.expired += len(expired)
        return ready, expired

    def _append(self, item: OutboxItem) -> None:
        self._items.append(item)
        self._bytes += len(item.payload)
