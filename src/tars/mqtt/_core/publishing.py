"""The session's outgoing part: each outgoing publish from the call to its outcome.

QoS 0 goes out at once on a link; QoS 1/2 go out as the broker's Receive Maximum allows, else
wait in order; without a link they are queued under the outbox limits (the records and the
limits are its :class:`~.outgoing.OutgoingStore`). A resumed broker session gets its
unacknowledged publishes again, with DUP, before any new one. With a durable outbox, a record
leaves the journal here when it ends (see :meth:`~.outgoing.OutgoingStore.forget`).

A part the session owns (as h11's ``Connection`` owns its ``ReceiveBuffer``): it holds its own
data (the records, the broker's Receive Maximum left on this link, the broker's limits from
its CONNACK) and is handed, at construction, only what it writes to: the session's output
(``send``), its counters, the packet-id allocator and the liveness watch. Whether a link is
up, and the time, are passed in by the session with each call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    PublishPacket,
    PubRecPacket,
    PubRelPacket,
)

from .._errors import (
    InvalidArgumentError,
    OutboxFullError,
    PayloadTooLarge,
    PublishError,
)
from .codes import (
    MAX_PACKET_ID,
    NO_SUBSCRIBERS,
    PACKET_ID_NOT_FOUND,
    PACKET_TOO_LARGE,
    QOS,
    QOS_NOT_SUPPORTED,
    RETAIN_NOT_SUPPORTED,
)
from .events import (
    Event,
    PublishDone,
)
from .outgoing import Outgoing, OutgoingStore

if TYPE_CHECKING:
    from .liveness import Liveness
    from .stats import SessionStats

__all__ = ["Publishing"]

log = logging.getLogger("tars.mqtt")

_EMPTY: tuple[Event, ...] = ()


def _encode(item: Outgoing, packet_id: int | None) -> bytes:
    """The PUBLISH bytes of ``item`` (``packet_id`` for QoS 1/2)."""
    props = item.properties or {}
    return PublishPacket(
        item.topic,
        item.payload,
        qos=QOS[item.qos],
        retain=item.retain,
        packet_id=packet_id if item.qos else None,
        **props,
    ).write()


class Publishing:
    """The outgoing part of :class:`~.session.Session` (see the module docstring)."""

    def __init__(
        self,
        store: OutgoingStore,
        *,
        send: Callable[[bytes], None],
        stats: SessionStats,
        allocate_id: Callable[[], int],
        liveness: Liveness | None = None,
        queue_qos0_offline: bool = False,
    ) -> None:
        """``send`` queues bytes for the wire; ``allocate_id`` gives a free packet id."""
        self.store = store
        self.queue_qos0_offline = queue_qos0_offline
        self._send = send
        self._stats = stats
        self._allocate_id = allocate_id
        self._liveness = liveness
        self._downgrade_said = False  # the QoS 2 -> PUBACK WARNING, once per client
        # The current link's: what is left of the broker's Receive Maximum, its Maximum Packet
        # Size and its CONNACK (what it cannot serve). Set by link_started.
        self.send_quota = MAX_PACKET_ID
        self.broker_max_packet_size: int | None = None
        self._connack: ConnAckPacket | None = None
        # What the CONNACK allows, read once per link (unservable() says why not, and is asked
        # only when a publish goes beyond these: not per publish).
        self._refused_qos: tuple[int, ...] = ()  # a tuple: `in` compares, any qos is safe
        self._retain_ok = True

    def __repr__(self) -> str:
        return f"<Publishing quota={self.send_quota} {self.store!r}>"

    @property
    def inflight_count(self) -> int:
        """QoS 1/2 publishes sent and not yet finished."""
        return len(self.store.inflight)

    def link_started(self, connack: ConnAckPacket) -> None:
        """A CONNACK-ed link: the broker's Receive Maximum, Maximum Packet Size and limits."""
        self._connack = connack
        self._refused_qos = (1, 2)[int(connack.max_qos) :]
        self._retain_ok = connack.retain_available is not False
        self.send_quota = connack.receive_max
        self.broker_max_packet_size = connack.max_packet_size

    def link_ended(self) -> None:
        """The link is gone: what was in flight stays (resent on a resumed session, or sent
        again as new), but nothing is resent on a link that no longer exists."""
        store = self.store
        store.resend.clear()
        store.answered_upto = store.sends  # what the next link answers counts from here

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        handle: object,
        properties: dict[str, Any] | None,
        linked: bool,
        now: float,
    ) -> Sequence[Event]:
        """See :meth:`.session.Session.publish`; ``linked``: a CONNACK-ed link is up."""
        if (
            linked
            and (qos in self._refused_qos or (retain and not self._retain_ok))
            and (refusal := self.unservable(qos, retain))
        ):
            raise refusal
        if qos == 0 and linked:
            if properties:
                packet = PublishPacket(topic, payload, retain=retain, **properties)
            else:
                packet = PublishPacket(topic, payload, retain=retain)
            wire = packet.write()
            limit = self.broker_max_packet_size
            if limit is not None and len(wire) > limit:
                raise PayloadTooLarge(len(payload), limit - (len(wire) - len(payload)))
            self._send(wire)
            self._stats.published += 1
            return _EMPTY
        if qos not in (0, 1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        item = Outgoing(topic, payload, qos, retain, properties, handle)
        store = self.store
        if linked:
            limit = self.broker_max_packet_size
            if limit is not None:
                size = len(_encode(item, 1))
                if size > limit:
                    raise PayloadTooLarge(len(payload), limit - (size - len(payload)))
            if self.send_quota > 0 and not store.pending:
                self._send_publish(item, now)
            else:
                store.pending.append(item)
            return _EMPTY
        if qos == 0 and not self.queue_qos0_offline:
            self._stats.dropped_offline += 1
            log.debug("not connected: QoS 0 message for %r dropped", topic)
            return _EMPTY
        dropped = store.queue_offline(item, now)
        if not dropped:
            return _EMPTY
        events: list[Event] = []
        for old in dropped:
            log.warning("outbox full: dropped a message for %r", old.topic)
            error = OutboxFullError(f"outbox full: message for {old.topic!r} dropped")
            events.append(PublishDone(old.handle, 0x80, "dropped", error))
        return events

    def _send_publish(self, item: Outgoing, now: float) -> None:
        if item.qos == 0:  # queued offline with queue_qos0_offline
            self._send(_encode(item, None))
            self._stats.published += 1
            return
        item.packet_id = packet_id = self._allocate_id()
        wire = item.wire = _encode(item, packet_id)
        item.released = False
        store = self.store
        if not store.inflight and self._liveness is not None:
            self._liveness.publishes_waiting(now, True)
        store.inflight[packet_id] = item
        store.sends = item.order = store.sends + 1
        self.send_quota -= 1
        self._send(wire)
        self._stats.published += 1

    def send_pending(self, events: list[Event], now: float) -> None:
        """Send what waits (resends first), as the broker's Receive Maximum allows."""
        store = self.store
        resend, inflight = store.resend, store.inflight
        while resend and self.send_quota > 0:
            item = resend.popleft()
            if inflight.get(item.packet_id) is item:  # not finished by an early ack
                self._resend_one(item, now)
        pending = store.pending
        limit = self.broker_max_packet_size
        while pending and (self.send_quota > 0 or pending[0].qos == 0):
            item = store.pop_pending()
            refusal = self.unservable(item.qos, item.retain)
            if refusal is not None:
                # Queued before this broker said it cannot serve it: fails alone, unsent.
                self._stats.publish_failed += 1
                log.warning("queued message for %r not sent: %s", item.topic, refusal)
                events.append(PublishDone(item.handle, refusal.reason_code, None, refusal))
                continue
            if limit is not None and len(_encode(item, 1)) > limit:
                # Over this broker's maximum: this message fails alone, and never reaches the
                # wire (the broker would disconnect us, and the resend would loop forever).
                self._stats.publish_failed += 1
                log.warning(
                    "queued message for %r is over the broker's maximum packet size (%d "
                    "bytes): not sent",
                    item.topic,
                    limit,
                )
                error = PayloadTooLarge(len(item.payload), limit)
                store.forget(item)
                events.append(PublishDone(item.handle, PACKET_TOO_LARGE, None, error))
                continue
            self._send_publish(item, now)

    def unservable(self, qos: int, retain: bool) -> PublishError | None:
        """The refusal the broker's CONNACK announced for such a publish (Maximum QoS, Retain
        Available), if any: sent anyway, it would cost the link (0x9B, 0x9A)."""
        connack = self._connack
        if connack is None:
            return None
        if (qos == 1 or qos == 2) and qos > int(connack.max_qos):
            return PublishError(
                f"the broker serves QoS {int(connack.max_qos)} at most (CONNACK), not {qos}",
                QOS_NOT_SUPPORTED,
            )
        if retain and connack.retain_available is False:
            return PublishError(
                "the broker does not keep retained messages (CONNACK): publish with retain=False",
                RETAIN_NOT_SUPPORTED,
            )
        return None

    def _resend_one(self, item: Outgoing, now: float) -> None:
        """Send an earlier link's unfinished publish again, as MQTT 5 requires on resumption."""
        self.send_quota -= 1
        if self._liveness is not None:  # on the wire again: the ack timeout watches it too
            self._liveness.publishes_waiting(now, True)
        if item.released:
            self._send(PubRelPacket(item.packet_id).write())
        else:
            assert item.wire is not None
            wire = bytearray(item.wire)
            wire[0] |= 0x08  # DUP flag: this PUBLISH may have been seen before
            store = self.store
            store.sends = item.order = store.sends + 1
            self._send(bytes(wire))

    def handle_puback(
        self, packet_id: int, events: list[Event], reason: int, text: str | None, now: float
    ) -> None:
        """PUBACK: a QoS 1 publish of ours is done (an unknown id is ignored).

        A PUBACK for a QoS 2 publish not yet released means the broker took it at QoS 1:
        RabbitMQ 3.10 does so with every QoS 2 PUBLISH (MQTT 3.1.1 has no way to say so).
        Ignored, it would hold its publisher and a slot of the in-flight window for a PUBREC
        that never comes, and the ack timeout would tear down link after link over it. It is
        finished instead (delivered at least once, not exactly once), counted in
        ``qos2_downgraded`` and said once per client.
        """
        item = self.store.inflight.get(packet_id)
        if item is None:
            return
        if item.qos == 2:
            if item.released:
                return  # PUBREC came: only a PUBCOMP ends it
            # A refusal is a refusal whatever packet carried it (finish() says so); a success
            # is the downgrade. On MQTT 5 a PUBACK for a QoS 2 publish breaks the protocol:
            # accepted on purpose.
            if reason < 0x80:
                self._stats.qos2_downgraded += 1
                if not self._downgrade_said:
                    self._downgrade_said = True
                    log.warning(
                        "the broker answered a QoS 2 publish on %r with PUBACK: it took it at "
                        "QoS 1 (at least once, not exactly once; RabbitMQ does so with every "
                        "QoS 2 publish); counted in stats.qos2_downgraded, said once",
                        item.topic,
                    )
        self.finish(packet_id, events, reason, text, now)

    def handle_pubcomp(
        self, packet_id: int, events: list[Event], reason: int, text: str | None, now: float
    ) -> None:
        """PUBCOMP: a released QoS 2 publish of ours is done (an unknown id is ignored)."""
        item = self.store.inflight.get(packet_id)
        if item is not None and item.qos == 2 and item.released:
            self.finish(packet_id, events, reason, text, now)

    def finish(
        self, packet_id: int, events: list[Event], reason: int, text: str | None, now: float
    ) -> None:
        """The in-flight publish ``packet_id`` has its outcome: report it, free its quota."""
        store = self.store
        item = store.inflight.pop(packet_id)
        if item.seq is not None:
            store.forget(item)
        if item.order > store.answered_upto:  # the broker read this far (the poison breaker)
            store.answered_upto = item.order
        self.send_quota += 1
        handle = item.handle
        if reason >= 0x80:
            self._stats.publish_failed += 1
            if handle is None:  # nobody awaits it: say it here
                log.warning("broker refused a publish on %r: reason code %#x", item.topic, reason)
        elif reason == NO_SUBSCRIBERS:
            self._stats.no_subscribers += 1
        events.append(PublishDone(handle, reason, text))
        liveness = self._liveness
        if liveness is not None:
            liveness.acked(now)
            if not store.inflight:
                liveness.publishes_waiting(now, False)
        if store.pending or store.resend:
            self.send_pending(events, now)

    def resume_session(self) -> None:
        """The broker kept our session: resend what it has not acknowledged, in order, before
        any new publish, as its Receive Maximum allows."""
        store = self.store
        store.resend.extend(store.inflight.values())

    def restart_session(self, events: list[Event]) -> None:
        """The broker has no session for us: what it never acknowledged is sent again as new.

        A QoS 2 publish whose PUBREC came is owned by the broker already: it is finished.
        """
        store = self.store
        again: list[Outgoing] = []
        for item in store.inflight.values():
            if item.released:
                store.forget(item)
                events.append(PublishDone(item.handle, 0, "session not present; PUBREC received"))
            else:
                again.append(item)
        store.inflight.clear()
        store.pending.extendleft(reversed(again))

    def handle_pubrec(self, packet: PubRecPacket, events: list[Event], now: float) -> None:
        """PUBREC: a QoS 2 publish of ours is received (release it) or refused (done)."""
        packet_id = packet.packet_id
        item = self.store.inflight.get(packet_id)
        if item is None or item.qos != 2:
            reason = mqtt5.PubRelReasonCode(PACKET_ID_NOT_FOUND)
            self._send(PubRelPacket(packet_id, reason_code=reason).write())
            return
        reason_code = int(packet.reason_code)
        if reason_code >= 0x80:
            self.finish(packet_id, events, reason_code, packet.reason_str, now)
            return
        if reason_code == NO_SUBSCRIBERS:
            self._stats.no_subscribers += 1
        item.released = True
        store = self.store
        if item.order > store.answered_upto:
            store.answered_upto = item.order
        if self._liveness is not None:
            self._liveness.acked(now)
        self._send(PubRelPacket(packet_id).write())
