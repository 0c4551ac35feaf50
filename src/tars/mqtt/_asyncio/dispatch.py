"""Routing: from a received PUBLISH to the subscriptions (and internal consumers) it is for.

Several subscriptions may share one MQTT topic filter; the broker sees one MQTT subscription per
filter (at the highest QoS asked, see :mod:`._subtable`), tagged with a subscription identifier,
so a message that matches several overlapping filters still reaches each subscription exactly
once. The identifiers are the session table's; the dispatcher only maps them to subscriptions.

A received QoS 1/2 message belongs to the session's incoming part
(:class:`~.._core.incoming.Incoming`) from arrival to acknowledgement: the dispatcher tells it
how many subscriptions the message reached and hands each the token it gets back; each
subscription calls its ``done(token)`` (:meth:`~.acks.Acks.done`) when finished.

A QoS 1/2 message tagged with one of our subscription identifiers that no subscription takes
yet (a resumed session's backlog arriving before ``subscribe()``) is parked in the incoming
part until a subscription on its filter is added: never acknowledged unhandled (unless the user
opted in with ``unrouted_timeout``). An untagged one (a raw subscription's through
``MQTTClient.client``, read by message listeners, or a broker without identifiers) is
acknowledged at once: the acknowledgements go in arrival order, so holding it would hold every
later one too.
"""

from __future__ import annotations

from collections.abc import Callable

from mqtt5 import PublishPacket

from .._message import Message
from .._topics import TopicMatcher, split_shared, topic_matches
from .acks import Acks
from .subscription import Subscription

__all__ = ["Dispatcher"]


class Dispatcher:
    """Routes received PUBLISH packets to subscriptions.

    When the broker echoes subscription identifiers in a PUBLISH, routing is a dict lookup per
    identifier; brokers without identifiers fall back to the topic matcher.
    """

    def __init__(self, acks: Acks | None = None) -> None:
        """``acks``: the incoming part's shell (tokens, ``done``, the unrouted backlog); None
        routes only (no message is withheld or parked)."""
        self._acks = acks
        self._hold = acks.incoming.hold if acks is not None and acks.withholding else None
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
        if self._acks is not None:
            self._give_parked(sub, sid)

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
        msg = Message(packet)
        tracked = msg._qos != 0  # (the codec's QoS enum is always truthy: use the int)
        hold = self._hold
        if not targets and internal is None:
            acks = self._acks
            if tracked and ids and acks is not None:
                # Tagged with an identifier of ours not routed yet: a resumed session's
                # backlog, ahead of its subscribe(). Parked for it.
                acks.park(packet.packet_id if hold is not None else None, msg)
                return
            # Untagged: a raw subscription's (MQTTClient.client), read by message listeners,
            # or a broker without identifiers. Acknowledged now: holding it would hold every
            # later acknowledgement too (they go in arrival order).
            self.unmatched += 1
            if tracked and hold is not None:
                self._done_now(packet.packet_id)
            return
        if internal is not None:
            internal(msg)
        token = None
        if tracked and hold is not None:
            if targets:
                token = hold(packet.packet_id or 0, len(targets))
            else:  # an internal consumer's: done with it already
                self._done_now(packet.packet_id)
        for sub in targets:
            sub.offer(msg, token)

    def _done_now(self, packet_id: int | None) -> None:
        acks = self._acks
        assert acks is not None
        token = acks.incoming.hold(packet_id or 0, 1)
        if token is not None:
            acks.done(token)

    # --- the unrouted backlog ------------------------------------------------------------------

    def _give_parked(self, sub: Subscription, sid: int | None) -> None:
        """A new subscription takes the parked messages it matches (in arrival order)."""
        assert self._acks is not None
        pattern = split_shared(sub.topic_filter)[1]

        def wants(msg: Message) -> bool:
            ids = msg.packet.subscription_ids
            return (sid in ids) if ids else topic_matches(pattern, msg.topic)

        for token, msg in self._acks.claim(wants):
            sub.offer(msg, token)

    def close(self) -> None:
        """Shutdown: stop watching the backlog (what waits stays unacknowledged: the broker
        keeps it for the next session)."""
        if self._acks is not None:
            self._acks.close()
