"""Routing: from a received PUBLISH to the subscriptions (and internal consumers) it is for.

Several subscriptions may share one MQTT topic filter; the broker sees one MQTT subscription per
filter (at the highest QoS asked, see :mod:`._subtable`), tagged with a subscription identifier,
so a message that matches several overlapping filters still reaches each subscription exactly
once. The identifiers are the session table's; the dispatcher only maps them to subscriptions.

With acknowledgement after handling, a QoS 1/2 message carries its withheld acknowledgement to
every subscription it reaches; the last to release it lets the acknowledgement go.

A QoS 1/2 message nobody subscribes to yet, tagged with a subscription identifier, is held for a
while (:data:`HOLD_SECONDS`, at most :data:`HOLD_MAX`): a resumed session's backlog arrives right
after the CONNACK, before a service that connects first and subscribes next has registered its
handlers (the identifiers are derived from the filter, so the previous process's match ours).
A subscription added meanwhile gets the held messages it matches; the rest are counted as
unmatched, logged, and acknowledged (held unacknowledged for ever, they would close the
broker's window). An untagged one (a raw subscription's through ``MQTTClient.client``, read by
message listeners) is acknowledged at once: the acknowledgements go in arrival order, so
holding it would hold every later one too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from mqtt5 import PublishPacket

from .._message import Message
from .._topics import TopicMatcher, split_shared, topic_matches
from .subscription import Subscription

__all__ = ["HOLD_MAX", "HOLD_SECONDS", "Acknowledger", "Dispatcher"]

log = logging.getLogger("tars.mqtt.dispatch")

HOLD_SECONDS: Final = 5.0
HOLD_MAX: Final = 1000


class _AckingSession(Protocol):
    generation: int

    def ack(self, packet_id: int, generation: int) -> bool: ...


class Acknowledger:
    """Hands a message's withheld acknowledgement to the session, and has it written."""

    __slots__ = ("_flush", "_session")

    def __init__(self, session: _AckingSession, flush: Callable[[], None]) -> None:
        self._session = session
        self._flush = flush

    @property
    def generation(self) -> int:
        """The current link's number (an acknowledgement belongs to one link)."""
        return self._session.generation

    def ack(self, packet_id: int, generation: int) -> None:
        if self._session.ack(packet_id, generation):
            self._flush()


class Dispatcher:
    """Routes received PUBLISH packets to subscriptions.

    When the broker echoes subscription identifiers in a PUBLISH, routing is a dict lookup per
    identifier; brokers without identifiers fall back to the topic matcher.
    """

    def __init__(self, acker: Acknowledger | None = None) -> None:
        """``acker``: acknowledge QoS 1/2 messages once handled (None: the session acknowledged
        them on arrival)."""
        self._acker = acker
        self._held: deque[tuple[float, Message]] = deque()
        self._expiry: asyncio.TimerHandle | None = None
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
        if self._held:
            self._give_held(sub, sid)

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
        if not targets and internal is None:
            if tracked and ids:
                # Tagged with an identifier of ours not routed yet: a resumed session's
                # backlog, ahead of its subscribe(). Held for it.
                self._hold(msg)
                return
            # Untagged: a raw subscription's (MQTTClient.client), read by message listeners,
            # or a broker without identifiers. Acknowledged now: holding it would hold every
            # later acknowledgement too (they go in arrival order).
            self.unmatched += 1
            if tracked and self._acker is not None:
                msg._hold(self._acker, self._acker.generation, 1)
                msg._release()
            return
        if internal is not None:
            internal(msg)
        acker = self._acker
        if acker is not None and tracked:
            if targets:
                msg._hold(acker, acker.generation, len(targets))
            else:  # an internal consumer's: done with it already
                msg._hold(acker, acker.generation, 1)
                msg._release()
        for sub in targets:
            sub.offer(msg)

    # --- held messages -------------------------------------------------------------------------

    def _hold(self, msg: Message) -> None:
        if self._acker is not None:
            msg._hold(self._acker, self._acker.generation, 1)
        held = self._held
        held.append((time.monotonic(), msg))
        if len(held) > HOLD_MAX:
            self._unmatched(held.popleft()[1])
        if self._expiry is None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(HOLD_SECONDS, self._expire)

    def _give_held(self, sub: Subscription, sid: int | None) -> None:
        """A new subscription takes the held messages it matches (in arrival order)."""
        pattern = split_shared(sub.topic_filter)[1]
        kept: deque[tuple[float, Message]] = deque()
        for stamp, msg in self._held:
            ids = msg.packet.subscription_ids
            if (sid in ids) if ids else topic_matches(pattern, msg.topic):
                sub.offer(msg)
            else:
                kept.append((stamp, msg))
        self._held = kept

    def _expire(self) -> None:
        self._expiry = None
        held = self._held
        limit = time.monotonic() - HOLD_SECONDS
        while held and held[0][0] <= limit:
            self._unmatched(held.popleft()[1])
        if held:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(loop.time() + held[0][0] - limit, self._expire)

    def _unmatched(self, msg: Message) -> None:
        self.unmatched += 1
        if self.unmatched == 1 or self.unmatched % 1000 == 0:
            log.warning(
                "no subscription for a QoS %d message on %r after %g s (unmatched so far: %d); "
                "subscribe before connect(), or soon after it, to receive a resumed session's "
                "backlog",
                msg.qos,
                msg.topic,
                HOLD_SECONDS,
                self.unmatched,
            )
        msg._release()

    def close(self) -> None:
        """Shutdown: forget the held messages (unacknowledged: the broker keeps them)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._held.clear()
