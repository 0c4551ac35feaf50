"""The poison-message breaker: defence in depth against a packet that costs every link.

MQTT 5 asks a client to resend each unacknowledged QoS 1/2 publish on every new link, and the
client restores its subscriptions there too. A packet the broker refuses by ending the link (a
topic it calls malformed, a property it does not take) is then sent again on each new link and
ends each of them: the client is offline for good, and every other message with it. The call
checks (topic rules, packet size, the broker's CONNACK capabilities) refuse what we know about;
this catches what they do not.

The rule, applied once per link that the broker ended after its CONNACK (a DISCONNECT whose
reason blames a packet of ours, or, for a publish only, a close without any DISCONNECT):

- a broker reads a link in order, so the packet it choked on is the oldest one it never
  answered: the oldest unanswered SUBSCRIBE of the subscription table if any (the restore sends
  those first), else the oldest publish on the wire without any acknowledgement; a SUBSCRIBE
  takes a strike only from a DISCONNECT that blames a packet (a bare close while one is
  unanswered strikes nothing: RabbitMQ closes so while a queue's node is down, and a filter
  given up would be lost for good, where a publish given up fails to its caller);
- not when the broker answered a publish sent after that one on the same link: it read past
  it (RabbitMQ confirms out of order, and ends the link when a confirm fails);
- that one takes a strike; strikes count links in a row (a link that ends on another suspect,
  or none, starts a publish's count again); a SUBACK resets a filter's strikes, an
  acknowledgement ends a publish; at :data:`POISON_LINKS` strikes (and, when only bare closes
  blamed a publish, at least :data:`BARE_CLOSE_SPAN` seconds after its first) it is given up:
  the publish fails with
  :class:`~tars.mqtt.PoisonMessageError` and leaves the resend set and the durable outbox, the
  filter leaves the table (no restore sends it again) and its subscriptions end with a
  :class:`~tars.mqtt.PoisonMessageError` (:class:`~.events.FilterGivenUp`). Both are counted
  and logged.

A DISCONNECT that blames the broker's own state (server shutting down, session taken over,
server busy, a redirection...) or our keep-alive is no evidence against a packet and counts
nothing; nor does a link we closed, or one that broke with a transport error (a reset).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Final

from mqtt5 import SubAckPacket

from .._errors import PoisonMessageError
from .events import Event, FilterGivenUp, PublishDone
from .outgoing import OutgoingStore
from .stats import SessionStats
from .subscribing import Purpose, Request
from .subtable import SubscriptionTable

__all__ = ["BARE_CLOSE_SPAN", "POISON_LINKS", "blames_a_packet", "link_ended_by_broker"]

log = logging.getLogger("tars.mqtt")

POISON_LINKS: Final = 3
"""Links in a row a packet may be blamed for before it is given up."""

BARE_CLOSE_SPAN: Final = 10.0
"""Seconds a publish must go on ending links by bare closes (no DISCONNECT) before it is given
up, whatever its strikes: such a close may be transient. RabbitMQ 3.10 ends a publisher's link
when a publish cannot be confirmed because its queue's node just died, and does so again on
the next links until the queue is back: three links in a second under a cluster failover
(measured), where a publish given up is a message lost. A broker that chokes on a packet for
good ends the links for as long as it is resent, so this costs it seconds offline, once."""

# DISCONNECT reasons that say a packet of ours was at fault (MQTT 5 table 3-10).
_PACKET_FAULTS: Final = frozenset(
    {
        0x80,  # Unspecified error
        0x81,  # Malformed Packet (Mosquitto: a control character in a topic)
        0x82,  # Protocol Error
        0x83,  # Implementation specific error
        0x87,  # Not authorized
        0x90,  # Topic Name invalid
        0x94,  # Topic Alias invalid
        0x95,  # Packet too large
        0x99,  # Payload format invalid
        0x9A,  # Retain not supported
        0x9B,  # QoS not supported
        0x9E,  # Shared Subscriptions not supported
        0xA1,  # Subscription Identifiers not supported
        0xA2,  # Wildcard Subscriptions not supported
    }
)


def blames_a_packet(broker_reason: int | None) -> bool:
    """Whether a link the broker ended (with this DISCONNECT reason, None: no DISCONNECT) is
    evidence against a packet of ours."""
    return broker_reason is None or broker_reason in _PACKET_FAULTS


def link_ended_by_broker(
    outgoing: OutgoingStore,
    table: SubscriptionTable,
    requests: Collection[Request],
    broker_reason: int | None,
    stats: SessionStats,
    now: float,
) -> list[Event]:
    """Strike the packet the broker choked on (see the module docstring); the event of a
    publish given up (its caller gets the error) or of a filter given up (its subscriptions
    end with the error, and so do the subscribe calls still awaiting its SUBACK)."""
    if not blames_a_packet(broker_reason):
        return []
    for request in requests:  # oldest first
        if request.kind is SubAckPacket and request.purpose in (Purpose.USER, Purpose.RESTORE):
            topic_filter = request.filters[0]
            if topic_filter in table.filters:
                if broker_reason is None:
                    # A bare close on a SUBSCRIBE is no verdict on the filter: RabbitMQ does it
                    # while the node of the session's queue is down (transient), and an MQTT
                    # 3.1.1 broker can say nothing else. A filter given up would be lost for the
                    # client's life, so only a DISCONNECT that blames a packet strikes it.
                    return []
                if not table.strike(topic_filter, POISON_LINKS):
                    return []
                stats.poisoned += 1
                error = PoisonMessageError(
                    topic_filter, POISON_LINKS, broker_reason, subscription=True
                )
                log.error("poison-message breaker: %s", error)
                waiting = tuple(
                    r.handle
                    for r in requests
                    if r.kind is SubAckPacket
                    and r.purpose is Purpose.USER
                    and r.handle is not None
                    and topic_filter in r.filters
                )
                return [FilterGivenUp(topic_filter, error, waiting)]
    bare = broker_reason is None
    item = outgoing.strike(POISON_LINKS, now, bare=bare, span=BARE_CLOSE_SPAN)
    if item is None:
        return []
    stats.poisoned += 1
    stats.publish_failed += 1
    error = PoisonMessageError(item.topic, item.strikes, broker_reason)
    log.error("poison-message breaker: %s", error)
    return [PublishDone(item.handle, error.reason_code, None, error)]
