"""Who gets a message: subscriptions, shared groups and retained messages. Pure, no I/O.

Matching uses the client's own :class:`~tars.mqtt._topics.TopicMatcher`, so the broker and the
client can never disagree on what a filter means (``$``-topics, ``#`` matching its parent...).

Choices where MQTT 5 leaves room (section 3.3.4):

- A client whose non-shared subscriptions overlap gets one copy of a message per matching
  subscription, each at that subscription's QoS, with its options (retain-as-published) and
  its subscription id, as Mosquitto does. (One merged copy at the highest QoS would be allowed
  too, but a handler on a QoS 0 filter would then see QoS 2 here and QoS 0 in production, and
  a QoS 0 filter's copies would be queued for an absent client: the contract suite checks
  that both brokers agree.)
- A shared subscription ``$share/{group}/{filter}`` gives each message to one member of the
  group, round robin over the members that are connected; when none is, round robin over all
  members (the message then waits in that member's session). A shared subscription is a
  separate entry: a client also subscribed without ``$share`` gets its own copy as well.
- Retained messages are never sent because of a shared subscription (MQTT 5, 4.8.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .._topics import TopicMatcher, split_shared, topic_matches
from ._broker_session import BrokerSubscription, Delivery, StoredMessage

__all__ = ["Router"]


class _SharedGroup:
    """The members of one ``$share/{group}/{filter}``, in joining order, with a cursor."""

    __slots__ = ("cursor", "members")

    def __init__(self) -> None:
        self.members: dict[str, BrokerSubscription] = {}
        self.cursor = 0

    def pick(self, online: Callable[[str], bool]) -> tuple[str, BrokerSubscription]:
        ids = list(self.members)
        count = len(ids)
        start = self.cursor % count
        chosen = start
        for step in range(count):
            index = (start + step) % count
            if online(ids[index]):
                chosen = index
                break
        self.cursor = chosen + 1
        client_id = ids[chosen]
        return client_id, self.members[client_id]


class Router:
    """Subscriptions of every session and the retained messages of the broker."""

    def __init__(self) -> None:
        self._by_client: dict[str, dict[str, BrokerSubscription]] = {}
        self._direct: TopicMatcher[tuple[str, str]] = TopicMatcher()
        self._shared: TopicMatcher[tuple[str, str]] = TopicMatcher()
        self._groups: dict[tuple[str, str], _SharedGroup] = {}
        self._retained: dict[str, StoredMessage] = {}

    # -- subscriptions -------------------------------------------------------------------------

    def subscriptions(self, client_id: str) -> list[str]:
        return list(self._by_client.get(client_id, ()))

    def has(self, client_id: str, topic_filter: str) -> bool:
        return topic_filter in self._by_client.get(client_id, {})

    def add(self, client_id: str, subscription: BrokerSubscription) -> None:
        """Add or replace (same filter) a subscription; the filter must already be valid."""
        topic_filter = subscription.topic_filter
        mine = self._by_client.setdefault(client_id, {})
        existed = topic_filter in mine
        mine[topic_filter] = subscription
        group, inner = split_shared(topic_filter)
        if group is None:
            if not existed:
                self._direct.add(topic_filter, (client_id, topic_filter))
            return
        key = (group, inner)
        shared = self._groups.get(key)
        if shared is None:
            shared = self._groups[key] = _SharedGroup()
            self._shared.add(inner, key)
        shared.members[client_id] = subscription

    def remove(self, client_id: str, topic_filter: str) -> bool:
        mine = self._by_client.get(client_id)
        if mine is None or mine.pop(topic_filter, None) is None:
            return False
        if not mine:
            del self._by_client[client_id]
        group, inner = split_shared(topic_filter)
        if group is None:
            self._direct.remove(topic_filter, (client_id, topic_filter))
            return True
        key = (group, inner)
        shared = self._groups[key]
        del shared.members[client_id]
        if not shared.members:
            del self._groups[key]
            self._shared.remove(inner, key)
        return True

    def remove_client(self, client_id: str) -> None:
        for topic_filter in self.subscriptions(client_id):
            self.remove(client_id, topic_filter)

    # -- routing -------------------------------------------------------------------------------

    def route(
        self, message: StoredMessage, online: Callable[[str], bool]
    ) -> list[tuple[str, Delivery]]:
        """The deliveries of one message: (client id, delivery) pairs (see the module rules)."""
        deliveries: list[tuple[str, Delivery]] = []
        for client_id, topic_filter in self._direct.match(message.topic):
            subscription = self._by_client[client_id][topic_filter]
            if subscription.no_local and client_id == message.publisher:
                continue
            deliveries.append((client_id, _delivery(message, subscription)))
        for key in self._shared.match(message.topic):
            client_id, subscription = self._groups[key].pick(online)
            deliveries.append((client_id, _delivery(message, subscription)))
        return deliveries

    # -- retained messages ---------------------------------------------------------------------

    def retain(self, message: StoredMessage) -> None:
        """Store a retained message; an empty payload clears the topic (MQTT 5, 3.3.1.3)."""
        if message.payload:
            self._retained[message.topic] = message
        else:
            self._retained.pop(message.topic, None)

    def retained(self, topic: str) -> StoredMessage | None:
        return self._retained.get(topic)

    def retained_matching(self, topic_filter: str, now: float) -> Iterator[StoredMessage]:
        """Retained messages a new subscription to ``topic_filter`` receives (expired dropped)."""
        for topic, message in list(self._retained.items()):
            if message.expired(now):
                del self._retained[topic]
            elif topic_matches(topic_filter, topic):
                yield message

    def clear_retained(self) -> None:
        self._retained.clear()


def _delivery(message: StoredMessage, subscription: BrokerSubscription) -> Delivery:
    retain = message.retain and subscription.retain_as_published
    sid = subscription.subscription_id
    return Delivery(
        message, min(message.qos, subscription.qos), retain, () if sid is None else (sid,)
    )
