"""Routing: from a received PUBLISH to the subscriptions (and internal consumers) it is for.

Several subscriptions may share one MQTT topic filter; the broker sees one MQTT subscription per
filter (at the highest QoS asked, see :mod:`._subtable`), tagged with a subscription identifier,
so a message that matches several overlapping filters still reaches each subscription exactly
once. The identifiers are the session table's; the dispatcher only maps them to subscriptions.
"""

from __future__ import annotations

from collections.abc import Callable

from mqtt5 import PublishPacket

from ._message import Message
from ._subscription import Subscription
from ._topics import TopicMatcher, split_shared

__all__ = ["Dispatcher"]


class Dispatcher:
    """Routes received PUBLISH packets to subscriptions.

    When the broker echoes subscription identifiers in a PUBLISH, routing is a dict lookup per
    identifier; brokers without identifiers fall back to the topic matcher.
    """

    def __init__(self) -> None:
        self._by_filter: dict[str, list[Subscription]] = {}
        self._by_id: dict[int, str] = {}
        self._matcher: TopicMatcher[Subscription] = TopicMatcher()
        self._internal: dict[str, Callable[[Message], None]] = {}
        self._internal_by_id: dict[int, Callable[[Message], None]] = {}
        self.unmatched = 0

    def subscriptions(self, topic_filter: str | None = None) -> list[Subscription]:
        """Every subscription, or those on ``topic_filter``."""
        if topic_filter is None:
            return [s for subs in self._by_filter.values() for s in subs]
        return list(self._by_filter.get(topic_filter, ()))

    def add(self, sub: Subscription, sid: int | None) -> None:
        """Route ``sub``'s filter (tagged ``sid`` by the broker) to it too."""
        topic_filter = sub.topic_filter
        subs = self._by_filter.setdefault(topic_filter, [])
        if sid is not None:
            self._by_id[sid] = topic_filter
        subs.append(sub)
        self._matcher.add(split_shared(topic_filter)[1], sub)

    def remove(self, sub: Subscription) -> bool:
        """Stop routing to ``sub``; True when its filter has no subscription left."""
        subs = self._by_filter.get(sub.topic_filter)
        if not subs or sub not in subs:
            return False
        subs.remove(sub)
        self._matcher.remove(split_shared(sub.topic_filter)[1], sub)
        if subs:
            return False
        del self._by_filter[sub.topic_filter]
        for sid in [i for i, f in self._by_id.items() if f == sub.topic_filter]:
            del self._by_id[sid]
        return True

    def add_internal(self, topic: str, sid: int, callback: Callable[[Message], None]) -> None:
        """A synchronous, queue-less consumer of one exact topic, for the client's own use
        (the heartbeat echo, request answers)."""
        self._internal[topic] = callback
        self._internal_by_id[sid] = callback

    # --- hot path ------------------------------------------------------------------------------

    def on_packet(self, packet: PublishPacket) -> None:
        """The link's message listener: route one PUBLISH."""
        ids = packet.subscription_ids
        internal: Callable[[Message], None] | None = None
        if ids:
            if self._internal_by_id:
                for sid in ids:
                    internal = self._internal_by_id.get(sid) or internal
            by_id, by_filter = self._by_id, self._by_filter
            if len(ids) == 1:
                topic_filter = by_id.get(ids[0])
                targets = by_filter.get(topic_filter, ()) if topic_filter is not None else ()
            else:
                seen: list[Subscription] = []
                for sid in ids:
                    topic_filter = by_id.get(sid)
                    if topic_filter is not None:
                        for sub in by_filter.get(topic_filter, ()):
                            if sub not in seen:
                                seen.append(sub)
                targets = seen
        else:
            targets = self._matcher.match(packet.topic)
            if self._internal:
                internal = self._internal.get(packet.topic)
        if not targets and internal is None:
            self.unmatched += 1
            return
        msg = Message(packet)
        if internal is not None:
            internal(msg)
        for sub in targets:
            sub.offer(msg)
