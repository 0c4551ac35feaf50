"""RetainedMemory: what the client last published retained on each topic (pure)."""

from __future__ import annotations

from tars.mqtt._retained import RetainedMemory


def test_the_last_retained_publish_per_topic_is_remembered_in_publish_order() -> None:
    memory = RetainedMemory()
    memory.note("a", b"1", 1, None)
    memory.note("b", b"2", 0, {"content_type": "text/plain"})
    memory.note("a", b"3", 1, None)
    snapshot = memory.snapshot()
    assert list(snapshot) == ["a", "b"]
    assert (snapshot["a"].payload, snapshot["a"].qos) == (b"3", 1)
    assert snapshot["b"].properties == {"content_type": "text/plain"}
    assert len(memory) == 2


def test_an_empty_retained_publish_clears_the_topic() -> None:
    memory = RetainedMemory()
    memory.note("a", b"1", 1, None)
    memory.note("a", b"", 1, None)
    memory.note("never", b"", 0, None)
    assert memory.snapshot() == {}
    assert not memory


def test_an_entry_replaced_or_cleared_after_it_was_read_is_no_longer_unchanged() -> None:
    memory = RetainedMemory()
    memory.note("a", b"1", 1, None)
    memory.note("b", b"1", 1, None)
    memory.note("c", b"1", 1, None)
    read = memory.snapshot()
    memory.note("a", b"1", 1, None)  # the same bytes again: still a newer publish
    memory.note("b", b"", 1, None)
    assert not memory.unchanged("a", read["a"])
    assert not memory.unchanged("b", read["b"])
    assert memory.unchanged("c", read["c"])


def test_clear_forgets_everything() -> None:
    memory = RetainedMemory()
    memory.note("a", b"1", 1, None)
    memory.clear()
    assert memory.snapshot() == {}
