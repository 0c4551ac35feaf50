"""What the session needs from a durable outbox, and the adapter over the SQLite store.

The session stays sans-I/O in spirit: it is handed a :class:`Journal` (three calls and a close)
and never knows about files. Unit tests give it an in-memory fake; the client gives it a
:class:`DurableJournal` over :class:`~.durable.DurableOutbox` when ``outbox_path`` is set.

**This does synchronous disk I/O inside the session's calls**, by design and only where the
durability promise needs it: :meth:`Journal.append` (one fsynced SQLite commit, about a
millisecond on an SD card, see ``docs/resilience.md``) runs for each QoS 1/2 publish accepted
while no link is up, so that ``publish()`` returns only once the event survives a power cut.
Publishes made on a live link are not journaled (the broker holds them a round trip later), so
the common path does no disk I/O at all; :meth:`Journal.remove` of an acknowledged record is
batched by the store and costs no fsync of its own.

Clocks: the session dates offline records with its monotonic clock (asyncio's ``loop.time()``,
which is :func:`time.monotonic`); the file keeps wall-clock deadlines, which survive a restart.
The adapter converts both ways.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .durable import DurableOutbox, Synchronous
from .outgoing import Journal, Outgoing

__all__ = ["DurableJournal", "Journal"]


class DurableJournal:
    """:class:`Journal` over one :class:`~.durable.DurableOutbox` file.

    The store is opened without limits of its own: the session's outbox limits and policy
    decide what is accepted (one policy, not two), and the file holds at most those records
    plus the ones in flight.

    Raises:
        ConfigError: ``field="outbox_path"``: the file cannot be opened, is not an outbox, or
            is in use by another process (two clients with one client id).
    """

    def __init__(self, path: Path, *, synchronous: Synchronous = "FULL") -> None:
        self._box = DurableOutbox(
            path, max_messages=sys.maxsize, max_bytes=sys.maxsize, synchronous=synchronous
        )

    def __repr__(self) -> str:
        return f"<DurableJournal {self._box!r}>"

    def __len__(self) -> int:
        return len(self._box)

    def append(self, item: Outgoing) -> int:
        expires_at = None
        if item.expires_at is not None:
            expires_at = time.time() + (item.expires_at - time.monotonic())
        seq = self._box.append(
            item.topic,
            item.payload,
            item.qos,
            item.retain,
            item.properties,
            expires_at=expires_at,
        ).seq
        assert seq is not None  # no limits: never refused
        return seq

    def remove(self, seq: int) -> None:
        box = self._box
        box.remove(seq)
        if not len(box):  # nothing owed any more: commit, so a crash now resends nothing
            box.flush()

    def load(self) -> Iterator[Outgoing]:
        offset = time.monotonic() - time.time()
        for rec in self._box.load():
            expires_at = None if rec.expires_at is None else rec.expires_at + offset
            item = Outgoing(rec.topic, rec.payload, rec.qos, rec.retain, rec.properties, None)
            item.seq = rec.seq
            item.expires_at = expires_at
            yield item

    @property
    def unreadable(self) -> int:
        return self._box.unreadable

    def close(self) -> None:
        self._box.close()
