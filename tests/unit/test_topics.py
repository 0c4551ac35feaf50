"""Topic validation, matching and the TopicMatcher, checked against the MQTT 5 rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tars.mqtt._errors import InvalidTopicError
from tars.mqtt._topics import (
    MAX_TOPIC_BYTES,
    TopicMatcher,
    split_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

# --- validate_topic_name -------------------------------------------------------------------------

VALID_NAMES = [
    "a",
    "a/b/c",
    "/",
    "/a",
    "a/",
    "a//b",
    " ",
    "$SYS/broker/uptime",  # a client may publish to $-topics; the broker decides
    "$share/g/a",  # not special as a name
    "température/é/水",
    "a" * MAX_TOPIC_BYTES,
    "é" * (MAX_TOPIC_BYTES // 2),  # 65,534 bytes
]

INVALID_NAMES = [
    ("", "empty"),
    ("+", "wildcard"),
    ("a/+", "wildcard"),
    ("a+b", "wildcard"),
    ("#", "wildcard"),
    ("a/#", "wildcard"),
    ("a#", "wildcard"),
    ("a\0b", "NUL"),
    ("\0", "NUL"),
    ("a" * (MAX_TOPIC_BYTES + 1), "bytes"),
    ("é" * (MAX_TOPIC_BYTES // 2 + 1), "bytes"),  # 32,768 characters but 65,536 bytes
    ("a/\ud800", "UTF-8"),
]


@pytest.mark.parametrize("topic", VALID_NAMES, ids=lambda t: t[:20])
def test_valid_topic_names_pass(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize(("topic", "why"), INVALID_NAMES, ids=lambda t: t[:20])
def test_invalid_topic_names_raise(topic: str, why: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_name(topic)
    assert info.value.topic == topic
    assert why.lower() in info.value.reason.lower()
    assert isinstance(info.value, ValueError)


def test_invalid_topic_message_is_bounded_for_huge_topics() -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_name("a" * 100_000)
    assert len(str(info.value)) < 400


# MQTT 5 section 1.5.4: characters a receiver (Mosquitto does) may call a malformed packet.
FORBIDDEN_CHARACTERS = [
    *(chr(c) for c in (0x01, 0x09, 0x0A, 0x1B, 0x1F)),  # C0 controls
    *(chr(c) for c in (0x7F, 0x80, 0x85, 0x9F)),  # DEL and the C1 controls
    *(chr(c) for c in (0xFDD0, 0xFDE5, 0xFDEF)),  # the non-character block
    *(chr(plane << 16 | low) for plane in (0, 1, 2, 14, 16) for low in (0xFFFE, 0xFFFF)),
]
ALLOWED_NEIGHBOURS = ["\x20", "\x7e", "\xa0", "\ufdcf", "\ufdf0", "\ufffd", "\U0001fffd"]


@pytest.mark.parametrize("char", FORBIDDEN_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_control_and_non_characters_are_refused_in_names_and_filters(char: str) -> None:
    for validate in (validate_topic_name, validate_topic_filter):
        with pytest.raises(InvalidTopicError) as info:
            validate(f"a/{char}b")
        assert f"U+{ord(char):04X}" in info.value.reason
        assert "1.5.4" in info.value.reason
        assert "\n" not in str(info.value)  # one line, even for a newline in the topic
    with pytest.raises(InvalidTopicError):
        validate_topic_filter(f"$share/g{char}/a/#")


@pytest.mark.parametrize("char", ALLOWED_NEIGHBOURS, ids=lambda c: f"U+{ord(c):04X}")
def test_the_neighbours_of_the_forbidden_ranges_are_allowed(char: str) -> None:
    validate_topic_name(f"a/{char}")
    validate_topic_filter(f"a/{char}/#")


@given(st.text(min_size=1, max_size=20))
def test_a_topic_passes_only_without_forbidden_characters(text: str) -> None:
    control = any(c < "\x20" or "\x7f" <= c <= "\x9f" for c in text)
    non_character = any("\ufdd0" <= c <= "\ufdef" or ord(c) & 0xFFFE == 0xFFFE for c in text)
    wildcard = "+" in text or "#" in text
    surrogate = any("\ud800" <= c <= "\udfff" for c in text)
    refused = control or non_character or wildcard or surrogate
    try:
        validate_topic_name(text)
    except InvalidTopicError:
        assert refused
    else:
        assert not refused


# --- validate_topic_filter -----------------------------------------------------------------------

VALID_FILTERS = [
    "a",
    "a/b",
    "#",
    "+",
    "a/#",
    "a/+/b",
    "+/+",
    "/+",
    "+/",
    "/#",
    "+/#",
    "+/b/#",
    "a//#",
    "$SYS/#",
    "$SYS/+/x",
    "$share/g/a/#",
    "$share/g/#",
    "$share/g/+",
    "$share/g/a",
    "$share/g//",
    "$share/g/$SYS/#",
    "$sharex/a",  # not a shared subscription, just a topic level
    "$SHARE/g",  # $share is case-sensitive
    "a" * MAX_TOPIC_BYTES,
]

INVALID_FILTERS = [
    ("", "empty"),
    ("a#", "'#'"),
    ("#a", "'#'"),
    ("##", "'#'"),
    ("a/#/b", "'#'"),
    ("#/a", "'#'"),
    ("a/b#", "'#'"),
    ("a+", "'+'"),
    ("+a", "'+'"),
    ("a/++/b", "'+'"),
    ("a/+b/c", "'+'"),
    ("a\0", "NUL"),
    ("a/\ud800", "UTF-8"),
    ("a" * (MAX_TOPIC_BYTES + 1), "bytes"),
    ("$share", "$share/{group}/{filter}"),
    ("$share/", "$share/{group}/{filter}"),
    ("$share/g", "$share/{group}/{filter}"),
    ("$share/g/", "$share/{group}/{filter}"),
    ("$share//a", "group"),
    ("$share/g+/a", "group"),
    ("$share/+/a", "group"),
    ("$share/#/a", "group"),
    ("$share/g#/a", "group"),
    ("$share/g/a#", "'#'"),
    ("$share/g/a/#/b", "'#'"),
    ("$share/g/a+", "'+'"),
    ("$share/g/" + "a" * (MAX_TOPIC_BYTES - 8), "bytes"),  # the prefix counts on the wire
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS, ids=lambda t: t[:20])
def test_valid_topic_filters_pass(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(("topic_filter", "why"), INVALID_FILTERS, ids=lambda t: t[:20])
def test_invalid_topic_filters_raise(topic_filter: str, why: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.topic == topic_filter
    assert why.lower() in info.value.reason.lower()


# --- split_shared --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$share/g/a/#", ("g", "a/#")),
        ("$share/group-1/a/b/c", ("group-1", "a/b/c")),
        ("$share/g/#", ("g", "#")),
        ("$share/g//", ("g", "/")),
        ("a/#", (None, "a/#")),
        ("$SYS/#", (None, "$SYS/#")),
        ("$sharex/g/a", (None, "$sharex/g/a")),
        ("$SHARE/g/a", (None, "$SHARE/g/a")),
    ],
)
def test_split_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert split_shared(topic_filter) == expected


@pytest.mark.parametrize("topic_filter", ["$share", "$share/g", "$share/g/", "$share//a"])
def test_split_shared_refuses_malformed_share(topic_filter: str) -> None:
    with pytest.raises(InvalidTopicError):
        split_shared(topic_filter)


# --- topic_matches -------------------------------------------------------------------------------

MATCH_TABLE = [
    # exact
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/b", "a", False),
    ("a", "A", False),
    ("a//b", "a//b", True),
    ("$SYS", "$SYS", True),
    # '#' matches the parent level and any depth
    ("a/#", "a", True),
    ("a/#", "a/", True),
    ("a/#", "a/b", True),
    ("a/#", "a/b/c", True),
    ("a/#", "b", False),
    ("a/#", "ab", False),
    ("#", "a", True),
    ("#", "/", True),
    ("#", "a/b/c", True),
    ("/#", "/a", True),
    ("/#", "a", False),
    ("system/health/#", "system/health", True),
    ("system/health/#", "system/health/x", True),
    ("system/health/#", "system/healthcheck/x", False),
    ("system/health/#", "system/healthcheck", False),
    # '+' matches exactly one level, even an empty one
    ("a/+", "a/", True),
    ("a/+", "a/b", True),
    ("a/+", "a", False),
    ("a/+", "a/b/c", False),
    ("+", "a", True),
    ("+", "/", False),
    ("+/+", "/", True),
    ("/+", "/a", True),
    ("+/", "a/", True),
    ("a/+/b", "a//b", True),
    ("a/+/b", "a/x/b", True),
    ("a/+/b", "a/x/c", False),
    ("+/b/#", "a/b/c", True),
    ("+/b/#", "a/b", True),
    ("+/b/#", "a/c/b", False),
    ("+/+/#", "a", False),
    ("+/+/#", "a/b", True),
    # wildcards at the first level never match $-topics
    ("#", "$SYS/x", False),
    ("#", "$SYS", False),
    ("+", "$SYS", False),
    ("+/x", "$SYS/x", False),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/+", "$SYS/x", True),
    ("$SYS/+/#", "$SYS/x/y", True),
    ("a/#", "a/$x", True),  # the $-rule is about the first level only
    ("a/+", "a/$x", True),
    # shared subscriptions match as their inner filter
    ("$share/g/a/#", "a/b", True),
    ("$share/g/a", "a", True),
    ("$share/g/a", "$share/g/a", False),
    ("$share/g/#", "$SYS/x", False),
    ("$share/g/$SYS/#", "$SYS/x", True),
    ("$share/g/+/b", "a/b", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_TABLE)
def test_matcher_agrees_with_match_table(topic_filter: str, topic: str, expected: bool) -> None:
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add(topic_filter, "v")
    assert matcher.match(topic) == (["v"] if expected else [])


# --- TopicMatcher --------------------------------------------------------------------------------


def test_empty_matcher_matches_nothing() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    assert len(matcher) == 0
    assert matcher.match("a/b") == []
    assert matcher.match("$SYS/x") == []


def test_match_returns_values_in_insertion_order_across_exact_and_wildcard() -> None:
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add("a/#", "first")
    matcher.add("a/b", "second")
    matcher.add("+/b", "third")
    matcher.add("a/c", "other")
    matcher.add("a/b", "fourth")
    assert matcher.match("a/b") == ["first", "second", "third", "fourth"]
    assert matcher.match("a/c") == ["first", "other"]
    assert len(matcher) == 5


def test_a_value_under_two_matching_filters_appears_once_at_its_first_match() -> None:
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add("x/y", "A")  # does not match a/b: does not decide A's place
    matcher.add("a/b", "B")
    matcher.add("a/+", "A")
    matcher.add("a/#", "A")
    matcher.add("#", "B")
    assert matcher.match("a/b") == ["B", "A"]


def test_values_need_not_be_hashable_and_compare_by_equality() -> None:
    matcher: TopicMatcher[dict[str, int]] = TopicMatcher()
    matcher.add("a/+", {"n": 1})
    matcher.add("a/b", {"n": 1})
    matcher.add("a/#", {"n": 2})
    assert matcher.match("a/b") == [{"n": 1}, {"n": 2}]
    assert matcher.remove("a/b", {"n": 1}) is True


def test_equal_hashable_values_are_one_value() -> None:
    matcher: TopicMatcher[tuple[str, str]] = TopicMatcher()
    matcher.add("a/#", ("client", "a/#"))
    matcher.add("a/b", ("other", "a/b"))
    matcher.add("+/b", ("client", "a/#"))  # equal, not identical
    assert matcher.match("a/b") == [("client", "a/#"), ("other", "a/b")]


def test_add_refuses_invalid_filters_and_keeps_state() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    matcher.add("a/+", 1)
    for bad in ("", "a/#/b", "a+", "$share/g", "a\0"):
        with pytest.raises(InvalidTopicError):
            matcher.add(bad, 2)
    assert len(matcher) == 1
    assert matcher.match("a/b") == [1]


def test_remove_reports_whether_it_removed() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    matcher.add("a/+", 1)
    matcher.add("a/b", 2)
    assert matcher.remove("a/+", 2) is False  # wrong value
    assert matcher.remove("a/#", 1) is False  # filter never added
    assert matcher.remove("a/c", 2) is False
    assert matcher.remove("a/+/c", 1) is False  # deeper than anything stored
    assert matcher.remove("x/+", 1) is False
    assert matcher.remove("", 1) is False
    assert matcher.remove("$share/g", 1) is False  # invalid filters: False, not an error
    assert len(matcher) == 2
    assert matcher.remove("a/+", 1) is True
    assert matcher.remove("a/+", 1) is False
    assert len(matcher) == 1
    assert matcher.match("a/b") == [2]
    assert matcher.remove("a/b", 2) is True
    assert len(matcher) == 0
    assert matcher.match("a/b") == []


def test_duplicate_pairs_are_counted_and_removed_one_at_a_time() -> None:
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add("a/#", "v")
    matcher.add("a/#", "v")
    assert len(matcher) == 2
    assert matcher.match("a/b") == ["v"]
    assert matcher.remove("a/#", "v") is True
    assert matcher.match("a/b") == ["v"]
    assert matcher.remove("a/#", "v") is True
    assert matcher.match("a/b") == []


def test_add_and_remove_invalidate_cached_results() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    matcher.add("a/b", 1)
    assert matcher.match("a/b") == [1]
    matcher.add("a/#", 2)
    assert matcher.match("a/b") == [1, 2]
    matcher.add("+/b", 3)
    assert matcher.match("a/b") == [1, 2, 3]
    assert matcher.remove("a/b", 1) is True
    assert matcher.match("a/b") == [2, 3]
    assert matcher.remove("a/#", 2) is True
    assert matcher.match("a/b") == [3]


def test_shared_filters_match_as_their_inner_filter_and_are_removed_by_full_name() -> None:
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add("$share/g/a/+", "shared")
    matcher.add("$share/g/a/b", "shared-exact")
    matcher.add("a/+", "plain")
    assert matcher.match("a/b") == ["shared", "shared-exact", "plain"]
    assert matcher.remove("a/+", "shared") is False
    assert matcher.remove("a/b", "shared-exact") is False
    assert matcher.remove("$share/h/a/+", "shared") is False
    assert matcher.remove("$share/g/a/+", "shared") is True
    assert matcher.remove("$share/g/a/b", "shared-exact") is True
    assert matcher.match("a/b") == ["plain"]


def test_dollar_topics_only_match_filters_that_name_their_first_level() -> None:
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add("#", "all")
    matcher.add("+/x", "plus")
    matcher.add("$SYS/#", "sys")
    matcher.add("$SYS/x", "exact")
    assert matcher.match("$SYS/x") == ["sys", "exact"]
    assert matcher.match("SYS/x") == ["all", "plus"]


def test_returned_list_belongs_to_the_caller() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    matcher.add("a/#", 1)
    first = matcher.match("a/b")
    first.append(99)
    first.clear()
    assert matcher.match("a/b") == [1]


@pytest.mark.parametrize("cache_size", [0, 1, 2])
def test_results_stay_right_when_the_cache_overflows(cache_size: int) -> None:
    matcher: TopicMatcher[str] = TopicMatcher(cache_size=cache_size)
    matcher.add("a/+", "plus")
    matcher.add("a/b", "exact")
    for _ in range(3):
        for topic, expected in (("a/b", ["plus", "exact"]), ("a/c", ["plus"]), ("b", [])):
            assert matcher.match(topic) == expected


def test_negative_cache_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        TopicMatcher(cache_size=-1)


def test_removing_filters_leaves_remaining_branches_intact() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    matcher.add("a/+/c/#", 1)
    matcher.add("a/+/d", 2)
    matcher.add("a/b/+", 3)
    assert matcher.remove("a/+/c/#", 1) is True
    assert matcher.match("a/x/d") == [2]
    assert matcher.match("a/b/d") == [2, 3]
    assert matcher.remove("a/+/d", 2) is True
    assert matcher.match("a/b/d") == [3]
    assert matcher.match("a/x/c") == []
    matcher.add("a/+/c/#", 4)  # re-adding into a pruned branch works
    assert matcher.match("a/x/c/y") == [4]


# --- property tests ------------------------------------------------------------------------------

LEVELS = st.sampled_from(["a", "b", "", "$SYS", "$x", "ab"])
TOPICS = st.lists(LEVELS, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(LEVELS, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    text = "/".join(levels)
    if not text:
        text = "+"
    if draw(st.integers(0, 5)) == 0:
        text = "$share/g/" + text
    return text


def _dedupe(values: list[int]) -> list[int]:
    out: list[int] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _oracle(topic_filter: str, topic: str) -> bool:
    """An independent statement of the rules, as a regular expression."""
    _, inner = split_shared(topic_filter)
    if topic.startswith("$") and inner[:1] in ("+", "#"):
        return False
    if inner == "#":
        return True
    pattern = ""
    levels = inner.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            pattern += "(/.*)?"
            break
        sep = "/" if index else ""
        pattern += sep + ("[^/]*" if level == "+" else re.escape(level))
    return re.fullmatch(pattern, topic, flags=re.DOTALL) is not None


@given(topic_filter=topic_filters(), topic=TOPICS)
def test_topic_matches_agrees_with_a_regex_oracle(topic_filter: str, topic: str) -> None:
    validate_topic_filter(topic_filter)
    validate_topic_name(topic)
    assert topic_matches(topic_filter, topic) is _oracle(topic_filter, topic)


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "add", "remove"]), topic_filters(), st.integers(0, 4)),
    max_size=25,
)


@given(
    ops=OPS,
    topics=st.lists(TOPICS, min_size=1, max_size=6),
    cache_size=st.sampled_from([0, 1, 4096]),
)
def test_matcher_agrees_with_brute_force(
    ops: list[tuple[str, str, int]], topics: list[str], cache_size: int
) -> None:
    matcher: TopicMatcher[int] = TopicMatcher(cache_size=cache_size)
    entries: list[tuple[str, int]] = []
    for op, topic_filter, value in ops:
        if op == "add":
            matcher.add(topic_filter, value)
            entries.append((topic_filter, value))
        else:
            present = (topic_filter, value) in entries
            assert matcher.remove(topic_filter, value) is present
            if present:
                entries.remove((topic_filter, value))
        assert len(matcher) == len(entries)
        for topic in topics:
            expected = _dedupe([v for f, v in entries if topic_matches(f, topic)])
            assert matcher.match(topic) == expected
            assert matcher.match(topic) == expected  # the cached answer too


@given(
    levels=st.lists(st.text(alphabet="ab$é ", max_size=3), min_size=1, max_size=5).filter(
        lambda levels: levels != [""]
    )
)
def test_a_topic_matches_itself_hash_and_plus_variants(levels: list[str]) -> None:
    topic = "/".join(levels)
    dollar = topic.startswith("$")
    matcher: TopicMatcher[str] = TopicMatcher()
    expected: list[str] = []

    def check(topic_filter: str, should_match: bool) -> None:
        assert topic_matches(topic_filter, topic) is should_match, topic_filter
        matcher.add(topic_filter, topic_filter)
        if should_match and topic_filter not in expected:
            expected.append(topic_filter)

    check(topic, True)
    check("#", not dollar)
    for index in range(len(levels)):
        replaced = [*levels[:index], "+", *levels[index + 1 :]]
        check("/".join(replaced), not (dollar and index == 0))
        prefix = "/".join([*levels[:index], "#"])
        check(prefix, not (dollar and index == 0))
    check("$share/g/" + topic, True)
    assert matcher.match(topic) == expected
