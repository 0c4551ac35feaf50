"""RetainedMemory: what the client last published retained on each topic, and the filters the
retained check asks the broker with (pure)."""

from __future__ import annotations

from tars.mqtt._retained import RetainedMemory, check_filters


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


def test_the_check_asks_with_the_topic_itself_unless_the_service_subscribes_that_filter() -> None:
    """A SUBSCRIBE of a filter the service holds would replace its subscription, and the
    check's UNSUBSCRIBE delete it: such a topic is asked with ``topic/#`` (which matches the
    topic itself), and not at all when that is the service's too."""
    topics = ["robot/mode", "robot/volume", "robot/health"]
    taken = {"robot/mode", "robot/health", "robot/health/#", "robot/#"}
    asked, unasked = check_filters(topics, taken)
    assert asked == {
        "robot/mode": "robot/mode/#",
        "robot/volume": "robot/volume",  # "robot/#" is another filter: no clash
    }
    assert unasked == ["robot/health"]


def test_with_no_subscription_of_the_service_every_topic_is_asked_as_itself() -> None:
    assert check_filters(["a", "b/c"], set()) == ({"a": "a", "b/c": "b/c"}, [])
