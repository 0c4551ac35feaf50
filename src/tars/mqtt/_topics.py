"""MQTT 5 topic rules: validation, matching, shared subscriptions and a fast matcher.

Everything here is pure and synchronous. :class:`TopicMatcher` sits on the receive path of every
message, so it precompiles its filters (exact filters in a dict, wildcard filters in a trie keyed
by level) and caches the answer per topic; the free function :func:`topic_matches` is the
reference the matcher is tested against.

The rules followed (MQTT 5.0, section 4.7):

- a topic name has no wildcard and at most 65,535 bytes of UTF-8;
- neither a name nor a filter holds a character that MQTT 5 (section 1.5.4) lets a receiver
  treat as a malformed packet: U+0000, the control characters U+0001..U+001F and
  U+007F..U+009F, and the Unicode non-characters (U+FDD0..U+FDEF, and U+xFFFE / U+xFFFF of every
  plane). Mosquitto drops the link on one, so a QoS 1 message carrying it would be resent on
  every new link and take the client offline for good: it is refused at the call instead;
- ``#`` must be the whole last level of a filter and also matches the parent level
  (``a/#`` matches ``a``); ``+`` must be a whole level and matches exactly one level, even an
  empty one (``a/+`` matches ``a/``);
- a filter whose first character is a wildcard never matches a topic starting with ``$``, so
  ``#`` does not see ``$SYS/...`` but ``$SYS/#`` does;
- ``$share/{group}/{filter}`` is a shared subscription: it matches as ``{filter}``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Generic, TypeVar

from ._argcheck import check_str, wrong_type
from ._errors import InvalidArgumentError, InvalidTopicError

__all__ = [
    "MAX_TOPIC_BYTES",
    "TopicMatcher",
    "forbidden_character",
    "split_shared",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]

MAX_TOPIC_BYTES = 65535
"""The largest topic name or filter MQTT can carry: a two-byte length prefix."""

_SHARE = "$share"


# The characters of MQTT 5 section 1.5.4 that a receiver may call malformed, as searches: a
# clean topic costs one C-level scan. The class stays small (ranges of the Basic Multilingual
# Plane: `re` scans such a class fast, a class listing the 32 astral non-characters made every
# search several times slower); a topic with characters beyond U+FFFF (rare) gets a second
# scan for those. Compiled on first use: the BMP class takes about 1 ms to compile, and a
# printable string (nearly every one) is cleared without them.
@functools.cache
def _searches() -> tuple[re.Pattern[str], re.Pattern[str]]:
    return (
        re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]"),
        re.compile("[\U00010000-\U0010ffff]"),
    )


def _find_forbidden(text: str) -> re.Match[str] | None:
    forbidden_bmp, astral_chars = _searches()
    found = forbidden_bmp.search(text)
    if found is not None or text.isascii():
        return found
    for astral in astral_chars.finditer(text):
        if ord(astral.group()) & 0xFFFE == 0xFFFE:  # U+xFFFE or U+xFFFF of planes 1-16
            return astral
    return None


T = TypeVar("T")


def forbidden_character(text: str) -> str | None:
    """The reason ``text`` breaks MQTT 5 section 1.5.4 (a control or non-character), or None.

    Shared with the testing kit's broker, which refuses the same characters as Mosquitto.
    """
    if text.isprintable():
        # Every forbidden character is a control (Cc) or a non-character (Cn): none is
        # printable, so one C-level pass clears nearly every string.
        return None
    found = _find_forbidden(text)
    if found is None:
        return None
    char = found.group()
    code = ord(char)
    if code == 0:
        return "must not contain the NUL character (U+0000)"
    kind = "control character" if code <= 0x9F else "Unicode non-character"
    return (
        f"must not contain the {kind} U+{code:04X} at index {found.start()}"
        " (MQTT 5 section 1.5.4: a broker may treat it as a malformed packet)"
    )


def _check_common(topic: str, name: str) -> None:
    """Apply the rules shared by names and filters: a str, non-empty, no forbidden character,
    encodable and short."""
    if not isinstance(topic, str):
        raise wrong_type(name, topic, "a str")
    if not topic:
        raise InvalidTopicError(topic, "must not be empty")
    reason = forbidden_character(topic)
    if reason is not None:
        raise InvalidTopicError(topic, reason)
    if topic.isascii():
        size = len(topic)
    else:
        # Encoding (rather than estimating from len()) also catches lone surrogates, which are
        # not valid UTF-8 and which a broker would refuse with a protocol error.
        try:
            size = len(topic.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidTopicError(topic, "is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_TOPIC_BYTES:
        raise InvalidTopicError(topic, f"is {size} bytes of UTF-8, over {MAX_TOPIC_BYTES}")


def validate_topic_name(topic: str) -> None:
    """Check a topic name to publish to.

    Names starting with ``$`` are accepted: MQTT leaves it to the broker whether a client may
    publish there.

    Raises:
        InvalidArgumentTypeError: not a ``str``.
        InvalidTopicError: empty, contains ``+`` or ``#``, a control character (U+0000..U+001F,
            U+007F..U+009F) or a Unicode non-character, is not valid UTF-8 or is longer than
            65,535 bytes of UTF-8.
    """
    _check_common(topic, "topic")
    if "+" in topic or "#" in topic:
        raise InvalidTopicError(topic, "a topic name must not contain the wildcards '+' or '#'")


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split a shared subscription into ``(group, filter)``; ``(None, filter)`` when not shared.

    ``"$share/g/a/#"`` gives ``("g", "a/#")``. Only the ``$share`` structure is checked here;
    :func:`validate_topic_filter` also checks the inner filter.

    Raises:
        InvalidTopicError: the first level is ``$share`` but the group is empty or contains a
            wildcard, or no filter follows it.
    """
    if topic_filter.partition("/")[0] != _SHARE:
        return None, topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise InvalidTopicError(topic_filter, "a shared subscription is $share/{group}/{filter}")
    group = parts[1]
    if not group:
        raise InvalidTopicError(topic_filter, "the share group name must not be empty")
    if "+" in group or "#" in group:
        raise InvalidTopicError(topic_filter, "the share group name must not contain '+' or '#'")
    return group, parts[2]


def validate_topic_filter(topic_filter: str) -> None:
    """Check a topic filter to subscribe to, including ``$share/{group}/{filter}``.

    Raises:
        InvalidArgumentTypeError: not a ``str``.
        InvalidTopicError: empty, ``#`` anywhere but alone in the last level, ``+`` not alone in
            its level, a control or non-character (as for names), not valid UTF-8, longer than
            65,535 bytes of UTF-8, or a
            malformed shared subscription.
    """
    _check_common(topic_filter, "topic_filter")
    _, inner = split_shared(topic_filter)
    if "+" not in inner and "#" not in inner:
        return
    levels = inner.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise InvalidTopicError(
                topic_filter, "'#' must be alone in the last level (e.g. 'a/#')"
            )
        if "+" in level and level != "+":
            raise InvalidTopicError(topic_filter, "'+' must be alone in its level (e.g. 'a/+/b')")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Tell whether a (valid) topic filter matches a (valid) topic name.

    ``$share/{group}/{filter}`` matches as ``{filter}``. The arguments are not validated: call
    :func:`validate_topic_filter` / :func:`validate_topic_name` first when they come from outside.

    Raises:
        InvalidArgumentTypeError: an argument is not a ``str``.
    """
    if type(topic_filter) is not str or type(topic) is not str:  # one comparison each, usually
        check_str("topic_filter", topic_filter)
        check_str("topic", topic)
    if topic_filter.startswith(_SHARE):
        topic_filter = split_shared(topic_filter)[1]
    if topic[:1] == "$" and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    n_topic = len(topic_levels)
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= n_topic or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == n_topic


class _Entry(Generic[T]):
    """One ``add()``: the filter as given, its value, and its rank in insertion order."""

    __slots__ = ("seq", "topic_filter", "value")

    def __init__(self, seq: int, topic_filter: str, value: T) -> None:
        self.seq = seq
        self.topic_filter = topic_filter
        self.value = value


class _Node(Generic[T]):
    """A trie node for one level of the wildcard filters."""

    __slots__ = ("children", "ends", "hash_ends", "plus")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.plus: _Node[T] | None = None
        self.ends: list[_Entry[T]] = []  # filters that end exactly here
        self.hash_ends: list[_Entry[T]] = []  # filters that end with '#' below this node

    def is_empty(self) -> bool:
        return not (self.children or self.plus or self.ends or self.hash_ends)


def _same(a: object, b: object) -> bool:
    return a is b or a == b


class TopicMatcher(Generic[T]):
    """Map topic filters to values and find the values whose filter matches a topic.

    Built for the receive path: exact filters are a dict lookup, wildcard filters live in a trie
    walked once per topic, and each topic's answer is cached (up to ``cache_size`` topics, the
    cache is emptied when full and on every :meth:`add` / :meth:`remove`). Values are compared
    with ``is`` then ``==``, like ``list.remove``, so they need not be hashable.
    """

    __slots__ = ("_cache", "_cache_size", "_count", "_exact", "_root", "_seq")

    def __init__(self, cache_size: int = 4096) -> None:
        if cache_size < 0:
            raise InvalidArgumentError("cache_size must be >= 0")
        self._cache_size = cache_size
        self._cache: dict[str, list[T]] = {}
        self._exact: dict[str, list[_Entry[T]]] = {}
        self._root: _Node[T] = _Node()
        self._seq = 0
        self._count = 0

    def __len__(self) -> int:
        """The number of (filter, value) entries: one per :meth:`add` not yet removed."""
        return self._count

    def add(self, topic_filter: str, value: T) -> None:
        """Add ``value`` under ``topic_filter`` (adding the same pair twice stores it twice).

        Raises:
            InvalidTopicError: the filter breaks the MQTT rules.
        """
        validate_topic_filter(topic_filter)
        entry = _Entry(self._seq, topic_filter, value)
        self._seq += 1
        inner = split_shared(topic_filter)[1]
        if "+" not in inner and "#" not in inner:
            self._exact.setdefault(inner, []).append(entry)
        else:
            node = self._root
            for level in inner.split("/"):
                if level == "#":
                    node.hash_ends.append(entry)
                    break
                if level == "+":
                    if node.plus is None:
                        node.plus = _Node()
                    node = node.plus
                else:
                    node = node.children.setdefault(level, _Node())
            else:
                node.ends.append(entry)
        self._count += 1
        self._cache.clear()

    def remove(self, topic_filter: str, value: T) -> bool:
        """Remove the oldest entry of ``value`` under exactly ``topic_filter``.

        Returns:
            True if an entry was removed, False if there was none (never raises for a filter
            that was not added, valid or not).
        """
        try:
            inner = split_shared(topic_filter)[1]
        except InvalidTopicError:
            return False
        if "+" not in inner and "#" not in inner:
            entries = self._exact.get(inner)
            if entries is None or not _drop(entries, topic_filter, value):
                return False
            if not entries:
                del self._exact[inner]
        elif not self._remove_wild(inner.split("/"), topic_filter, value):
            return False
        self._count -= 1
        self._cache.clear()
        return True

    def _remove_wild(self, levels: list[str], topic_filter: str, value: T) -> bool:
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for level in levels:
            if level == "#":
                if not _drop(node.hash_ends, topic_filter, value):
                    return False
                break
            child = node.plus if level == "+" else node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        else:
            if not _drop(node.ends, topic_filter, value):
                return False
        # Prune the branch bottom-up so churning filters do not leave dead nodes behind.
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            if level == "+":
                parent.plus = None
            else:
                del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> list[T]:
        """The values whose filter matches ``topic``: each value once, in insertion order.

        The order is that of the earliest matching ``add()``. The returned list is the caller's
        to keep or change. ``topic`` is not validated (it comes from the broker).
        """
        cached = self._cache.get(topic)
        if cached is not None:
            return cached.copy()
        found = self._collect(topic)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        if self._cache_size:
            self._cache[topic] = found
        return found.copy()

    def _collect(self, topic: str) -> list[T]:
        entries: list[_Entry[T]] = []
        exact = self._exact.get(topic)
        if exact is not None:
            entries.extend(exact)
        root = self._root
        if root.children or root.plus is not None or root.hash_ends:
            levels = topic.split("/")
            if topic[:1] == "$":
                # Wildcards in the first level never match a $-topic: skip '+' and '#' at root.
                child = root.children.get(levels[0])
                if child is not None:
                    _walk(child, levels, 1, entries)
            else:
                _walk(root, levels, 0, entries)
        if len(entries) == 1:
            return [entries[0].value]
        entries.sort(key=_seq_of)
        return _unique([entry.value for entry in entries])


def _seq_of(entry: _Entry[T]) -> int:
    return entry.seq


def _unique(values: list[T]) -> list[T]:
    """``values`` without repeats, first occurrence kept (``is`` or ``==``, like a set)."""
    out: list[T] = []
    seen: set[Any] = set()
    try:
        for value in values:
            if value not in seen:
                seen.add(value)
                out.append(value)
    except TypeError:  # unhashable values: compare pairwise (quadratic, but only here)
        out.clear()
        for value in values:
            if not any(_same(value, kept) for kept in out):
                out.append(value)
    return out


def _drop(entries: list[_Entry[T]], topic_filter: str, value: T) -> bool:
    for index, entry in enumerate(entries):
        if entry.topic_filter == topic_filter and _same(entry.value, value):
            del entries[index]
            return True
    return False


def _walk(node: _Node[T], levels: list[str], index: int, out: list[_Entry[T]]) -> None:
    """Collect the entries of ``node``'s subtree that match ``levels[index:]``."""
    # A '#' below this node matches whatever is left, including nothing (the parent level).
    out.extend(node.hash_ends)
    if index == len(levels):
        out.extend(node.ends)
        return
    child = node.children.get(levels[index])
    if child is not None:
        _walk(child, levels, index + 1, out)
    if node.plus is not None:
        _walk(node.plus, levels, index + 1, out)
