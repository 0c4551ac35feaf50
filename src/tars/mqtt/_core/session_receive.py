"""The receiving part of the session: bytes in, packets handled, events out.

Chunks are framed here (:mod:`._framing`: a partial packet waits for the rest, a bad first
byte or length ends the link at once, a codec panic never reaches the process); each packet is
checked against what MQTT 5 allows in the link's state. On CONNACK the session itself queues the
resends, the subscription restore and the pending publishes, in that order.
"""

from __future__ import annotations

import logging

import mqtt5
from mqtt5 import (
    ConnAckPacket,
    DisconnectPacket,
    PingRespPacket,
    PubAckPacket,
    PubCompPacket,
    PublishPacket,
    PubRecPacket,
    PubRelPacket,
    SubAckPacket,
    UnsubAckPacket,
)

from .._errors import (
    OutboxFullError,
)
from .events import (
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    PublishDone,
)
from .framing import FramingError, bad_publish_topic, check_fixed_header, frame_length
from .session_base import (
    _ENDED,
    _MALFORMED,
    _MQTT3_ONLY,
    _PACKET_ID_NOT_FOUND,
    _PACKET_TOO_LARGE,
    _PROTOCOL_ERROR,
    _RECEIVE_MAX_EXCEEDED,
    _TOPIC_ALIAS_INVALID,
    _UNSUPPORTED_PROTOCOL_VERSION,
    SessionState,
)
from .session_publish import Publishing
from .session_subscribe import Subscribing

__all__ = ["Receiving"]

log = logging.getLogger("tars.mqtt")


class Receiving(Publishing, Subscribing):
    """Input: framing and packet handling (a part of :class:`~._session.Session`)."""

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the link; returns the events they complete, in order."""
        if self.state in _ENDED:
            return []
        self._now = now
        link = self._link
        if link.rest:
            # Chunks are kept apart until the packet is complete: joining at every chunk would
            # copy a large payload once per chunk.
            link.rest.append(data)
            link.rest_size += len(data)
            if link.rest_size < link.need:
                return []
            data = b"".join(link.rest)
            link.rest.clear()
            link.rest_size = link.need = 0
        events: list[Event] = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        read = mqtt5.read
        handle = self._handle_packet
        limit = self.max_packet_size
        try:
            check_topics = not data.isascii()  # an ASCII chunk has only UTF-8 topics
            while pos < end:
                if check_topics and data[pos] >> 4 == 3 and bad_publish_topic(data, pos):
                    self._protocol_error(events, _MALFORMED, "malformed packet: topic not UTF-8")
                    return events
                try:
                    packet, size = read(view[pos:])
                except IndexError:
                    try:
                        check_fixed_header(data[pos])
                        need = frame_length(data, pos) or 0
                    except FramingError as exc:
                        self._protocol_error(events, _MALFORMED, str(exc))
                        return events
                    if need and end - pos >= need:  # all there: its fields overrun its length
                        self._protocol_error(events, _MALFORMED, "malformed packet: truncated")
                        return events
                    break
                except ValueError as exc:
                    if self.state is SessionState.CONNECTING and data[pos : pos + 2] == b"\x20\x02":
                        # A CONNACK with a 2-byte body is MQTT 3.1.1's (MQTT 5's has at least
                        # a property length): the broker refused our version. No retry fixes it.
                        self.state = SessionState.CLOSING
                        events.append(ConnectFailed(_UNSUPPORTED_PROTOCOL_VERSION, _MQTT3_ONLY))
                        return events
                    self._protocol_error(events, _MALFORMED, f"malformed packet: {exc}")
                    return events
                except BaseException as exc:
                    # mqtt5 0.8 panics on invalid UTF-8 in a string field: pyo3's
                    # PanicException derives from BaseException. A broker's bad bytes must
                    # end the link, not the process.
                    if type(exc).__name__ != "PanicException":
                        raise
                    self._protocol_error(events, _MALFORMED, "malformed packet: invalid UTF-8")
                    return events
                pos += size
                if limit is not None and size > limit:
                    self._protocol_error(events, _PACKET_TOO_LARGE, "packet over our maximum")
                    return events
                if type(packet) is PublishPacket and self.state is SessionState.CONNECTED:
                    self._handle_publish(packet, events)
                else:
                    handle(packet, events, now)
                if self.state in _ENDED:
                    return events
        finally:
            view.release()
        if pos < end:
            rest = data[pos:]
            need = frame_length(rest) or 0
            if limit is not None and need > limit:
                # Refuse it before buffering it: the broker ignored our Maximum Packet Size.
                self._protocol_error(events, _PACKET_TOO_LARGE, "packet over our maximum")
                return events
            link.rest.append(rest)
            link.rest_size = len(rest)
            link.need = need
        if self._waiters:
            self._check_waiters(events)
        return events

    def _handle_publish(self, packet: PublishPacket, events: list[Event]) -> None:
        topic = packet.topic
        if not topic or "+" in topic or "#" in topic or packet.topic_alias is not None:
            # We never allow Topic Aliases (no Topic Alias Maximum in our CONNECT), and a topic
            # name has no wildcards: such a PUBLISH reaching a "#" handler would be a lie.
            if packet.topic_alias is not None:
                self._protocol_error(events, _TOPIC_ALIAS_INVALID, "PUBLISH with a topic alias")
            else:
                self._protocol_error(
                    events, _PROTOCOL_ERROR, f"PUBLISH with an invalid topic name {topic!r}"
                )
            return
        if packet.topic == self._heartbeat_topic and self.liveness is not None:
            self.liveness.heartbeat_returned()
        qos = packet.qos
        if qos == 0:
            events.append(packet)
            return
        packet_id = packet.packet_id
        if not packet_id:
            self._protocol_error(events, _PROTOCOL_ERROR, "QoS > 0 PUBLISH without a packet id")
            return
        incoming, held = self._incoming_qos2, self._held
        if qos == 2 and packet_id in incoming:
            # A resend of a message we already delivered: acknowledge again, deliver once.
            self._out.append(PubRecPacket(packet_id).write())
            return
        if packet_id in held:
            return  # sent again before we acknowledged it: it is being handled already
        if len(incoming) >= self.receive_maximum:
            self._protocol_error(events, _RECEIVE_MAX_EXCEEDED, "broker exceeded Receive Maximum")
            return
        if self.ack_after_handling:
            if len(held) == self.receive_maximum:
                # Some brokers ignore it (Mosquitto with max_inflight_messages 0): tolerated,
                # as ending the link would lose more, but flow control is then the broker's.
                self.stats.receive_maximum_exceeded += 1
                if self.stats.receive_maximum_exceeded == 1:
                    log.warning(
                        "%s: the broker sends more unacknowledged messages than our Receive "
                        "Maximum (%d); they are accepted, but memory is then bounded only by "
                        "the broker's own limits",
                        self.client_id,
                        self.receive_maximum,
                    )
            held.hold(packet_id, qos)  # acknowledged by ack(), once handled (see _incoming)
        elif qos == 1:
            self._out.append(PubAckPacket(packet_id).write())
        else:
            incoming.add(packet_id)
            self._out.append(PubRecPacket(packet_id).write())
        events.append(packet)

    def _handle_packet(self, packet: mqtt5.Packet, events: list[Event], now: float) -> None:
        kind = type(packet)
        if self.state is SessionState.CONNECTING:
            if kind is ConnAckPacket:
                assert isinstance(packet, ConnAckPacket)
                self._handle_connack(packet, events, now)
            elif kind is DisconnectPacket:
                assert isinstance(packet, DisconnectPacket)
                self._handle_disconnect(packet, events)
            else:
                self._protocol_error(events, _PROTOCOL_ERROR, f"{kind.__name__} before CONNACK")
            return
        inflight = self.outgoing.inflight
        if kind is PubAckPacket:
            assert isinstance(packet, PubAckPacket)
            item = inflight.get(packet.packet_id)
            if item is not None and item.qos == 1:
                self._finish(packet.packet_id, events, int(packet.reason_code), packet.reason_str)
        elif kind is PubRecPacket:
            assert isinstance(packet, PubRecPacket)
            self._handle_pubrec(packet, events)
        elif kind is PubCompPacket:
            assert isinstance(packet, PubCompPacket)
            item = inflight.get(packet.packet_id)
            if item is not None and item.qos == 2 and item.released:
                self._finish(packet.packet_id, events, int(packet.reason_code), packet.reason_str)
        elif kind is PubRelPacket:
            assert isinstance(packet, PubRelPacket)
            known = packet.packet_id in self._incoming_qos2
            self._incoming_qos2.discard(packet.packet_id)
            reason = mqtt5.PubCompReasonCode(0 if known else _PACKET_ID_NOT_FOUND)
            self._out.append(PubCompPacket(packet.packet_id, reason_code=reason).write())
        elif kind is SubAckPacket or kind is UnsubAckPacket:
            assert isinstance(packet, SubAckPacket | UnsubAckPacket)
            self._handle_request_ack(packet, events)
        elif kind is PingRespPacket:
            self._link.ping_deadline = None
        elif kind is DisconnectPacket:
            assert isinstance(packet, DisconnectPacket)
            self._handle_disconnect(packet, events)
        else:
            self._protocol_error(events, _PROTOCOL_ERROR, f"unexpected {kind.__name__} from broker")

    def _handle_connack(self, packet: ConnAckPacket, events: list[Event], now: float) -> None:
        reason = int(packet.reason_code)
        if reason >= 0x80:
            self.state = SessionState.CLOSING
            events.append(ConnectFailed(reason, packet.reason_str, packet.server_reference))
            return
        self.state = SessionState.CONNECTED
        self.connack = packet
        first = not self._connected_once
        self._connected_once = True
        if packet.assigned_client_id:
            self.client_id = packet.assigned_client_id
        link = self._link
        link.connacked = True
        link.send_quota = packet.receive_max
        link.max_packet_size = packet.max_packet_size
        keep_alive = packet.server_keep_alive
        link.keep_alive = self.keep_alive if keep_alive is None else keep_alive
        link.next_ping = now + link.keep_alive if link.keep_alive > 0 else None
        link.session_present = present = bool(packet.session_present)
        link.first = first
        if self.liveness is not None:
            self.liveness.link_started(now)
        store = self.outgoing
        for item in store.take_expired(now):
            events.append(
                PublishDone(item.handle, 0x80, "expired", OutboxFullError("message expired"))
            )
        if present:
            # The broker kept our session: resend what it has not acknowledged, in order,
            # before any new publish, as the broker's Receive Maximum allows.
            store.resend.extend(store.inflight.values())
        else:
            self._restart_session(events)
        events.append(Connected(present, packet))
        self._restore(fresh=first or not present)
        self._send_pending(events)
        if not link.restoring:
            self._become_ready(events)

    def _handle_disconnect(self, packet: DisconnectPacket, events: list[Event]) -> None:
        self.state = SessionState.CLOSING
        self._link.broker_reason = int(packet.reason_code)  # for the poison-message breaker
        events.append(
            Disconnected(
                int(packet.reason_code),
                packet.reason_str,
                by_peer=True,
                server_reference=packet.server_reference,
            )
        )
