"""The session's counters: one object the session and its parts count in (only grows)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SessionStats"]


@dataclass(slots=True)
class SessionStats:
    """The session's counters (only grow); the client's ``stats()`` reads them."""

    published: int = 0  # handed to a link (QoS 0 written, QoS 1/2 first sent)
    publish_failed: int = 0  # refused by the broker, or unsendable on this link
    no_subscribers: int = 0  # acknowledged with 0x10: the broker had no subscriber for it
    dropped_offline: int = 0  # QoS 0 while disconnected (not queued)
    stale_links: int = 0  # links the watchdog or the ack timeout declared dead
    receive_maximum_exceeded: int = 0  # times the broker went over our Receive Maximum
    poisoned: int = 0  # publishes and filters the poison-message breaker gave up on
    properties_dropped: int = 0  # PUBLISH properties not sent: an MQTT 3.1.1 link has none
