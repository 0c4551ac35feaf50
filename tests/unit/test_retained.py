"""RetainedMemory: what the client last published retained on each topic, and the filters the
retained check asks the broker with (pure)."""

from __future__ import annotations

import pytest

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
    topic itself), else with its last level as ``+`` (which matches it too)."""
    topics = ["robot/mode", "robot/volume", "robot/health"]
    taken = {"robot/mode", "robot/health", "robot/health/#", "robot/#"}
    asked, unasked = check_filters(topics, taken)
    assert asked == {
        "robot/mode": "robot/mode/#",
        "robot/volume": "robot/volume",  # "robot/#" is another filter: no clash
        "robot/health": "robot/+",
    }
    assert unasked == {}


def test_a_one_level_topic_is_asked_with_plus_unless_it_starts_with_a_dollar() -> None:
    """``+`` in the first level matches no ``$`` topic (MQTT 5, 4.7.2): ``$x`` has no third
    filter to ask with."""
    asked, unasked = check_filters(["x", "/a", "$x"], {"x", "x/#", "/a", "/a/#", "$x", "$x/#"})
    assert asked == {"x": "+", "/a": "/+"}
    assert list(unasked) == ["$x"]
    assert "'$x' and '$x/#'" in unasked["$x"]


def test_a_topic_whose_three_filters_are_all_the_services_is_not_asked() -> None:
    topics = ["a/b", "c"]
    taken = {"a/b", "a/b/#", "a/+", "c", "c/#", "+"}
    asked, unasked = check_filters(topics, taken)
    assert asked == {}
    assert list(unasked) == ["a/b", "c"]
    assert "'a/b', 'a/b/#' and 'a/+'" in unasked["a/b"]


def test_routed_by_topic_a_topic_any_filter_of_the_service_matches_is_not_asked() -> None:
    """Routed by topic, the check's copies would reach the service's handlers whose filters
    match (shared subscriptions matched as their inner filter, ``#`` matching the parent level
    and no ``$`` topic): those topics are not asked, the others are asked as themselves."""
    topics = ["x/mode", "x", "y/z", "hb", "s/t", "free/a", "$SYS/up"]
    taken = {"x/#", "$share/g/s/+", "hb", "y/z", "free/b"}
    asked, unasked = check_filters(topics, taken, routed_by_topic=True)
    assert asked == {"free/a": "free/a", "$SYS/up": "$SYS/up"}
    assert list(unasked) == ["x/mode", "x", "y/z", "hb", "s/t"]
    assert "'x/#'" in unasked["x/mode"]
    assert "'$share/g/s/+'" in unasked["s/t"]
    assert all("no subscription identifiers" in why for why in unasked.values())
    asked, unasked = check_filters(["$SYS/up", "a"], {"#"}, routed_by_topic=True)
    assert (asked, list(unasked)) == ({"$SYS/up": "$SYS/up"}, ["a"])


def test_with_no_subscription_of_the_service_every_topic_is_asked_as_itself() -> None:
    assert check_filters(["a", "b/c"], set()) == ({"a": "a", "b/c": "b/c"}, {})
    assert check_filters(["a"], set(), routed_by_topic=True) == ({"a": "a"}, {})


@pytest.mark.parametrize("routed_by_topic", [False, True])
def test_a_topic_named_like_a_shared_subscription_is_not_asked(routed_by_topic: bool) -> None:
    """As a filter, ``$share/g/t`` would join group ``g`` on ``t`` (taking a share of its live
    messages, and no retained one): the check would see nothing and re-publish over a state the
    broker holds."""
    asked, unasked = check_filters(["$share/g/t", "a/b"], (), routed_by_topic=routed_by_topic)
    assert asked == {"a/b": "a/b"}
    assert list(unasked) == ["$share/g/t"]
    assert "shared subscription" in unasked["$share/g/t"]
