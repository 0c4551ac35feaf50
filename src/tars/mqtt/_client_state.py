"""The client's lifecycle states and its counters' snapshot (public: :mod:`tars.mqtt`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ClientState", "ClientStats"]


class ClientState(enum.Enum):
    """Where the client is in its life. Only the transitions below happen::

    CREATED -> CONNECTING -> CONNECTED <-> RECONNECTING -> CLOSING -> CLOSED -> CONNECTING ...
    """

    CREATED = "created"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of the client's counters (:attr:`MQTTClient.stats`)."""

    published: int  # publishes handed to a link (QoS 0 sent, QoS 1/2 in flight)
    publish_failed: int  # QoS 1/2 publishes the broker refused
    dropped_offline: int  # QoS 0 publishes dropped while disconnected
    outbox_dropped: int  # dropped by the outbox policy or limits (or unsendable on disk)
    outbox_expired: int  # older than outbox_message_ttl when the link came back
    received: int  # messages offered to subscription queues
    handled: int
    failed: int  # handler raised
    timed_out: int  # handler exceeded its timeout
    dropped: int  # dropped by a subscription's overflow policy
    deduplicated: int
    invalid: int  # not an envelope / not valid for a typed handler
    unmatched: int  # received, no subscription took it, acknowledged (given up)
    connects: int  # successful connections (the first one included)
    stale_links: int  # links the watchdog or the publish timeout tore down
    outbox_depth: int = 0  # messages waiting in the outbox for a link (a gauge)
    inflight: int = 0  # QoS 1/2 publishes sent and not yet acknowledged (a gauge)
    no_subscribers: int = 0  # QoS 1/2 publishes the broker acknowledged with 0x10
    receive_maximum_exceeded: int = 0  # times the broker sent more than our Receive Maximum
    unrouted: int = 0  # received messages waiting for a subscription now (a gauge)
    unrouted_overdue: int = 0  # of those, how many waited longer than 5 s (each counted once)
    properties_dropped: int = 0  # publishes whose MQTT 5 properties an MQTT 3.1.1 link dropped
    redirects_refused: int = 0  # server redirections not followed (the redirects option)
    poisoned: int = 0  # publishes/filters given up by the poison-message breaker (resilience.md)
    qos2_downgraded: int = 0  # QoS 2 publishes the broker took at QoS 1 (answered with PUBACK)
