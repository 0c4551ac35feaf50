"""The publishing part of the session: each outgoing publish from the call to its outcome.

QoS 0 goes out at once on a link; QoS 1/2 go out as the broker's Receive Maximum allows, else
wait in order; without a link they are queued under the outbox limits (:mod:`._outgoing`). A
resumed broker session gets its unacknowledged publishes again, with DUP, before any new one.
Waiters (flush, capacity, outbox room) are settled here too. With a durable outbox, a record
leaves the journal here when it ends (see :meth:`~._outgoing.OutgoingStore.forget`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import mqtt5
from mqtt5 import (
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
from .events import (
    Event,
    PublishDone,
    Settled,
)
from .outgoing import Outgoing
from .session_base import (
    _EMPTY,
    _NO_SUBSCRIBERS,
    _PACKET_ID_NOT_FOUND,
    _PACKET_TOO_LARGE,
    _QOS_NOT_SUPPORTED,
    _RETAIN_NOT_SUPPORTED,
    SessionBase,
    SessionState,
    WaitFor,
    _encode,
    _Waiter,
)

if TYPE_CHECKING:  # the durable store (sqlite3) is loaded only by those who use it
    from .outgoing import Journal

__all__ = ["Publishing"]

log = logging.getLogger("tars.mqtt")


class Publishing(SessionBase):
    """Publish, resend, acknowledgements and waiters (a part of
    :class:`~._session.Session`)."""

    _journal: Callable[[], Journal] | None  # opens the durable outbox (set by Session)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        handle: object = None,
        properties: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> Sequence[Event]:
        """Publish a message; returns the events of records this call ended (outbox drops).

        While linked, QoS 0 goes out now and QoS 1/2 go out now when the broker's Receive
        Maximum allows, else wait in order. Without a link, QoS 1/2 (and QoS 0 with
        ``queue_qos0_offline``) are queued under the outbox limits; other QoS 0 is dropped and
        counted. ``handle`` comes back in the :class:`~._events.PublishDone` of the record;
        ``now`` (monotonic) dates an offline record for the outbox TTL and starts the ack
        timeout of a publish sent now: pass it (without it, the time of the last input is
        used, and a link idle for longer than ``publish_timeout`` is found stale at once).

        Raises :class:`~tars.mqtt.PayloadTooLarge` when the encoded packet is over the broker's
        Maximum Packet Size, :class:`~tars.mqtt.PublishError` when its CONNACK said it cannot
        serve the QoS or the retain flag, :class:`~tars.mqtt.OutboxFullError` (outbox policy
        ``raise``).
        """
        if now is not None:
            self._now = now
        linked = self.state is SessionState.CONNECTED
        if linked and (retain or qos) and (refusal := self._unservable(qos, retain)):
            raise refusal
        if qos == 0 and linked:
            if properties:
                packet = PublishPacket(topic, payload, retain=retain, **properties)
            else:
                packet = PublishPacket(topic, payload, retain=retain)
            wire = packet.write()
            limit = self._link.max_packet_size
            if limit is not None and len(wire) > limit:
                raise PayloadTooLarge(len(payload), limit - (len(wire) - len(payload)))
            self._out.append(wire)
            self.stats.published += 1
            return _EMPTY
        if qos not in (0, 1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        item = Outgoing(topic, payload, qos, retain, properties, handle)
        store = self.outgoing
        if linked:
            limit = self._link.max_packet_size
            if limit is not None:
                size = len(_encode(item, 1))
                if size > limit:
                    raise PayloadTooLarge(len(payload), limit - (size - len(payload)))
            if self._link.send_quota > 0 and not store.pending:
                self._send_publish(item)
            else:
                store.pending.append(item)
            return _EMPTY
        if qos == 0 and not self.queue_qos0_offline:
            self.stats.dropped_offline += 1
            log.debug("not connected: QoS 0 message for %r dropped", topic)
            return _EMPTY
        dropped = store.queue_offline(item, self._now)
        if not dropped:
            return _EMPTY
        events: list[Event] = []
        for old in dropped:
            log.warning("outbox full: dropped a message for %r", old.topic)
            error = OutboxFullError(f"outbox full: message for {old.topic!r} dropped")
            events.append(PublishDone(old.handle, 0x80, "dropped", error))
        return events

    def open_journal(self) -> int:
        """Open the durable outbox, if there is one and it is not open yet, and queue what an
        earlier process left in it ahead of any new publish. Returns how many were loaded.

        From then on, QoS 1/2 publishes accepted without a link are written to it before
        :meth:`publish` returns (synchronous disk I/O, see :mod:`._journal`). Raises
        :class:`~tars.mqtt.ConfigError` when the file cannot be opened or is in use.
        """
        if self._journal is None or self.outgoing.journal is not None:
            return 0
        store = self.outgoing
        loaded = store.attach(self._journal())
        if loaded:
            log.info(
                "%s: %d publishes left in the durable outbox by an earlier run are queued",
                self.client_id,
                loaded,
            )
        if loaded and not store.has_room(0):  # a run with larger limits, or many in flight
            log.warning(
                "%s: the durable outbox holds %d publishes, more than outbox_max_messages / "
                "outbox_max_bytes allow; all are kept (in memory too) and sent first, and new "
                "offline publishes meet the outbox policy until they are",
                self.client_id,
                loaded,
            )
        return loaded

    def has_room(self, size: int) -> bool:
        """Whether a publish of ``size`` bytes can be taken now without an outbox drop."""
        return self.state is SessionState.CONNECTED or self.outgoing.has_room(size)

    def wait(self, handle: object, what: WaitFor, size: int = 0) -> bool:
        """Register ``handle`` to get a :class:`~._events.Settled` when ``what`` holds.

        Returns False (nothing registered) when it holds already.
        """
        waiter = _Waiter(handle, what, size)
        if self._satisfied(waiter):
            return False
        self._waiters.append(waiter)
        return True

    def forget_waiter(self, handle: object) -> None:
        """A waiter that gave up (its timeout): it must not be settled later."""
        self._waiters = [w for w in self._waiters if w.handle is not handle]

    def _send_publish(self, item: Outgoing) -> None:
        if item.qos == 0:  # queued offline with queue_qos0_offline
            self._out.append(_encode(item, None))
            self.stats.published += 1
            return
        item.packet_id = packet_id = self._allocate_id()
        wire = item.wire = _encode(item, packet_id)
        item.released = False
        store = self.outgoing
        if not store.inflight and self.liveness is not None:
            self.liveness.publishes_waiting(self._now, True)
        store.inflight[packet_id] = item
        self._link.send_quota -= 1
        self._out.append(wire)
        self.stats.published += 1

    def _send_pending(self, events: list[Event]) -> None:
        link = self._link
        store = self.outgoing
        resend, inflight = store.resend, store.inflight
        while resend and link.send_quota > 0:
            item = resend.popleft()
            if inflight.get(item.packet_id) is item:  # not finished by an early ack
                self._resend_one(item)
        pending = store.pending
        limit = link.max_packet_size
        while pending and (link.send_quota > 0 or pending[0].qos == 0):
            item = store.pop_pending()
            refusal = self._unservable(item.qos, item.retain)
            if refusal is not None:
                # Queued before this broker said it cannot serve it: fails alone, unsent.
                self.stats.publish_failed += 1
                log.warning("queued message for %r not sent: %s", item.topic, refusal)
                events.append(PublishDone(item.handle, refusal.reason_code, None, refusal))
                continue
            if limit is not None and len(_encode(item, 1)) > limit:
                # Over this broker's maximum: this message fails alone, and never reaches the
                # wire (the broker would disconnect us, and the resend would loop forever).
                self.stats.publish_failed += 1
                log.warning(
                    "queued message for %r is over the broker's maximum packet size (%d "
                    "bytes): not sent",
                    item.topic,
                    limit,
                )
                error = PayloadTooLarge(len(item.payload), limit)
                store.forget(item)
                events.append(PublishDone(item.handle, _PACKET_TOO_LARGE, None, error))
                continue
            self._send_publish(item)

    def _unservable(self, qos: int, retain: bool) -> PublishError | None:
        """The refusal the broker's CONNACK announced for such a publish (Maximum QoS, Retain
        Available), if any: sent anyway, it would cost the link (0x9B, 0x9A)."""
        connack = self.connack
        if connack is None:
            return None
        if (qos == 1 or qos == 2) and qos > int(connack.max_qos):
            return PublishError(
                f"the broker serves QoS {int(connack.max_qos)} at most (CONNACK), not {qos}",
                _QOS_NOT_SUPPORTED,
            )
        if retain and connack.retain_available is False:
            return PublishError(
                "the broker does not keep retained messages (CONNACK): publish with retain=False",
                _RETAIN_NOT_SUPPORTED,
            )
        return None

    def _resend_one(self, item: Outgoing) -> None:
        """Send an earlier link's unfinished publish again, as MQTT 5 requires on resumption."""
        self._link.send_quota -= 1
        if self.liveness is not None:  # on the wire again: the ack timeout watches it too
            self.liveness.publishes_waiting(self._now, True)
        if item.released:
            self._out.append(PubRelPacket(item.packet_id).write())
        else:
            assert item.wire is not None
            wire = bytearray(item.wire)
            wire[0] |= 0x08  # DUP flag: this PUBLISH may have been seen before
            self._out.append(bytes(wire))

    def _finish(self, packet_id: int, events: list[Event], reason: int, text: str | None) -> None:
        store = self.outgoing
        item = store.inflight.pop(packet_id)
        store.forget(item)
        self._link.send_quota += 1
        if reason >= 0x80:
            self.stats.publish_failed += 1
            if item.handle is None:  # nobody awaits it: say it here
                log.warning("broker refused a publish on %r: reason code %#x", item.topic, reason)
        elif reason == _NO_SUBSCRIBERS:
            self.stats.no_subscribers += 1
        events.append(PublishDone(item.handle, reason, text))
        liveness = self.liveness
        if liveness is not None:
            liveness.acked(self._now)
            if not store.inflight:
                liveness.publishes_waiting(self._now, False)
        if store.pending or store.resend:
            self._send_pending(events)

    def _restart_session(self, events: list[Event]) -> None:
        """The broker has no session for us: what it never acknowledged is sent again as new.

        A QoS 2 publish whose PUBREC came is owned by the broker already: it is finished.
        """
        store = self.outgoing
        again: list[Outgoing] = []
        for item in store.inflight.values():
            if item.released:
                store.forget(item)
                events.append(PublishDone(item.handle, 0, "session not present; PUBREC received"))
            else:
                again.append(item)
        store.inflight.clear()
        store.pending.extendleft(reversed(again))
        self._incoming_qos2.clear()

    def _handle_pubrec(self, packet: PubRecPacket, events: list[Event]) -> None:
        packet_id = packet.packet_id
        item = self.outgoing.inflight.get(packet_id)
        if item is None or item.qos != 2:
            reason = mqtt5.PubRelReasonCode(_PACKET_ID_NOT_FOUND)
            self._out.append(PubRelPacket(packet_id, reason_code=reason).write())
            return
        reason_code = int(packet.reason_code)
        if reason_code >= 0x80:
            self._finish(packet_id, events, reason_code, packet.reason_str)
            return
        if reason_code == _NO_SUBSCRIBERS:
            self.stats.no_subscribers += 1
        item.released = True
        if self.liveness is not None:
            self.liveness.acked(self._now)
        self._out.append(PubRelPacket(packet_id).write())

    def _satisfied(self, waiter: _Waiter) -> bool:
        what = waiter.what
        if what is WaitFor.FLUSHED:
            return not self.outgoing.unfinished
        if what is WaitFor.CAPACITY:
            return self.state is not SessionState.CONNECTED or (
                self.outgoing.unfinished < self.unacked_limit
            )
        return self.state is SessionState.CONNECTED or self.outgoing.has_room(waiter.size)

    def _check_waiters(self, events: list[Event]) -> None:
        if not self._waiters:
            return
        keep: list[_Waiter] = []
        for waiter in self._waiters:
            if self._satisfied(waiter):
                events.append(Settled(waiter.handle))
            else:
                keep.append(waiter)
        self._waiters = keep
