"""The session's counters: one object the session and its parts count in (only grows)."""

from __future__ import annotations

from .._record import Record

__all__ = ["SessionStats"]


class SessionStats(Record):
    """The session's counters (only grow); the client's ``stats()`` reads them."""

    __slots__ = (
        "dropped_offline",
        "no_subscribers",
        "poisoned",
        "properties_dropped",
        "publish_failed",
        "published",
        "qos2_downgraded",
        "receive_maximum_exceeded",
        "stale_links",
    )
    published: int  # handed to a link (QoS 0 written, QoS 1/2 first sent)
    publish_failed: int  # refused by the broker, or unsendable on this link
    no_subscribers: int  # acknowledged with 0x10: the broker had no subscriber for it
    dropped_offline: int  # QoS 0 while disconnected (not queued)
    stale_links: int  # links the watchdog or the ack timeout declared dead
    receive_maximum_exceeded: int  # times the broker went over our Receive Maximum
    poisoned: int  # publishes and filters the poison-message breaker gave up on
    properties_dropped: int  # PUBLISH properties not sent: an MQTT 3.1.1 link has none
    qos2_downgraded: int  # QoS 2 publishes the broker answered with PUBACK (took at QoS 1)

    def __init__(self) -> None:
        self.published = 0
        self.publish_failed = 0
        self.no_subscribers = 0
        self.dropped_offline = 0
        self.stale_links = 0
        self.receive_maximum_exceeded = 0
        self.poisoned = 0
        self.properties_dropped = 0
        self.qos2_downgraded = 0
