"""What this client last published retained on each topic: the service's own state.

A broker without persistence that restarts forgets every retained message. The fleet's services
used to publish their retained status again in their own reconnect loop; tars-core repairs the
link underneath them, so that loop no longer runs, and it is tars-core that puts the service's
state back (:mod:`._asyncio.retained` decides when, and only where the broker holds nothing).

Pure and cheap: one dict store per retained publish (a retained publish with an empty payload
clears the topic on the broker, so it is forgotten here too); nothing on the path of a
non-retained publish. :func:`check_filters` is the check's one rule about the service's own
subscriptions, kept here where it can be tested without a broker.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

from ._topics import TopicMatcher, split_shared, topic_matches

__all__ = ["Retained", "RetainedMemory", "check_filters"]


class Retained(NamedTuple):
    """The last retained publish on one topic, as the service made it."""

    payload: bytes
    qos: int
    properties: dict[str, Any] | None
    stamp: int  # increases with every note: an entry replaced meanwhile is not the same one


class RetainedMemory:
    """Topic -> the last retained message this client published there (non-empty payloads)."""

    __slots__ = ("_last", "_stamp")

    def __init__(self) -> None:
        self._last: dict[str, Retained] = {}
        self._stamp = 0

    def __len__(self) -> int:
        return len(self._last)

    def __repr__(self) -> str:
        return f"<RetainedMemory topics={len(self._last)}>"

    def note(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any] | None) -> None:
        """A retained publish was accepted; an empty payload clears the topic."""
        if payload:
            self._stamp += 1
            self._last[topic] = Retained(payload, qos, properties, self._stamp)
        else:
            self._last.pop(topic, None)

    def snapshot(self) -> dict[str, Retained]:
        """Every topic with its last retained message, as of now (a copy)."""
        return dict(self._last)

    def unchanged(self, topic: str, entry: Retained) -> bool:
        """True while ``entry`` is still the last retained publish on ``topic`` (not replaced,
        not cleared since it was read)."""
        return self._last.get(topic) is entry

    def clear(self) -> None:
        """Forget everything (a new life of the client: ``connect()`` after ``shutdown()``)."""
        self._last.clear()


def check_filters(
    topics: Iterable[str], taken: Collection[str], *, routed_by_topic: bool = False
) -> tuple[dict[str, str], dict[str, str]]:
    """The filter to ask the broker about each topic with, and the topics that cannot be asked.

    ``taken`` holds the client's own filters (its subscription table, internal topics
    included). Subscribing one of them would replace the service's subscription on the broker
    (MQTT 5, 3.8.4: same filter, new options and identifier) and the check's UNSUBSCRIBE would
    then delete it. So each topic is asked with the first of these that is not taken, all of
    which match the topic (MQTT 5, 4.7.1): the topic itself; ``topic/#``; the topic with its
    last level replaced by ``+`` (``a/b`` -> ``a/+``, ``/a`` -> ``/+``, ``x`` -> ``+``; not for
    a one-level ``$`` topic, which a leading wildcard does not match). When all are taken, the
    topic is not asked; nor is a topic named ``$share/...``, which as a filter would be a shared
    subscription.

    ``routed_by_topic``: the link has no subscription identifiers (MQTT 3.1.1, or a broker
    without them), so the client routes the check's messages by their topic, to every handler
    whose filter matches (a retained state handled twice, a command run twice). Then a topic
    that any taken filter matches (a shared one as its inner filter) is not asked, and the
    others are asked as themselves (no taken filter equals them).

    Returns ``({topic: filter}, {topic: why it is not asked})``, the first in the order of
    ``topics``.
    """
    asked: dict[str, str] = {}
    unasked: dict[str, str] = {}
    shared = [t for t in topics if t.startswith("$share/")]
    if shared:  # as a filter it would join a group of shared subscribers, not ask
        topics = [t for t in topics if not t.startswith("$share/")]
        for topic in shared:
            unasked[topic] = (
                "a topic named $share/... cannot be asked about: as a filter it is a shared "
                "subscription (which gets no retained messages)"
            )
    if routed_by_topic:
        heard: TopicMatcher[str] = TopicMatcher(cache_size=0)
        for topic_filter in taken:
            heard.add(split_shared(topic_filter)[1], topic_filter)
        for topic in topics:
            hearing = heard.match(topic)
            if hearing:
                unasked[topic] = (
                    "no subscription identifiers on this link: its retained message would "
                    f"reach the service's handlers of {', '.join(map(repr, sorted(hearing)))}"
                )
            else:
                asked[topic] = topic
        return asked, unasked
    for topic in topics:
        parent, slash, _ = topic.rpartition("/")
        sibling = f"{parent}/+" if slash else "+"
        candidates = [topic, f"{topic}/#"]
        if topic_matches(sibling, topic):
            candidates.append(sibling)
        free = next((f for f in candidates if f not in taken), None)
        if free is not None:
            asked[topic] = free
        else:
            quoted = [repr(f) for f in candidates]
            unasked[topic] = (
                f"the service subscribes {', '.join(quoted[:-1])} and {quoted[-1]}, every "
                "filter that could ask about it"
            )
    return asked, unasked
