"""The durable outbox: a crash-safe SQLite FIFO of publishes, one file per client id.

Real files in a temporary directory; the crash tests kill -9 a real writer process mid-stream.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tars.mqtt import (
    ConfigError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MQTTError,
    OutboxFullError,
)
from tars.mqtt._core.durable import DurableOutbox, outbox_file
from tars.mqtt._core.outgoing import OutboxPolicy


def store(path: Path, **options: object) -> DurableOutbox:
    settings: dict[str, object] = {"max_messages": 100, "max_bytes": 10_000}
    settings.update(options)
    return DurableOutbox(path / "box.sqlite3", **settings)  # type: ignore[arg-type]


def topics(box: DurableOutbox) -> list[str]:
    return [record.topic for record in box.load()]


# --- file naming ------------------------------------------------------------------------------


def test_one_file_per_client_id_named_safely(tmp_path: Path) -> None:
    ids = ["svc", "svc-1", "a/b", "../etc", ".hidden", "ünï cødé", "x" * 70_000, "x" * 69_999]
    files = [outbox_file(tmp_path, client_id) for client_id in ids]
    assert len(set(files)) == len(ids)
    for file in files:
        assert file.parent == tmp_path
        assert len(file.name.encode()) <= 255
        assert not file.name.startswith(".")
        assert file.name.endswith(".outbox.sqlite3")
    assert files[0].name == "svc.outbox.sqlite3"


# --- the queue --------------------------------------------------------------------------------


def test_load_gives_back_every_field_in_order_after_reopening(tmp_path: Path) -> None:
    props = {
        "response_topic": "r/1",
        "correlation_data": b"\x00\xffid",
        "user_properties": [("k", "v"), ("k", "w")],
        "message_expiry_interval": 30,
        "content_type": "application/json",
    }
    with store(tmp_path) as box:
        first = box.append("a", b"1", 1).seq
        second = box.append("b", b"\x00" * 3, 2, True, props, expires_at=1e9).seq
        assert first is not None
        assert second is not None
        assert second > first
    with store(tmp_path) as box:
        a, b = box.load()
    assert (a.seq, a.topic, a.payload, a.qos, a.retain, a.properties) == (
        first,
        "a",
        b"1",
        1,
        False,
        None,
    )
    assert (b.seq, b.topic, b.payload, b.qos, b.retain) == (second, "b", b"\x00" * 3, 2, True)
    assert b.properties == props
    assert b.expires_at == 1e9


DAMAGE = [
    ("properties", "{not json"),
    ("properties", '{"$t": 5}'),
    ("properties", "[1, 2]"),
    ("properties", '{"$d": {"correlation_data": {"$b": "%%%"}}}'),  # not base64
    ("properties", '{"$x": {"content_type": "x"}}'),  # a tag nobody writes
    ("properties", 7),
    ("payload", "text, not bytes"),
    ("qos", 3),
    ("qos", "one"),  # INTEGER affinity keeps text that is no number as text
    ("expires_at", "tomorrow"),
]


@pytest.mark.parametrize(("column", "damage"), DAMAGE, ids=[f"{c}={d!r}" for c, d in DAMAGE])
def test_a_record_that_cannot_be_read_back_is_dropped_and_the_rest_loads(
    tmp_path: Path, column: str, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A column damaged (by hand, a disk, another program) costs that record only: removed,
    counted, said, for good; it must not make every start fail, nor be sent as other bytes."""
    with store(tmp_path) as box:
        box.append("a", b"1", 1)
        bad = box.append("b", b"2", 1, False, {"correlation_data": b"id"}).seq
        box.append("c", b"3", 1)
    db = sqlite3.connect(tmp_path / "box.sqlite3")
    db.execute(f"UPDATE outbox SET {column} = ? WHERE seq = ?", (damage, bad))
    db.commit()
    db.close()
    with store(tmp_path) as box:
        assert topics(box) == ["a", "c"]
        assert box.unreadable == 1
        assert len(box) == 2
    with store(tmp_path) as box:
        assert topics(box) == ["a", "c"]
        assert box.unreadable == 0
    said = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1
    assert f"record {bad} (a publish to 'b')" in said[0].getMessage()


def test_a_record_dropped_unreadable_stays_dropped_after_a_crash(tmp_path: Path) -> None:
    """The removal is committed when load() ends, not at close: a process killed right after
    it does not meet the record (and log it, and count it) again at its next start."""
    with store(tmp_path) as box:
        box.append("a", b"1", 1)
        bad = box.append("b", b"2", 1, False, {"content_type": "x"}).seq
    db = sqlite3.connect(tmp_path / "box.sqlite3")
    db.execute("UPDATE outbox SET properties = '{not json' WHERE seq = ?", (bad,))
    db.commit()
    db.close()
    crash = (
        "import os, sys\n"
        "from tars.mqtt._core.durable import DurableOutbox\n"
        "box = DurableOutbox(sys.argv[1], max_messages=100, max_bytes=10_000)\n"
        "print([r.topic for r in box.load()], box.unreadable, flush=True)\n"
        "os._exit(0)  # no close(): what a kill leaves\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", crash, str(tmp_path / "box.sqlite3")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert out.split() == ["['a']", "1"]
    with store(tmp_path) as box:
        assert topics(box) == ["a"]
        assert box.unreadable == 0


def test_removed_records_stay_removed_and_seqs_are_never_reused(tmp_path: Path) -> None:
    with store(tmp_path) as box:
        seqs = [box.append(f"t{i}", b"xy", 1).seq for i in range(5)]
        assert box.remove(seqs[1])  # type: ignore[arg-type]
        assert box.remove(seqs[4])  # type: ignore[arg-type]
        assert not box.remove(seqs[1])  # already gone
        assert box.count == 3
    with store(tmp_path, max_bytes=8) as box:
        assert topics(box) == ["t0", "t2", "t3"]
        assert box.count == 3
        assert (box.has_room(2), box.has_room(3)) == (True, False)  # 6 payload bytes kept
        for record in list(box.load()):
            box.remove(record.seq)
        assert box.count == 0
    with store(tmp_path) as box:
        new = box.append("next", b"", 1).seq
        assert new is not None
        assert new > max(s for s in seqs if s is not None)


def test_load_pages_through_a_large_backlog_and_resumes_after_a_seq(tmp_path: Path) -> None:
    with store(tmp_path, max_messages=2000, synchronous="NORMAL") as box:
        for i in range(1000):
            box.append(f"t{i}", b"", 1)
    with store(tmp_path, max_messages=2000) as box:
        records = list(box.load())
        assert [r.topic for r in records] == [f"t{i}" for i in range(1000)]
        assert [r.topic for r in box.load(after=records[997].seq)] == ["t998", "t999"]


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "block", "raise"])
def test_a_payload_larger_than_the_store_is_refused_whatever_the_policy(
    tmp_path: Path, policy: OutboxPolicy
) -> None:
    with store(tmp_path, max_bytes=10, policy=policy) as box:
        box.append("small", b"x", 1)
        assert box.append("big", b"x" * 11, 1).seq is None
        assert box.dropped == 1
        assert topics(box) == ["small"]


def test_drop_oldest_makes_room_and_names_what_it_dropped(tmp_path: Path) -> None:
    with store(tmp_path, max_messages=3, max_bytes=10) as box:
        seqs = [box.append(f"t{i}", b"xxx", 1).seq for i in range(3)]
        result = box.append("big", b"xxxxxx", 1)  # 9 + 6 > 10: two must go
        assert result.dropped == (seqs[0], seqs[1])
        assert box.dropped == 2
    with store(tmp_path, max_messages=3, max_bytes=10) as box:
        assert topics(box) == ["t2", "big"]


@pytest.mark.parametrize("policy", ["drop_newest", "block"])
def test_drop_newest_and_block_refuse_the_new_message(tmp_path: Path, policy: OutboxPolicy) -> None:
    with store(tmp_path, max_messages=2, policy=policy) as box:
        box.append("a", b"", 1)
        box.append("b", b"", 1)
        assert not box.has_room(0)
        assert box.append("c", b"", 1).seq is None
        assert box.dropped == 1
        assert topics(box) == ["a", "b"]


def test_the_raise_policy_raises_and_stores_nothing(tmp_path: Path) -> None:
    with store(tmp_path, max_messages=1, policy="raise") as box:
        box.append("a", b"", 1)
        with pytest.raises(OutboxFullError, match="durable outbox full"):
            box.append("b", b"", 1)
        assert topics(box) == ["a"]


def test_a_zero_message_store_keeps_nothing(tmp_path: Path) -> None:
    with store(tmp_path, max_messages=0) as box:
        assert box.append("a", b"", 1).seq is None
        assert (box.count, box.dropped) == (0, 1)


def test_removals_are_committed_by_the_batch_size_flush_or_close(tmp_path: Path) -> None:
    with store(tmp_path, remove_batch=2) as box:
        seqs = [box.append(f"t{i}", b"", 1).seq for i in range(4)]
        box.remove(seqs[0])  # type: ignore[arg-type]
        box.remove(seqs[1])  # type: ignore[arg-type]  # the second: committed
        box.flush()
    with store(tmp_path) as box:
        assert topics(box) == ["t2", "t3"]


# --- misuse and bad files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_messages": -1},
        {"max_bytes": -1},
        {"policy": "drop_everything"},
        {"synchronous": "OFF"},
        {"remove_batch": 0},
    ],
)
def test_bad_settings(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        store(tmp_path, **options)


def test_bad_arguments_are_typed_errors(tmp_path: Path) -> None:
    with store(tmp_path) as box:
        with pytest.raises(InvalidArgumentError, match="qos"):
            box.append("a", b"", 3)
        with pytest.raises(InvalidArgumentTypeError, match="object"):
            box.append("a", b"", 1, properties={"user_properties": [object()]})
        assert box.count == 0


def test_a_second_opener_of_the_same_file_is_refused_at_once(tmp_path: Path) -> None:
    with store(tmp_path) as box:
        box.append("a", b"", 1)
        with pytest.raises(ConfigError, match="in use by another process") as info:
            store(tmp_path)
        assert info.value.field == "outbox_path"
    with store(tmp_path) as box:  # released on close
        assert topics(box) == ["a"]


def test_a_file_that_is_not_an_outbox_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "box.sqlite3"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a readable outbox"):
        store(tmp_path)
    assert path.read_bytes() == b"definitely not sqlite" * 100


def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "box.sqlite3")
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(ConfigError, match="schema version 7"):
        store(tmp_path)


def test_the_directory_is_created_but_not_its_parents(tmp_path: Path) -> None:
    with DurableOutbox(tmp_path / "new" / "b.sqlite3", max_messages=1, max_bytes=1):
        pass
    with pytest.raises(ConfigError, match="cannot open"):
        DurableOutbox(tmp_path / "no" / "such" / "b.sqlite3", max_messages=1, max_bytes=1)


def test_errors_are_mqtt_errors() -> None:
    assert issubclass(ConfigError, MQTTError)
    assert issubclass(OutboxFullError, MQTTError)


# --- real crashes -----------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from tars.mqtt._core.durable import DurableOutbox

    path, start, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    box = DurableOutbox(path, max_messages=10**9, max_bytes=10**12, synchronous=sync,
                        remove_batch=int(sys.argv[4]))
    i = start
    while True:
        box.append(f"t/{i}", i.to_bytes(4, "big") * 64, 1, properties={"correlation_data": b"c"})
        print("A", i, flush=True)  # the append returned: committed
        if i % 3 == 0:
            first = next(iter(box.load()))
            box.remove(first.seq)
            print("R", int.from_bytes(first.payload[:4], "big"), flush=True)
        i += 1
    """
)


def _run_and_kill(
    path: Path, start: int, sync: str, remove_batch: int, after: int
) -> tuple[list[int], list[int]]:
    """Start a writer, kill -9 it once ``after`` appends returned: (appended, removed) as seen."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(start), sync, str(remove_batch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    appended: list[int] = []
    removed: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, number = line.split()
            (appended if kind == "A" else removed).append(int(number))
            if len(appended) >= after:
                os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is still appending
                break
        # What it printed before it died is still in the pipe: read it all, so the lists are
        # everything the writer saw return (it ran on after the line that decided the kill).
        for line in proc.stdout.read().splitlines(keepends=True):
            if line.endswith("\n"):
                kind, number = line.split()
                (appended if kind == "A" else removed).append(int(number))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return appended, removed


@pytest.mark.slow
@pytest.mark.parametrize(("sync", "remove_batch"), [("FULL", 1), ("FULL", 16), ("NORMAL", 16)])
def test_kill_9_mid_stream_keeps_exactly_the_committed_records_in_order(
    tmp_path: Path, sync: str, remove_batch: int
) -> None:
    path = tmp_path / "box.sqlite3"
    expected: list[int] = []  # what a reader must find: appended, not removed (as committed)
    start = 0
    for _round in range(3):  # reopen after each crash and go on writing
        appended, removed = _run_and_kill(path, start, sync, remove_batch, after=200)
        with DurableOutbox(path, max_messages=10**9, max_bytes=10**12) as box:
            records = list(box.load())
            found = [int.from_bytes(r.payload[:4], "big") for r in records]
            assert [r.seq for r in records] == sorted(r.seq for r in records)
            assert all(r.payload == r.payload[:4] * 64 for r in records)
            assert all(r.topic == f"t/{n}" for r, n in zip(records, found, strict=True))
            assert all(r.properties == {"correlation_data": b"c"} for r in records)
            # Every append that returned is there unless its removal was reported (a removal
            # may also be lost in the crash: the record is then still there, which is allowed).
            # The kill may land between a commit and its report: then one append more is there
            # (the next number), or one removal more was committed (the oldest survivor).
            survivors = [n for n in expected + appended if n not in removed]
            missing = sorted(set(survivors) - set(found))
            assert missing in ([], survivors[:1])
            extra = [n for n in found if n not in expected + appended]
            assert extra in ([], [appended[-1] + 1])
            assert found == sorted(found)
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
        expected = found
        start = (extra or appended)[-1] + 1
