"""The SQLite journal adapter: what the session hands it comes back in a new process's load."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tars.mqtt._core.journal import DurableJournal
from tars.mqtt._core.outgoing import Outgoing
from tars.mqtt._errors import ConfigError


def test_records_come_back_in_order_with_their_properties_and_deadline(tmp_path: Path) -> None:
    path = tmp_path / "c.outbox.sqlite3"
    journal = DurableJournal(path)
    first = Outgoing("t/1", b"one", 1, False, {"user_properties": [("k", "v")]}, "h")
    first.expires_at = time.monotonic() + 60.0
    seqs = [journal.append(first), journal.append(Outgoing("t/2", b"two", 2, True, None, "h"))]
    journal.close()
    again = DurableJournal(path)
    loaded = list(again.load())
    assert [(i.seq, i.topic, i.payload, i.qos, i.retain, i.handle) for i in loaded] == [
        (seqs[0], "t/1", b"one", 1, False, None),
        (seqs[1], "t/2", b"two", 2, True, None),
    ]
    assert loaded[0].properties == {"user_properties": [("k", "v")]}
    assert loaded[0].expires_at is not None
    assert abs(loaded[0].expires_at - (time.monotonic() + 60.0)) < 1.0
    assert loaded[1].expires_at is None
    again.close()


def test_the_last_removal_is_committed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.outbox.sqlite3"
    # A process that appends two, removes both, and dies without closing anything.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tars.mqtt._core.journal import DurableJournal\n"
        "from tars.mqtt._core.outgoing import Outgoing\n"
        "j = DurableJournal(Path(sys.argv[1]))\n"
        "a = j.append(Outgoing('t', b'x', 1, False, None, None))\n"
        "b = j.append(Outgoing('t', b'y', 1, False, None, None))\n"
        "j.remove(a)\n"
        "j.remove(b)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=30)
    journal = DurableJournal(path)
    assert list(journal.load()) == []  # nothing is sent again after the restart
    journal.close()


def test_a_second_process_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.outbox.sqlite3"
    journal = DurableJournal(path)
    with pytest.raises(ConfigError, match="in use by another process"):
        DurableJournal(path)
    journal.close()
