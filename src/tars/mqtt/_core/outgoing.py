"""Every outgoing publish the session still owes an outcome for, from the call to its end.

Pure and synchronous (the time is passed in). One :class:`Outgoing` record per publish lives
here from ``publish()`` until the broker's final ack, a refusal, or a documented drop: while it
waits for a link or for the broker's Receive Maximum (``pending``, in order), while it is on the
wire (``inflight``, by packet id), and after a link loss (``resend`` on a resumed session).

The outbox is not a second store: it is the part of ``pending`` that was queued while no link
was up. Those records carry ``offline=True`` and count against the outbox limits (messages,
bytes), may expire (TTL), and a full outbox applies its policy:

- ``drop_oldest`` (default): make room by dropping the oldest message queued offline;
- ``drop_newest``: refuse the new message (dropped, counted, its waiter failed);
- ``block``: the caller waits for room (:meth:`OutgoingStore.has_room`; the client waits);
- ``raise``: :class:`~tars.mqtt.OutboxFullError`.

Records that were already in flight or pending when the link dropped are not subject to the
outbox limits: they were accepted while connected and are resent as MQTT 5 requires.

With a :class:`~.journal.Journal` attached (``outbox_path``), each QoS 1/2 record queued
offline is also appended to it (its ``seq`` kept on the record) before :meth:`queue_offline`
returns, and removed from it by :meth:`forget` when it ends (acknowledged, refused, expired,
dropped by the policy). :meth:`attach` loads what an earlier process left, in order, ahead of
everything else. QoS 0 queued offline (``queue_qos0_offline``) is never journaled: it is
at-most-once by contract, and an fsync per message would be a disk write for messages the
caller already agreed to lose.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from .._checks import unsendable
from .._errors import InvalidArgumentError, OutboxFullError

__all__ = ["Journal", "OutboxPolicy", "Outgoing", "OutgoingStore"]

OutboxPolicy = Literal["drop_oldest", "drop_newest", "block", "raise"]

log = logging.getLogger("tars.mqtt")


class Outgoing:
    """One publish of ours, from the call until its outcome (compared by identity).

    A plain class with slots, not a dataclass: that would cost about 1 ms at import (issue 21).
    """

    __slots__ = (
        "bare_only",
        "expires_at",
        "handle",
        "offline",
        "order",
        "packet_id",
        "payload",
        "properties",
        "qos",
        "released",
        "retain",
        "seq",
        "strikes",
        "struck_at",
        "topic",
        "wire",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: dict[str, Any] | None,
        handle: object,  # given back in the PublishDone event (the asyncio layer's future)
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.handle = handle
        self.packet_id = 0
        self.wire: bytes | None = None  # the bytes as first sent, reused (with DUP) on resume
        self.released = False  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP
        self.offline = False  # queued while no link was up: counts against the outbox limits
        self.expires_at: float | None = None  # offline records only: not sendable after this
        self.seq: int | None = None  # its record in the journal (durable outbox), until it ends
        self.strikes = 0  # links the broker ended while this was its oldest unacked publish
        self.struck_at: float | None = None  # when it took the first strike of its run
        self.bare_only = True  # every strike of its run was a close without DISCONNECT
        self.order = 0  # when its PUBLISH last went on the wire, in the store's send order


class Journal(Protocol):
    """A crash-safe FIFO of the publishes accepted offline (see the module docstring)."""

    def append(self, item: Outgoing) -> int:
        """Store ``item``; durable when this returns. Returns its ``seq`` (grows, never reused).

        Raises :class:`~tars.mqtt.OutboxFullError` when the disk refuses the write (nothing
        stored).
        """
        ...

    def remove(self, seq: int) -> None:
        """Forget record ``seq`` (acknowledged, refused, expired or dropped by policy)."""
        ...

    def load(self) -> Iterator[Outgoing]:
        """The records left by an earlier process, oldest first, each with its ``seq`` set and
        ``handle`` None; read a page at a time. A record it cannot read back is not given: it
        removes it, logs it and counts it in :attr:`unreadable`."""
        ...

    @property
    def unreadable(self) -> int:
        """Records :meth:`load` could not read back (removed and logged)."""
        ...

    def close(self) -> None:
        """Commit what is pending and release the file. The records stay for the next start."""
        ...


class OutgoingStore:
    """The records, their order, and the outbox limits (see the module docstring)."""

    def __init__(
        self,
        *,
        max_messages: int = 10_000,
        max_bytes: int = 16 * 1024 * 1024,
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
        # On the wire, by packet id, in send order (dicts keep order).
        self.inflight: dict[int, Outgoing] = {}
        # Accepted, not yet sent (no quota left, or no link), in order.
        self.pending: deque[Outgoing] = deque()
        # In flight on an earlier link, to send again on this one before any pending record.
        self.resend: deque[Outgoing] = deque()
        self._offline_count = 0
        self._offline_bytes = 0
        self.dropped = 0  # dropped by the outbox policy or limits, or unsendable at attach
        self.expired = 0  # older than the TTL when a link came back
        self.journal: Journal | None = None  # the durable outbox, while attached
        # The poison-message breaker's evidence: PUBLISHes put on the wire so far (each one's
        # ``order``), and the latest-sent one the broker answered on the current link.
        self.sends = 0
        self.answered_upto = 0
        self._struck: Outgoing | None = None  # the last link's suspect, while its run lasts

    def attach(self, journal: Journal) -> int:
        """Keep offline QoS 1/2 records in ``journal`` too, and queue what an earlier process
        left in it (handles None), in order, before any record queued later. Those count in
        the outbox (they were accepted offline) but are never dropped to fit the limits here:
        their number is bounded by what the last process accepted. Returns how many.

        A record that no longer passes the checks of a publish (:func:`~.._checks.unsendable`:
        written by an earlier version with looser rules, or by hand) is not queued: sent, it
        would raise inside the link's callback, or make the broker end every link, on every
        start. It leaves the journal, is logged at WARNING and counts in :attr:`dropped`, as does
        a record the journal could not read back at all."""
        self.journal = journal
        loaded = 0
        valid_topics: dict[str, None] = {}  # one check per topic, as PublishCheck caches them
        unreadable = journal.unreadable  # a journal may be attached again: count this load's
        for item in journal.load():
            fault = unsendable(item.topic, item.qos, item.properties, valid_topics)
            if fault is not None:
                log.warning(
                    "durable outbox: record %s (a publish to %r) can no longer be sent and is "
                    "dropped: %s",
                    item.seq,
                    item.topic,
                    fault,
                )
                if item.seq is not None:
                    journal.remove(item.seq)
                self.dropped += 1
                continue
            item.offline = True
            self._offline_count += 1
            self._offline_bytes += len(item.payload)
            self.pending.append(item)
            loaded += 1
        self.dropped += journal.unreadable - unreadable
        return loaded

    def detach(self) -> None:
        """Close the journal (shutdown); its records stay in it for the next :meth:`attach`."""
        journal, self.journal = self.journal, None
        if journal is not None:
            journal.close()

    def forget(self, item: Outgoing) -> None:
        """``item`` has its outcome: remove its journal record, if it has one."""
        if item.seq is not None and self.journal is not None:
            self.journal.remove(item.seq)
        item.seq = None

    def __repr__(self) -> str:
        return (
            f"<OutgoingStore inflight={len(self.inflight)} pending={len(self.pending)} "
            f"offline={self._offline_count}>"
        )

    @property
    def unfinished(self) -> int:
        """Records still owed an outcome (in flight or pending)."""
        return len(self.inflight) + len(self.pending)

    @property
    def offline_count(self) -> int:
        """Records queued while no link was up and not sent yet (the outbox)."""
        return self._offline_count

    def has_room(self, size: int) -> bool:
        """Whether an offline message of ``size`` payload bytes fits without dropping anything."""
        return (
            self._offline_count < self.max_messages and self._offline_bytes + size <= self.max_bytes
        )

    def queue_offline(self, item: Outgoing, now: float) -> list[Outgoing]:
        """Queue ``item`` while no link is up; return the records dropped to make room (or
        ``[item]`` when it is refused).

        Raises :class:`~tars.mqtt.OutboxFullError` with the ``raise`` policy, or when the
        journal cannot write (nothing changed then). With ``block`` the caller must wait for
        :meth:`has_room` first; a message larger than the whole outbox is refused whatever the
        policy.
        """
        size = len(item.payload)
        if self.max_messages == 0 or size > self.max_bytes:
            self.dropped += 1
            return [item]
        full = not self.has_room(size)
        if full:
            if self.policy == "raise":
                raise OutboxFullError(
                    f"outbox full ({self._offline_count} messages, {self._offline_bytes} "
                    f"bytes) while disconnected; message for {item.topic!r} refused"
                )
            if self.policy in ("drop_newest", "block"):
                self.dropped += 1
                return [item]
        item.expires_at = now + self.ttl if self.ttl is not None else None
        if self.journal is not None and item.qos:
            item.seq = self.journal.append(item)  # before any drop: a failure changes nothing
        dropped = self._drop_oldest_offline(size) if full else []
        item.offline = True
        self._offline_count += 1
        self._offline_bytes += size
        self.pending.append(item)
        return dropped

    def suspect(self) -> Outgoing | None:
        """The oldest publish on the wire the broker has not acknowledged at all (not even a
        PUBREC), or None. A broker reads a link in order: when it ends the link on a packet of
        ours, this is the one it choked on (an earlier one would have been answered first).
        Records still waiting in ``resend`` were not sent on this link. None too when the
        broker answered a publish sent after it on this link: it read past it (RabbitMQ
        confirms out of order, and ends a publisher's link when a confirm fails)."""
        waiting = {id(item) for item in self.resend}
        for item in self.inflight.values():
            if not item.released and id(item) not in waiting:
                return item if item.order > self.answered_upto else None
        return None

    def strike(self, limit: int, now: float, *, bare: bool, span: float) -> Outgoing | None:
        """The poison-message breaker: the broker ended the link (``bare``: without any
        DISCONNECT); its :meth:`suspect` takes a strike. Strikes count links in a row: a link
        that ends on another suspect, or on none, starts the count again. At ``limit``
        strikes the record is given up (and, when every one of them was a bare close, only
        ``span`` seconds or more after the first): taken out of the resend set and out of the
        journal, and returned (its outcome is the caller's to report)."""
        item = self.suspect()
        last, self._struck = self._struck, item
        if last is not None and last is not item:
            last.strikes, last.struck_at, last.bare_only = 0, None, True  # not in a row
        if item is None:
            return None
        item.strikes += 1
        item.bare_only = item.bare_only and bare
        if item.struck_at is None:
            item.struck_at = now
        if item.strikes < limit or (item.bare_only and now - item.struck_at < span):
            return None
        self._struck = None
        del self.inflight[item.packet_id]
        self.forget(item)
        return item

    def pop_pending(self) -> Outgoing:
        """The next pending record, in order (no longer counted in the outbox)."""
        item = self.pending.popleft()
        if item.offline:
            self._left_outbox(item)
        return item

    def take_expired(self, now: float) -> list[Outgoing]:
        """Remove and return the offline records whose TTL is over (at link-up)."""
        if self.ttl is None or not self._offline_count:
            return []
        expired = [i for i in self.pending if i.expires_at is not None and i.expires_at <= now]
        if expired:
            gone = set(map(id, expired))
            self.pending = deque(i for i in self.pending if id(i) not in gone)
            for item in expired:
                self._left_outbox(item)
                self.forget(item)
            self.expired += len(expired)
        return expired

    def take_all(self) -> Iterator[Outgoing]:
        """Empty the store (shutdown): every record, in flight first, then pending. Journaled
        records (``seq`` set) stay in the journal: they are sent after the next start."""
        items = [*self.inflight.values(), *self.pending]
        self.inflight.clear()
        self.pending.clear()
        self.resend.clear()
        self._offline_count = self._offline_bytes = 0
        return iter(items)

    def _drop_oldest_offline(self, size: int) -> list[Outgoing]:
        dropped: list[Outgoing] = []
        kept: deque[Outgoing] = deque()
        for item in self.pending:
            if item.offline and not self.has_room(size):
                self._left_outbox(item)
                self.forget(item)
                dropped.append(item)
            else:
                kept.append(item)
        self.pending = kept
        self.dropped += len(dropped)
        return dropped

    def _left_outbox(self, item: Outgoing) -> None:
        item.offline = False
        self._offline_count -= 1
        self._offline_bytes -= len(item.payload)
