"""The session's subscriptions part: the table, its SUBSCRIBE/UNSUBSCRIBE traffic, the restore.

Adds and removes go to the broker now on a live link, or through the restore plan of the next
link (:mod:`.subtable`); requests the broker cannot serve by its own CONNACK (shared
subscriptions, wildcards) are refused before they are sent. The answers of the restore decide
when the link is ready: :meth:`Subscribing.handle_request_ack` says when the last came.

A part the session owns: it holds the table, the requests awaiting their SUBACK/UNSUBACK and
what the current link's restore still waits for; it is handed only the session's output
(``send``) and the packet-id allocator. A broker answer that breaks MQTT 5 raises
:class:`~.codes.Violation` for the session to end the link.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from mqtt5 import (
    ConnAckPacket,
    QoS,
    RetainHandling,
    SubAckPacket,
    SubscribePacket,
    TopicFilter,
    UnsubAckPacket,
    UnsubscribePacket,
)

from .._errors import (
    SubscribeError,
)
from .codes import (
    PROTOCOL_ERROR,
    QOS,
    SHARED_NOT_SUPPORTED,
    WILDCARDS_NOT_SUPPORTED,
    Violation,
)
from .events import (
    Event,
    Subscribed,
    Unsubscribed,
)
from .subtable import SubscriptionTable

__all__ = ["Purpose", "Request", "Subscribing"]

log = logging.getLogger("tars.mqtt")


class Purpose(enum.Enum):
    """Why a SUBSCRIBE/UNSUBSCRIBE was sent: who reads its answer, and what a failure means
    (the poison-message breaker weighs only the table's own requests)."""

    RAW = "raw"  # a protocol-level request (the .client view): the caller reads the codes
    USER = "user"  # a subscription of the table, for a caller awaiting it
    RESTORE = "restore"  # the restore plan of a new link
    INTERNAL = "internal"  # an internal topic: failures are logged


class Request:
    """One SUBSCRIBE/UNSUBSCRIBE awaiting its answer on the current link."""

    __slots__ = ("filters", "handle", "kind", "purpose")

    def __init__(
        self,
        kind: type[SubAckPacket] | type[UnsubAckPacket],
        handle: object,
        filters: tuple[str, ...],
        purpose: Purpose,
    ) -> None:
        self.kind = kind
        self.handle = handle
        self.filters = filters
        self.purpose = purpose


class Subscribing:
    """The subscriptions part of :class:`~.session.Session` (see the module docstring)."""

    def __init__(self, *, send: Callable[[bytes], None], allocate_id: Callable[[], int]) -> None:
        """``send`` queues bytes for the wire; ``allocate_id`` gives a free packet id."""
        self.table = SubscriptionTable()
        self.requests: dict[int, Request] = {}  # by packet id, until answered or link lost
        self._send = send
        self._allocate_id = allocate_id
        # The current link's: its CONNACK (what the broker cannot serve), restore requests not
        # answered yet, and the filters it refused.
        self._connack: ConnAckPacket | None = None
        self.restoring = 0
        self.refused: tuple[tuple[str, int], ...] = ()

    def __repr__(self) -> str:
        return f"<Subscribing requests={len(self.requests)} {self.table!r}>"

    def link_started(self, connack: ConnAckPacket) -> None:
        """A CONNACK-ed link: what it can serve; nothing restored or refused on it yet."""
        self._connack = connack
        self.restoring = 0
        self.refused = ()

    def link_ended(self) -> list[object]:
        """The link is gone: the handles of the requests it will never answer (aborted)."""
        handles = [r.handle for r in self.requests.values() if r.handle is not None]
        self.requests.clear()
        self.restoring = 0
        self.refused = ()
        return handles

    def add_subscription(self, topic_filter: str, qos: int, handle: object, linked: bool) -> bool:
        """One more subscription on ``topic_filter``: True when a SUBSCRIBE was sent now (its
        :class:`~.events.Subscribed` carries ``handle``), False when the broker holds it
        already or no link is up (the restore plan sends it).

        Raises :class:`~tars.mqtt.SubscribeError` when the broker's CONNACK said it cannot serve
        this filter (shared subscriptions, wildcards).
        """
        if linked:
            self._check_capabilities(topic_filter)
        sid, send = self.table.add(topic_filter, qos)
        if not send or not linked:
            return False
        self._send_subscribe(topic_filter, qos, sid, handle, Purpose.USER)
        return True

    def remove_subscription(
        self, topic_filter: str, qos: int, handle: object, linked: bool
    ) -> bool:
        """One subscription fewer: True when an UNSUBSCRIBE was sent now (its
        :class:`~.events.Unsubscribed` carries ``handle``)."""
        if not self.table.remove(topic_filter, qos):
            return False
        if not linked:
            return False  # a resumed session unsubscribes it on the next link
        self._send_request(
            UnsubAckPacket,
            UnsubscribePacket(self._allocate_id(), [topic_filter]),
            handle,
            (topic_filter,),
            Purpose.USER,
        )
        return True

    def subscription_id(self, topic_filter: str) -> int | None:
        """The identifier the broker tags ``topic_filter``'s messages with (None: none)."""
        return self.table.sid(topic_filter)

    def add_internal(self, topic: str, handle: object, linked: bool) -> tuple[int, bool]:
        """An internal consumer's exact topic (QoS 0, no retained copies); subscribed now when
        linked, and on every new link. Returns its subscription identifier, and whether a
        SUBSCRIBE was sent now (its :class:`~.events.Subscribed` carries ``handle``)."""
        sid, new = self.table.add_internal(topic)
        if new and linked:
            self._send_internal(topic, sid, handle=handle)
            return sid, True
        return sid, False

    def subscribe(
        self,
        filters: list[TopicFilter],
        *,
        handle: object = None,
        subscription_id: int | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """A protocol-level SUBSCRIBE, outside the table (not restored on a new link); the
        session sends it only on a CONNACK-ed link. Returns its packet id."""
        packet_id = self._allocate_id()
        packet = SubscribePacket(
            packet_id, filters, subscription_id=subscription_id, user_properties=user_properties
        )
        names = tuple(f.pattern for f in filters)
        return self._send_request(SubAckPacket, packet, handle, names, Purpose.RAW)

    def unsubscribe(
        self,
        patterns: list[str],
        *,
        handle: object = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> int:
        """A protocol-level UNSUBSCRIBE, outside the table."""
        packet = UnsubscribePacket(self._allocate_id(), patterns, user_properties=user_properties)
        return self._send_request(UnsubAckPacket, packet, handle, tuple(patterns), Purpose.RAW)

    def _send_request(
        self,
        kind: type[SubAckPacket] | type[UnsubAckPacket],
        packet: SubscribePacket | UnsubscribePacket,
        handle: object,
        filters: tuple[str, ...],
        purpose: Purpose,
    ) -> int:
        packet_id = packet.packet_id
        self.requests[packet_id] = Request(kind, handle, filters, purpose)
        self._send(packet.write())
        return packet_id

    def _send_subscribe(
        self, topic_filter: str, qos: int, sid: int, handle: object, purpose: Purpose
    ) -> None:
        # retain_as_published off (MQTT 5's default; mqtt5's TopicFilter defaults to on): a
        # handler sees retain=True only on the broker's stored copy, never on a live update.
        tf = TopicFilter(
            topic_filter,
            max_qos=QOS[qos],
            retain_handling=RetainHandling.SEND_ALWAYS,
            retain_as_published=False,
        )
        packet = SubscribePacket(self._allocate_id(), [tf], subscription_id=self._sid(sid))
        self._send_request(SubAckPacket, packet, handle, (topic_filter,), purpose)

    def _send_internal(
        self, topic: str, sid: int, purpose: Purpose = Purpose.INTERNAL, handle: object = None
    ) -> None:
        tf = TopicFilter(topic, max_qos=QoS.AT_MOST_ONCE, retain_handling=RetainHandling.SEND_NEVER)
        packet = SubscribePacket(self._allocate_id(), [tf], subscription_id=self._sid(sid))
        self._send_request(SubAckPacket, packet, handle, (topic,), purpose)

    def _sid(self, sid: int) -> int | None:
        """``sid`` when the broker takes subscription identifiers (MQTT 5 lets it refuse)."""
        connack = self._connack
        return sid if connack is None or connack.subscription_id_available else None

    def _check_capabilities(self, topic_filter: str) -> None:
        connack = self._connack
        if connack is None:
            return
        if topic_filter.startswith("$share/") and connack.shared_subscription_available is False:
            raise SubscribeError(
                topic_filter,
                SHARED_NOT_SUPPORTED,
                "the broker does not offer shared subscriptions",
            )
        if connack.wildcard_subscription_available is False and (
            "+" in topic_filter or "#" in topic_filter
        ):
            raise SubscribeError(
                topic_filter, WILDCARDS_NOT_SUPPORTED, "the broker does not offer wildcards"
            )

    def restore(self, *, fresh: bool) -> None:
        """Queue the subscription restore plan of a new link (see :mod:`.subtable`); the link
        is ready once :attr:`restoring` is back to 0."""
        plan = self.table.restore_plan(fresh=fresh)
        for topic_filter, qos, sid in plan.subscribe:
            try:
                self._check_capabilities(topic_filter)
            except SubscribeError as refusal:
                # Sent anyway, such a SUBSCRIBE costs the link on some brokers (ejabberd
                # answers DISCONNECT 0x9E), and every restore would do it again.
                log.error("%s", refusal)
                self.refused += ((topic_filter, refusal.reason_code),)
                continue
            self._send_subscribe(topic_filter, qos, sid, None, Purpose.RESTORE)
            self.restoring += 1
        for topic, sid in plan.internal:
            self._send_internal(topic, sid, Purpose.RESTORE)
            self.restoring += 1
        if plan.unsubscribe:
            packet = UnsubscribePacket(self._allocate_id(), list(plan.unsubscribe))
            self._send_request(UnsubAckPacket, packet, None, plan.unsubscribe, Purpose.RESTORE)
            self.restoring += 1

    def handle_request_ack(
        self, packet: SubAckPacket | UnsubAckPacket, events: list[Event]
    ) -> bool:
        """A SUBACK or UNSUBACK: True when it was the last answer of the link's restore.

        Raises :class:`~.codes.Violation` for an answer to no request of ours, or with a wrong
        number of reason codes.
        """
        request = self.requests.get(packet.packet_id)
        if request is None or request.kind is not type(packet):
            raise Violation(PROTOCOL_ERROR, f"{type(packet).__name__} for unknown packet id")
        codes = tuple(int(c) for c in packet.reason_codes)
        if len(codes) != len(request.filters):
            raise Violation(
                PROTOCOL_ERROR, f"{type(packet).__name__} with {len(codes)} reason codes"
            )
        del self.requests[packet.packet_id]
        purpose = request.purpose
        table = self.table
        subscribing = type(packet) is SubAckPacket
        for name, code in zip(request.filters, codes, strict=True):
            if purpose is Purpose.RAW:
                continue
            if subscribing:
                if code < 0x80:
                    table.confirmed(name, code)
                else:
                    table.refused(name)
                    if purpose is not Purpose.USER:
                        log.error("%s", SubscribeError(name, code))
                        self.refused += ((name, code),)
            else:
                table.unsubscribed(name)
                if code >= 0x80 and purpose is not Purpose.USER:
                    log.warning("could not unsubscribe %r: reason code %#x", name, code)
        if purpose is Purpose.RAW or purpose is Purpose.USER or request.handle is not None:
            if subscribing:
                events.append(Subscribed(request.handle, codes))
            else:
                events.append(Unsubscribed(request.handle, codes))
        elif purpose is Purpose.RESTORE:
            self.restoring -= 1
            return not self.restoring
        return False
