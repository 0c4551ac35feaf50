"""The session with a durable outbox (``outbox_path``), driven with an in-memory journal.

The fake keeps what a real file would keep across processes (a dict by seq), so "a previous
process" is simply a second session opened on the same fake. The SQLite adapter itself is tested
in ``test_journal.py``, and the whole path with real processes and kill -9 in
``tests/integration/test_resilience_durable_outbox.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from mqtt5 import PubAckPacket, PubAckReasonCode

from support.session_wire import connect, feed, publishes, sent
from tars.mqtt._core.events import PublishDone
from tars.mqtt._core.outgoing import Outgoing
from tars.mqtt._core.session import Session
from tars.mqtt._errors import OutboxFullError


def replace(item: Outgoing, **changes: Any) -> Outgoing:
    """A copy of ``item`` with ``changes``, as the SQLite journal stores and loads it."""
    new = copy.copy(item)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


class FakeJournal:
    """What the file would hold, in memory; ``closed`` and ``fail`` for the tests."""

    def __init__(self) -> None:
        self.records: dict[int, Outgoing] = {}
        self.last_seq = 0
        self.closed = False
        self.fail = False
        self.unreadable = 0

    def append(self, item: Outgoing) -> int:
        assert not self.closed
        if self.fail:
            raise OutboxFullError("cannot write the durable outbox: disk full")
        self.last_seq += 1
        self.records[self.last_seq] = replace(item, handle=None)
        return self.last_seq

    def remove(self, seq: int) -> None:
        assert not self.closed
        del self.records[seq]

    def load(self) -> Iterator[Outgoing]:
        self.closed = False  # opened again
        for seq in sorted(self.records):
            yield replace(self.records[seq], seq=seq, offline=False)

    def close(self) -> None:
        self.closed = True

    def topics(self) -> list[str]:
        return [self.records[s].topic for s in sorted(self.records)]


def session_on(journal: FakeJournal, **options: object) -> Session:
    session = Session("c", journal=lambda: journal, **options)  # type: ignore[arg-type]
    session.open_journal()
    return session


def puback(session: Session, *packet_ids: int, code: int = 0) -> list[object]:
    reason = PubAckReasonCode(code)
    return list(feed(session, *(PubAckPacket(p, reason_code=reason) for p in packet_ids)))


def test_offline_qos1_is_journaled_before_publish_returns_and_removed_at_its_puback() -> None:
    journal = FakeJournal()
    session = session_on(journal)
    session.publish("t/1", b"one", 1, handle="h1")
    session.publish("t/2", b"two", 2, handle="h2")
    assert journal.topics() == ["t/1", "t/2"]  # on "disk" as publish() returns
    connect(session)
    first, second = publishes(sent(session))
    assert journal.topics() == ["t/1", "t/2"]  # sent is not acknowledged
    events = puback(session, first.packet_id)
    assert [e.handle for e in events if isinstance(e, PublishDone)] == ["h1"]
    assert journal.topics() == ["t/2"]
    assert second.qos == 2


def test_publishes_on_a_live_link_and_offline_qos0_are_not_journaled() -> None:
    journal = FakeJournal()
    session = session_on(journal, queue_qos0_offline=True)
    session.publish("t/qos0", b"x", 0)
    assert session.outgoing.store.offline_count == 1  # queued in memory ...
    assert journal.records == {}  # ... but at-most-once: never written to disk
    connect(session)
    sent(session)
    session.publish("t/live", b"x", 1, handle="h")
    assert journal.records == {}


def test_records_of_an_earlier_process_go_out_first_in_order_with_no_handle() -> None:
    journal = FakeJournal()
    old = session_on(journal)
    for n in range(3):
        old.publish(f"t/old{n}", b"x", 1, handle=f"old{n}")
    # The process dies here: no abandon(), no close. A new one opens the same file.
    new = Session("c", journal=lambda: journal)
    assert new.open_journal() == 3
    assert new.outgoing.store.offline_count == 3
    new.publish("t/new-offline", b"x", 1, handle="n1")
    connect(new)
    new.publish("t/new-live", b"x", 1, handle="n2")  # behind the backlog, though linked
    out = publishes(sent(new))
    assert [p.topic for p in out] == ["t/old0", "t/old1", "t/old2", "t/new-offline", "t/new-live"]
    events = puback(new, *(p.packet_id for p in out))
    handles = [e.handle for e in events if isinstance(e, PublishDone)]
    assert handles == [None, None, None, "n1", "n2"]
    assert journal.records == {}


def test_a_refused_publish_leaves_the_journal_and_counts_as_failed() -> None:
    journal = FakeJournal()
    session = session_on(journal)
    session.publish("t/1", b"x", 1, handle="h")
    connect(session)
    [packet] = publishes(sent(session))
    [done] = [e for e in puback(session, packet.packet_id, code=0x87) if isinstance(e, PublishDone)]
    assert done.reason_code == 0x87
    assert session.stats.publish_failed == 1
    assert journal.records == {}


def test_expired_and_policy_dropped_records_leave_the_journal() -> None:
    journal = FakeJournal()
    session = session_on(journal, outbox_ttl=5.0, outbox_max_messages=2)
    session.publish("t/a", b"x", 1, now=0.0)
    session.publish("t/b", b"x", 1, now=1.0)
    dropped = session.publish("t/c", b"x", 1, now=4.0)  # full: drop_oldest drops t/a
    assert [e.reason_string for e in dropped if isinstance(e, PublishDone)] == ["dropped"]
    assert journal.topics() == ["t/b", "t/c"]
    connect(session, now=7.0)  # t/b (deadline 6) expired, t/c (deadline 9) still good
    assert [p.topic for p in publishes(sent(session))] == ["t/c"]
    assert journal.topics() == ["t/c"]
    assert (session.outgoing.store.dropped, session.outgoing.store.expired) == (1, 1)


def test_drop_newest_writes_nothing_for_the_refused_message() -> None:
    journal = FakeJournal()
    session = session_on(journal, outbox_max_messages=1, outbox_policy="drop_newest")
    session.publish("t/kept", b"x", 1)
    session.publish("t/refused", b"x", 1)
    assert journal.topics() == ["t/kept"]
    assert session.outgoing.store.dropped == 1


def test_a_failed_write_raises_and_queues_nothing() -> None:
    journal = FakeJournal()
    session = session_on(journal, outbox_max_messages=1)
    session.publish("t/first", b"x", 1)
    journal.fail = True
    with pytest.raises(OutboxFullError, match="disk full"):
        session.publish("t/second", b"x", 1)  # would have dropped t/first: it did not
    assert journal.topics() == ["t/first"]
    assert (session.outgoing.store.offline_count, session.outgoing.store.dropped) == (1, 0)


def test_shutdown_keeps_journaled_records_uncounted_and_closes_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = FakeJournal()
    session = session_on(journal, queue_qos0_offline=True)
    session.publish("t/1", b"x", 1, handle="h1")
    session.publish("t/qos0", b"x", 0, handle="h0")
    connect(session)
    [_sent_1] = publishes(sent(session))[:1]  # in flight when the client shuts down
    session.publish("t/live", b"x", 1, handle="h2")  # never journaled: lost, counted below
    sent(session)
    session.connection_lost(now=0.0)
    handles = session.abandon()
    assert set(handles) >= {"h1", "h2"}
    assert journal.closed
    assert journal.topics() == ["t/1"]  # survives for the next start
    assert session.outgoing.store.dropped == 0  # nothing offline was lost (t/qos0 was sent)
    assert "discarded at shutdown" in caplog.text  # t/live: not kept, said so
    # connect() after shutdown(): the journal is opened again and its record goes first.
    session.restart()
    assert session.open_journal() == 1
    connect(session)
    assert [p.topic for p in publishes(sent(session))] == ["t/1"]


def test_shutdown_offline_without_a_journal_still_counts_drops() -> None:
    session = Session("c")
    assert session.open_journal() == 0
    session.publish("t/1", b"x", 1, handle="h")
    session.abandon()
    assert session.outgoing.store.dropped == 1


def test_more_records_than_the_limits_are_all_kept_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = FakeJournal()
    old = session_on(journal, outbox_max_messages=5)
    for n in range(5):
        old.publish(f"t/{n}", b"x", 1)
    new = Session("c", journal=lambda: journal, outbox_max_messages=2)
    assert new.open_journal() == 5
    assert "more than outbox_max_messages" in caplog.text
    connect(new)
    assert [p.topic for p in publishes(sent(new))] == [f"t/{n}" for n in range(5)]
    assert new.outgoing.store.dropped == 0


def test_a_record_that_no_longer_passes_the_checks_is_dropped_at_load_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Records an earlier version wrote under looser rules: sent as they are, ``retain`` as a
    property raised a bare TypeError inside the link's callback (the link dropped, at every
    start), and a control character makes the broker end each link. Each one leaves the
    journal, is logged and counted; the others go out in order."""
    journal = FakeJournal()
    stored = [
        ("t/ok0", None),
        ("t/retain", {"retain": True}),
        ("t/\x01", None),
        ("t/type", {"content_type": "a\x00b"}),
        ("t/subid", {"subscription_ids": [1]}),
        ("t/ok1", {"content_type": "text/plain", "user_properties": [("k", "v")]}),
    ]
    for seq, (topic, properties) in enumerate(stored, 1):
        journal.records[seq] = Outgoing(topic, b"x", 1, False, properties, None)
    session = Session("c", journal=lambda: journal)
    assert session.open_journal() == 2
    assert journal.topics() == ["t/ok0", "t/ok1"]
    assert session.outgoing.store.dropped == 4
    assert session.outgoing.store.offline_count == 2
    warnings = [r.getMessage() for r in caplog.records if "can no longer be sent" in r.getMessage()]
    assert len(warnings) == 4
    assert "record 2" in warnings[0]
    assert "'retain'" in warnings[0]
    assert all("a\x00b" not in line for line in warnings)  # a property's value is not logged
    connect(session)  # used to raise TypeError here, inside the link's data_received
    out = publishes(sent(session))
    assert [p.topic for p in out] == ["t/ok0", "t/ok1"]
    assert out[1].content_type == "text/plain"
    puback(session, *(p.packet_id for p in out))
    assert journal.records == {}
