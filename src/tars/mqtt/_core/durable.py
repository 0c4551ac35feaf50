"""The durable outbox: outgoing QoS 1/2 publishes kept on disk until the broker acknowledged them.

A robot that loses power loses its in-memory outbox; with ``outbox_path`` set, every accepted
QoS 1/2 publish is written here first and removed only once acknowledged, so a restarted process
with the same client id sends what the last one could not. Pure and synchronous (SQLite from the
standard library, no asyncio); the session decides when to append, remove and load.

Layout: ``outbox_path`` is a *directory*; each client id gets its own file in it
(:func:`outbox_file`), so one configuration can serve every instance of a replicated service and
two clients never share a queue. The file is held with an exclusive lock while open: a second
process opening it (two clients with one client id) gets a :class:`~tars.mqtt.ConfigError` at
once instead of interleaving its messages with ours.

Durability, and why these SQLite settings:

- ``journal_mode=WAL``: an append is one sequential write to the log, and a crash mid-write
  leaves the last committed state (SQLite rolls an incomplete log tail back when it reopens).
- ``synchronous=FULL`` (default): each commit is fsynced, so a record whose :meth:`append`
  returned survives a power cut, which is the case this store exists for. ``NORMAL`` survives
  a process crash (kill -9) but may lose the last commits on power loss; it is offered for
  hosts where the fsync costs too much (measure with ``python -m bench.durable``).
- ``locking_mode=EXCLUSIVE``: one owner; WAL then needs no shared-memory file either.

Batched commits, where that is safe: :meth:`append` commits before it returns (the caller may
tell its user the event is accepted). :meth:`remove` does *not* commit at once: removals ride
on the next append's commit, or are committed every ``remove_batch`` removals, or by
:meth:`flush` / :meth:`close`. Losing them in a crash only means those acknowledged messages
are sent once more after the restart, which at-least-once delivery allows (and the receivers'
dedup window absorbs); it never loses one.

Bounded like the in-memory outbox (:class:`~tars.mqtt._core.outgoing.OutgoingStore`), with the same
policies when full (``drop_oldest``, ``drop_newest``, ``block`` for which the caller waits on
:meth:`has_room`, ``raise``); the message and byte counts are kept in memory, and :meth:`load`
reads in pages, so memory stays bounded whatever the file holds.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from .._errors import (
    ConfigError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    OutboxFullError,
)
from .outgoing import OutboxPolicy

__all__ = ["Appended", "DurableOutbox", "StoredPublish", "outbox_file"]

log = logging.getLogger("tars.mqtt")

Synchronous = Literal["NORMAL", "FULL"]

_SCHEMA_VERSION = 1
_PAGE = 256  # rows read per query by load(): bounds the memory of a large backlog
_MAX_NAME = 160  # longest client-id part of a file name (names are limited to 255 bytes)


@dataclass(frozen=True, slots=True)
class StoredPublish:
    """One publish read back from the store, in the order it was appended."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] | None
    expires_at: float | None  # wall-clock (time.time()) deadline, or None


@dataclass(frozen=True, slots=True)
class Appended:
    """What :meth:`DurableOutbox.append` did: the new record's ``seq`` (None when the policy
    refused it) and the ``dropped`` seqs removed to make room (``drop_oldest``), oldest first,
    so the caller can fail their waiters."""

    seq: int | None
    dropped: tuple[int, ...] = ()


def outbox_file(directory: str | os.PathLike[str], client_id: str) -> Path:
    """The store file of ``client_id`` in ``directory``.

    The id is percent-encoded (it may hold ``/`` or any character); a very long one is cut and
    suffixed with a hash of the whole, so distinct ids always get distinct files.
    """
    name = urllib.parse.quote(client_id, safe="-_.@")
    if name.startswith("."):
        name = "%2E" + name[1:]  # no hidden files, no "." or ".."
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"{name[:_MAX_NAME]}~{digest}"
    return Path(directory) / f"{name}.outbox.sqlite3"


class DurableOutbox:
    """An append-only, crash-safe FIFO of publishes in one SQLite file, keyed by ``seq``.

    ``seq`` grows strictly across the life of the file (never reused, even once the queue
    was emptied), so it orders records and names them for :meth:`remove`.

    Raises:
        InvalidArgumentError: bad limits, policy or ``synchronous``.
        ConfigError: ``field="outbox_path"``: the file cannot be created or opened, is not an
            outbox, or is in use by another process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int,
        max_bytes: int,
        policy: OutboxPolicy = "drop_oldest",
        synchronous: Synchronous = "FULL",
        remove_batch: int = 64,
    ) -> None:
        if max_messages < 0 or max_bytes < 0:
            raise InvalidArgumentError("outbox limits must be >= 0")
        if policy not in ("drop_oldest", "drop_newest", "block", "raise"):
            raise InvalidArgumentError(f"unknown outbox policy {policy!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidArgumentError(
                f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}"
            )
        if remove_batch < 1:
            raise InvalidArgumentError(f"remove_batch must be >= 1, not {remove_batch!r}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.policy: OutboxPolicy = policy
        self.remove_batch = remove_batch
        self.dropped = 0  # dropped by the policy or for being too large
        self.unreadable = 0  # skipped and removed by load(): properties that cannot be read
        self._pending_removes = 0
        self._db = _open(self.path, synchronous)
        try:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise _unreadable(self.path, exc) from None
        self._count: int = count
        self._bytes: int = size

    # --- the queue ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Records stored (removals not yet committed already excluded)."""
        return self._count

    def __len__(self) -> int:
        return self._count

    def has_room(self, size: int) -> bool:
        """Whether a payload of ``size`` bytes fits without dropping anything."""
        return self._count < self.max_messages and self._bytes + size <= self.max_bytes

    def append(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        *,
        expires_at: float | None = None,
    ) -> Appended:
        """Store a publish at the end of the queue; committed (durable) when this returns,
        unless inside :meth:`batch`.

        When full, the policy decides, as for the in-memory outbox: ``drop_oldest`` removes the
        oldest records in the same transaction (their seqs are in :attr:`Appended.dropped`);
        ``drop_newest`` and ``block`` refuse it (``seq`` is None; with ``block`` the caller
        should have waited for :meth:`has_room`); a payload larger than the whole store is
        refused whatever the policy. Every refusal or drop counts in :attr:`dropped`.

        Raises:
            OutboxFullError: full, with the ``raise`` policy, or the disk refused the write
                (full or failing); nothing was stored then (inside :meth:`batch`, the whole
                burst so far is rolled back).
            InvalidArgumentError: ``qos`` not 0, 1 or 2.
            InvalidArgumentTypeError: ``properties`` that cannot be stored (not str, int,
                float, bool, bytes, lists, tuples or dicts of them).
        """
        if qos not in (0, 1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        props = None if properties is None else orjson.dumps(_tag(properties)).decode()
        size = len(payload)
        if self.max_messages == 0 or size > self.max_bytes:
            self.dropped += 1
            return Appended(None)
        dropped: list[int] = []
        if not self.has_room(size):
            if self.policy == "raise":
                raise OutboxFullError(
                    f"durable outbox full ({self._count} messages, {self._bytes} bytes); "
                    f"message for {topic!r} refused"
                )
            if self.policy != "drop_oldest":
                self.dropped += 1
                return Appended(None)
            dropped = self._drop_oldest_for(size)
        try:
            self._begin()
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, properties, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), props, expires_at),
            )
            self._count += 1
            self._bytes += size
            self._commit()
        except sqlite3.Error as exc:  # the disk is full, or failing: nothing was stored
            self._rollback()
            raise OutboxFullError(
                f"cannot write the durable outbox {str(self.path)!r}: {exc}"
            ) from exc
        seq = cursor.lastrowid
        assert seq is not None
        return Appended(seq, tuple(dropped))

    def remove(self, seq: int) -> bool:
        """Forget record ``seq`` (acknowledged, or failed for good); False if it is not stored.

        Committed lazily (see the module docstring): with the next append, every
        ``remove_batch`` removals, or at :meth:`flush` / :meth:`close`.
        """
        self._begin()
        # Not DELETE ... RETURNING: that needs SQLite 3.35, newer than some LTS systems ship.
        row = self._db.execute(
            "SELECT LENGTH(payload) FROM outbox WHERE seq = ?", (seq,)
        ).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        if row is None:
            return False
        self._count -= 1
        self._bytes -= row[0]
        self._pending_removes += 1
        if self._pending_removes >= self.remove_batch:
            self._commit()
        return True

    def load(self, after: int = 0) -> Iterator[StoredPublish]:
        """Every record with ``seq > after``, oldest first, read a page at a time.

        Records appended or removed while iterating are seen or skipped as of each page. A
        record that cannot be read back (a column damaged by hand, by a disk, or written by
        another program: properties that do not decode, a payload that is not bytes, a QoS or
        deadline of another type) is removed instead, logged at WARNING and counted in
        :attr:`unreadable`: sent without its properties it would not be the message that was
        accepted, and raising here would fail every start.
        """
        removed = False
        try:
            while True:
                rows = self._db.execute(
                    "SELECT seq, topic, payload, qos, retain, properties, expires_at FROM outbox "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, _PAGE),
                ).fetchall()
                for row in rows:
                    try:
                        record = _record_of(*row)
                    except (ValueError, TypeError, AttributeError) as exc:
                        log.warning(
                            "durable outbox: record %s (a publish to %r) cannot be read back "
                            "(%s) and is dropped",
                            row[0],
                            row[1],
                            type(exc).__name__,
                        )
                        self.remove(row[0])
                        self.unreadable += 1
                        removed = True
                        continue
                    yield record
                if len(rows) < _PAGE:
                    return
                after = rows[-1][0]
        finally:
            if removed:
                self.flush()  # gone for good now: a crash must not bring them back

    # --- transactions ------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit pending removals now."""
        self._commit()

    def close(self) -> None:
        """Commit pending removals and release the file (and its lock). Idempotent."""
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> DurableOutbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DurableOutbox {str(self.path)!r} messages={self._count} bytes={self._bytes}>"

    # --- internals ---------------------------------------------------------------------------

    def _drop_oldest_for(self, size: int) -> list[int]:
        dropped: list[int] = []
        count, total = self._count, self._bytes
        for seq, length in self._db.execute("SELECT seq, LENGTH(payload) FROM outbox ORDER BY seq"):
            if count < self.max_messages and total + size <= self.max_bytes:
                break
            dropped.append(seq)
            count -= 1
            total -= length
        for seq in dropped:
            self.remove(seq)  # committed with the append that follows
        self.dropped += len(dropped)
        return dropped

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        self._pending_removes = 0

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._pending_removes = 0
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
        ).fetchone()


def _open(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """Open (creating the directory and the file if needed) and lock the store."""
    try:
        path.parent.mkdir(exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, timeout=0)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            "outbox_path", f"cannot open the outbox file {str(path)!r}: {exc}"
        ) from None
    try:
        # Order matters: the lock mode before WAL is entered, so WAL keeps no -shm file.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot use write-ahead logging (journal mode {mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at the first append
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"  # never reuses a seq
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,"
                " retain INTEGER NOT NULL, properties TEXT, expires_at REAL)"
            )
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        elif version != _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"unknown outbox schema version {version}")
        db.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc):
            raise ConfigError(
                "outbox_path",
                f"the outbox file {str(path)!r} is in use by another process "
                "(two clients with one client id?)",
            ) from None
        raise _unreadable(path, exc) from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _unreadable(path, exc) from None
    return db


def _unreadable(path: Path, exc: sqlite3.DatabaseError) -> ConfigError:
    return ConfigError(
        "outbox_path",
        f"{str(path)!r} is not a readable outbox ({exc}); move it aside to start an empty one",
    )


# Properties hold bytes (correlation_data) and tuples (user_properties), which JSON has not:
# they are stored as one-key objects, tagged so that they come back as the same types.
def _tag(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, tuple):
        return {"$t": [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$d": {k: _tag(v) for k, v in value.items()}}
    raise InvalidArgumentTypeError(
        f"cannot store a publish property of type {type(value).__name__} in the durable outbox"
    )


def _record_of(
    seq: int,
    topic: object,
    payload: object,
    qos: object,
    retain: object,
    props: object,
    expires_at: object,
) -> StoredPublish:
    """One row as it was appended (ValueError or TypeError when a column is not)."""
    if not isinstance(topic, str) or not isinstance(payload, bytes):
        raise TypeError("a topic or payload of another type")
    if not isinstance(qos, int) or qos not in (0, 1, 2):
        raise TypeError("a QoS of another type")
    if expires_at is not None and not isinstance(expires_at, int | float):
        raise TypeError("a deadline of another type")
    properties = None
    if props is not None:
        if not isinstance(props, str):
            raise TypeError("properties of another type")
        properties = _untag(orjson.loads(props))
        if not isinstance(properties, dict):
            raise ValueError("properties that are not a mapping")
    return StoredPublish(seq, topic, payload, qos, bool(retain), properties, expires_at)


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        if tag == "$b":
            return base64.b64decode(inner, validate=True)  # binascii.Error is a ValueError
        if tag == "$t":
            return tuple(_untag(v) for v in inner)
        if tag == "$d":
            return {k: _untag(v) for k, v in inner.items()}
        raise ValueError(f"unknown tag {tag!r}")
    return value
