"""What the broker does with each packet: the MQTT 5 server rules, over links and sessions.

The core is synchronous: a link hands it one decoded packet, it updates sessions and
subscriptions and writes answers through links. The only asynchrony is timers (will delay,
session expiry, delayed deliveries), all ``loop.call_later`` handles it owns and cancels in
:meth:`BrokerCore.shutdown`; no task is ever created here.

Which rules, briefly (MQTT 5.0 sections in brackets):

- CONNECT [3.1]: the first packet; an empty client id gets an assigned one; ``clean_start``
  discards the old session; a second connection with the same client id takes over (the old
  link gets DISCONNECT 0x8E); session expiry 0 ends the session with the connection.
- Will [3.1.2.5]: published when a link ends other than by DISCONNECT 0x00 (drop, keep-alive
  timeout, protocol error, takeover, DISCONNECT 0x04), after its will delay or when the session
  ends, whichever is first, unless the client reconnects meanwhile.
- PUBLISH [3.3, 4.3]: QoS 1 answered with PUBACK, QoS 2 with PUBREC and forwarded once (a
  repeat of a packet id awaiting PUBREL is answered, not forwarded); "no matching subscribers"
  (0x10) is reported on PUBACK and not on PUBREC, as Mosquitto 2.0 does. Topic aliases are
  not offered (maximum 0).
- Malformed bytes [4.13]: CONNACK 0x81 before the session exists, DISCONNECT 0x81 after, then
  close. Protocol errors likewise with 0x82 and friends.
- Malformed UTF-8 strings [1.5.4]: a topic name or filter holding a control or non-character
  gets DISCONNECT 0x81; any other string (a property, a user property, the client id, user
  name or will of a CONNECT) makes the broker close the connection without a word. Both as
  Mosquitto 2.0 does, so a test on this broker catches what would take production offline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import mqtt5

from .._errors import InvalidTopicError
from .._properties import malformed_property
from .._topics import forbidden_character, validate_topic_name
from ._broker_faults import Faults
from ._broker_link import BrokerLink, LinkState
from ._broker_router import Router
from ._broker_session import BrokerSession, Delivery, StoredMessage
from ._broker_subscribe import shared_no_local, subscribe, unsubscribe

__all__ = ["AuthCallback", "BrokerCore"]

_log = logging.getLogger("tars.mqtt.testing.broker")

AuthCallback = Callable[[str, str | None, bytes | None], bool]
"""``auth(client_id, username, password) -> accepted``; a refusal is CONNACK 0x86."""

_NEVER_EXPIRES = 0xFFFFFFFF
_Deliveries = list[tuple[str, Delivery]]


class BrokerCore:
    """Sessions, subscriptions and the packet rules of one broker (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_packet_size: int | None,
        receive_maximum: int,
        max_queued: int,
        auth: AuthCallback | None,
        faults: Faults,
        levels: frozenset[int] = frozenset((4, 5)),
    ) -> None:
        self._loop = loop
        self.levels = levels  # protocol levels accepted: 5 (MQTT 5), 4 (MQTT 3.1.1)
        self.max_packet_size = max_packet_size
        self.receive_maximum = receive_maximum
        self.max_queued = max_queued
        self.auth = auth
        self.accepting = True  # False while the broker restarts or closes
        self.router = Router()
        self.faults = faults
        self.sessions: dict[str, BrokerSession] = {}
        self.links: dict[BrokerLink, None] = {}  # every open link, in opening order
        self.connected: dict[str, BrokerLink] = {}  # client id -> its CONNACK-ed link
        self._will_timers: dict[str, asyncio.TimerHandle] = {}
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}
        self._delayed: deque[tuple[float, _Deliveries]] = deque()
        self._delay_timer: asyncio.TimerHandle | None = None
        self._assigned_ids = itertools.count(1)
        self._clients_311: set[str] = set()  # sessions last connected with MQTT 3.1.1

    def now(self) -> float:
        return self._loop.time()

    # -- links ---------------------------------------------------------------------------------

    def link_opened(self, link: BrokerLink) -> None:
        self.links[link] = None

    def link_lost(self, link: BrokerLink) -> None:
        self.links.pop(link, None)
        self.detach(link, send_will=True)

    def handle(self, link: BrokerLink, packet: mqtt5.Packet) -> None:
        """Apply one packet received on ``link``."""
        if link.state is LinkState.AWAIT_CONNECT:
            if isinstance(packet, mqtt5.ConnectPacket):
                self._on_connect(link, packet)
            else:
                self.protocol_error(link, 0x82, f"{type(packet).__name__} before CONNECT")
            return
        session = link.session
        if session is None:  # closing: whatever follows does not count
            return
        if isinstance(packet, mqtt5.PublishPacket):
            self._on_publish(link, session, packet)
        elif isinstance(packet, mqtt5.PubAckPacket):
            self._send(link, session, session.on_puback(packet.packet_id, self.now()))
        elif isinstance(packet, mqtt5.PubRecPacket):
            code = int(packet.reason_code)
            self._send(link, session, session.on_pubrec(packet.packet_id, code, self.now()))
        elif isinstance(packet, mqtt5.PubRelPacket):
            self._on_pubrel(link, session, packet)
        elif isinstance(packet, mqtt5.PubCompPacket):
            self._send(link, session, session.on_pubcomp(packet.packet_id, self.now()))
        elif isinstance(packet, mqtt5.SubscribePacket):
            self._on_subscribe(link, session, packet)
        elif isinstance(packet, mqtt5.UnsubscribePacket):
            self._on_unsubscribe(link, session, packet)
        elif isinstance(packet, mqtt5.PingReqPacket):
            link.send(mqtt5.PingRespPacket())
        elif isinstance(packet, mqtt5.DisconnectPacket):
            self._on_disconnect(link, session, packet)
        else:
            self.protocol_error(link, 0x82, f"unexpected {type(packet).__name__}")

    def protocol_error(self, link: BrokerLink, reason_code: int, why: str) -> None:
        """The client broke MQTT: tell it (CONNACK or DISCONNECT), close, publish its will."""
        _log.debug("%r: %s -> closing with %#x", link, why, reason_code)
        link.disconnect(reason_code)
        self.detach(link, send_will=True)

    def keep_alive_expired(self, link: BrokerLink) -> None:
        self.protocol_error(link, 0x8D, "keep-alive timeout")

    def detach(self, link: BrokerLink, *, send_will: bool) -> None:
        """Unbind a closing link from its session: will, session end or expiry timer."""
        client_id, session = link.client_id, link.session
        link.session = None
        if client_id is None or session is None:
            return
        if self.connected.get(client_id) is link:
            del self.connected[client_id]
        session.detach()
        will = link.will if send_will else None
        link.will = None
        if session.expiry_interval == 0:
            self.end_session(client_id)
            if will is not None:
                self._publish_will(client_id, will)
            return
        if will is not None:
            delay = min(will.will_delay_interval, session.expiry_interval)
            if delay <= 0:
                self._publish_will(client_id, will)
            else:
                self._will_timers[client_id] = self._loop.call_later(
                    delay, self._fire_will, client_id, will
                )
        if session.expiry_interval != _NEVER_EXPIRES:
            self._expiry_timers[client_id] = self._loop.call_later(
                session.expiry_interval, self.end_session, client_id
            )

    def end_session(self, client_id: str) -> None:
        """Forget a session: its subscriptions, queue and in-flight state."""
        self._clients_311.discard(client_id)
        timer = self._expiry_timers.pop(client_id, None)
        if timer is not None:
            timer.cancel()
        if self.sessions.pop(client_id, None) is not None:
            self.router.remove_client(client_id)
            _log.debug("session %r ended", client_id)

    def _fire_will(self, client_id: str, will: mqtt5.Will) -> None:
        self._will_timers.pop(client_id, None)
        self._publish_will(client_id, will)

    def _publish_will(self, client_id: str, will: mqtt5.Will) -> None:
        _log.debug("will of %r published on %r", client_id, will.topic)
        self.publish(StoredMessage.from_will(will, client_id, self.now()))

    # -- CONNECT -------------------------------------------------------------------------------

    def _on_connect(self, link: BrokerLink, packet: mqtt5.ConnectPacket) -> None:
        why = _malformed_connect(packet)
        if why is not None:
            self._close_malformed(link, why)
            return
        if packet.receive_max == 0 or packet.max_packet_size == 0:
            self.protocol_error(link, 0x82, "receive maximum or maximum packet size of 0")
            return
        if packet.authentication_method is not None:
            self.protocol_error(link, 0x8C, "enhanced authentication is not supported")
            return
        if packet.will is not None:
            try:
                validate_topic_name(packet.will.topic)
            except InvalidTopicError as exc:
                self.protocol_error(link, 0x90, f"will: {exc}")
                return
        if self.auth is not None and not self.auth(
            packet.client_id, packet.username, packet.password
        ):
            self.protocol_error(link, 0x86, f"credentials of {packet.client_id!r} refused")
            return
        client_id = packet.client_id
        if not client_id and not packet.clean_start and link.level == 4:
            # MQTT 3.1.1 (3.1.3-8): an empty client id needs a clean session (return code 2);
            # MQTT 5 assigns one instead.
            self.protocol_error(link, 0x85, "empty client id without clean session (3.1.1)")
            return
        assigned: str | None = None
        if not client_id:
            client_id = assigned = f"auto-{next(self._assigned_ids)}-{secrets.token_hex(4)}"
        previous = self.connected.get(client_id)
        if previous is not None:
            _log.debug("%r taken over by a new connection", previous)
            previous.disconnect(0x8E)
            self.detach(previous, send_will=True)
        will_timer = self._will_timers.pop(client_id, None)
        if will_timer is not None:
            will_timer.cancel()  # reconnected within the will delay: no will
        expiry_timer = self._expiry_timers.pop(client_id, None)
        if expiry_timer is not None:
            expiry_timer.cancel()
        session = self.sessions.get(client_id)
        present = session is not None and not packet.clean_start
        if session is not None and packet.clean_start:
            self.end_session(client_id)
            session = None
        if session is None:
            session = BrokerSession(client_id, max_queued=self.max_queued)
            self.sessions[client_id] = session
        if link.level == 4:
            self._clients_311.add(client_id)
        else:
            self._clients_311.discard(client_id)
        session.expiry_interval = packet.session_expiry_interval
        session.attach(receive_maximum=packet.receive_max, max_packet_size=packet.max_packet_size)
        link.bind(client_id, session, packet.will, packet.keep_alive)
        self.connected[client_id] = link
        link.send(
            mqtt5.ConnAckPacket(
                session_present=present,
                assigned_client_id=assigned,
                receive_max=self.receive_maximum,
                max_packet_size=self.max_packet_size,
                topic_alias_max=0,
            )
        )
        _log.debug("%r connected (session present: %s)", link, present)
        self._send(link, session, session.resume(self.now()))

    # -- PUBLISH and its acknowledgements ------------------------------------------------------

    def _on_publish(
        self, link: BrokerLink, session: BrokerSession, packet: mqtt5.PublishPacket
    ) -> None:
        if packet.topic_alias is not None:
            self.protocol_error(link, 0x94, "topic alias used but none offered")
            return
        if self._malformed_strings(link, "topic", (packet.topic,)):
            return
        try:
            validate_topic_name(packet.topic)
        except InvalidTopicError as exc:
            self.protocol_error(link, 0x90, str(exc))
            return
        why = malformed_property(packet.content_type, packet.response_topic, packet.user_properties)
        if why is not None:
            self._close_malformed(link, why)
            return
        qos = int(packet.qos)
        packet_id = packet.packet_id or 0
        if qos and not packet_id:
            self.protocol_error(link, 0x82, "QoS > 0 PUBLISH with packet id 0")
            return
        if qos == 2 and packet_id in session.inbound_qos2:
            link.send(mqtt5.PubRecPacket(packet_id))  # a repeat before PUBREL: answer only
            return
        if qos == 2 and len(session.inbound_qos2) >= self.receive_maximum:
            self.protocol_error(link, 0x93, "receive maximum exceeded")
            return
        assert link.client_id is not None
        matched = self.publish(StoredMessage.from_publish(packet, link.client_id, self.now()))
        # As Mosquitto 2.0: "no matching subscribers" (0x10) on PUBACK; PUBREC says Success.
        code = 0x10 if qos == 1 and not matched else 0x00
        if qos == 1:
            link.send(mqtt5.PubAckPacket(packet_id, reason_code=mqtt5.PubAckReasonCode(code)))
        elif qos == 2:
            session.inbound_qos2.add(packet_id)
            link.send(mqtt5.PubRecPacket(packet_id, reason_code=mqtt5.PubRecReasonCode(code)))

    def _on_pubrel(
        self, link: BrokerLink, session: BrokerSession, packet: mqtt5.PubRelPacket
    ) -> None:
        if packet.packet_id in session.inbound_qos2:
            session.inbound_qos2.discard(packet.packet_id)
            link.send(mqtt5.PubCompPacket(packet.packet_id))
        else:
            reason = mqtt5.PubCompReasonCode.PACKET_ID_NOT_FOUND
            link.send(mqtt5.PubCompPacket(packet.packet_id, reason_code=reason))

    # -- routing -------------------------------------------------------------------------------

    def publish(self, message: StoredMessage) -> bool:
        """Retain and fan out one message (later, while a delivery delay is set).

        Returns:
            Whether any subscription matched (for the 0x10 reason code).
        """
        if message.retain:
            self.router.retain(message)
        deliveries = self.router.route(message, self.connected.__contains__)
        if self.faults.delay > 0 or self._delayed:
            self._delayed.append((self.now() + self.faults.delay, deliveries))
            self._arm_delay_timer()
        else:
            self._deliver(deliveries)
        return bool(deliveries)

    def _deliver(self, deliveries: _Deliveries) -> None:
        if self._clients_311:
            deliveries = self._one_copy_each_311(deliveries)
        now = self.now()
        for client_id, delivery in deliveries:
            session = self.sessions.get(client_id)
            if session is None:
                continue
            packets = session.offer(delivery, now)
            if self.faults.take_duplicate(delivery.message.topic):
                # Delivered again as a message of its own (its own packet id): the duplicate
                # that at-least-once really produces (a publisher resending after a lost
                # PUBACK), which only the receiver's dedup can recognise.
                _log.debug("delivery on %r duplicated", delivery.message.topic)
                packets = [*packets, *session.offer(delivery, now)]
            link = self.connected.get(client_id)
            if link is not None:
                self._send(link, session, packets)

    def _one_copy_each_311(self, deliveries: _Deliveries) -> _Deliveries:
        """A 3.1.1 client gets one copy of a message its subscriptions overlap on, at the
        highest of their QoS (MQTT 3.1.1, 3.3.5; what Mosquitto does): with no subscription
        identifiers, it could not tell further copies from duplicates."""
        out: _Deliveries = []
        first: dict[str, int] = {}
        for client_id, delivery in deliveries:
            if client_id in self._clients_311:
                index = first.get(client_id)
                if index is not None:
                    kept = out[index][1]
                    qos, retain = max(kept.qos, delivery.qos), kept.retain or delivery.retain
                    out[index] = (client_id, replace(kept, qos=qos, retain=retain))
                    continue
                first[client_id] = len(out)
            out.append((client_id, delivery))
        return out

    def _send(self, link: BrokerLink, session: BrokerSession, out: Sequence[mqtt5.Packet]) -> None:
        for packet in out:
            link.send(packet)
        if link.holding_reordered and session.window_full():
            link.release_reordered()  # nothing more can come: do not hold the rest forever

    def _arm_delay_timer(self) -> None:
        if self._delay_timer is None and self._delayed:
            self._delay_timer = self._loop.call_at(self._delayed[0][0], self._release_delayed)

    def _release_delayed(self) -> None:
        self._delay_timer = None
        now = self.now()
        while self._delayed and self._delayed[0][0] <= now:
            self._deliver(self._delayed.popleft()[1])
        self._arm_delay_timer()

    # -- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------------

    def _on_subscribe(
        self, link: BrokerLink, session: BrokerSession, packet: mqtt5.SubscribePacket
    ) -> None:
        if packet.packet_id == 0 or packet.subscription_id == 0:
            self.protocol_error(link, 0x82, "SUBSCRIBE with packet id or subscription id 0")
            return
        if shared_no_local(packet):
            self.protocol_error(link, 0x82, "no local on a shared subscription")
            return
        why = malformed_property(None, None, packet.user_properties)
        if why is not None:
            self._close_malformed(link, why)
            return
        if self._malformed_strings(link, "filter", [f.pattern for f in packet.topic_filters]):
            return
        now = self.now()
        codes, retained = subscribe(self.router, self.faults, session.client_id, packet, now)
        link.send(mqtt5.SubAckPacket(packet.packet_id, codes))
        for delivery in retained:
            self._send(link, session, session.offer(delivery, now))

    def _on_unsubscribe(
        self, link: BrokerLink, session: BrokerSession, packet: mqtt5.UnsubscribePacket
    ) -> None:
        if packet.packet_id == 0:
            self.protocol_error(link, 0x82, "UNSUBSCRIBE with packet id 0")
            return
        why = malformed_property(None, None, packet.user_properties)
        if why is not None:
            self._close_malformed(link, why)
            return
        if self._malformed_strings(link, "filter", packet.patterns):
            return
        codes = unsubscribe(self.router, session.client_id, packet.patterns)
        link.send(mqtt5.UnsubAckPacket(packet.packet_id, codes))

    def _malformed_strings(self, link: BrokerLink, what: str, texts: Iterable[str]) -> bool:
        """As Mosquitto: a control or non-character in a topic (MQTT 5 section 1.5.4) makes the
        packet malformed (0x81) and ends the link, so the kit catches what production would."""
        for text in texts:
            reason = forbidden_character(text)
            if reason is not None:
                self.protocol_error(link, 0x81, f"{what} {text!r} {reason}")
                return True
        return False

    def _close_malformed(self, link: BrokerLink, why: str) -> None:
        """As Mosquitto 2.0 on a malformed string that is not a topic: close the connection
        without a DISCONNECT (nor a CONNACK), and publish the will of a connected client."""
        _log.debug("%r: %s -> closing without a word, as Mosquitto", link, why)
        link.close()
        self.detach(link, send_will=True)

    # -- the rest ------------------------------------------------------------------------------

    def _on_disconnect(
        self, link: BrokerLink, session: BrokerSession, packet: mqtt5.DisconnectPacket
    ) -> None:
        new_expiry = packet.session_expiry_interval
        if new_expiry is not None:
            if session.expiry_interval == 0 and new_expiry != 0:
                self.protocol_error(link, 0x82, "session expiry set on DISCONNECT after 0")
                return
            session.expiry_interval = new_expiry
        if packet.reason_code == mqtt5.DisconnectReasonCode.NORMAL_DISCONNECTION:
            link.will = None
        _log.debug("%r disconnected (%s)", link, packet.reason_code.name)
        link.close()
        self.detach(link, send_will=True)

    # -- broker-wide operations ----------------------------------------------------------------

    def forget_everything(self) -> None:
        """Drop every session, retained message and delayed delivery (links must be gone)."""
        for client_id in list(self.sessions):
            self.end_session(client_id)
        self.router.clear_retained()
        self._cancel_timers()

    def shutdown(self) -> None:
        """Cancel every timer: nothing of the broker runs after this."""
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        for timer in itertools.chain(self._will_timers.values(), self._expiry_timers.values()):
            timer.cancel()
        self._will_timers.clear()
        self._expiry_timers.clear()
        self._delayed.clear()
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None


def _malformed_connect(packet: mqtt5.ConnectPacket) -> str | None:
    """Why a string of ``packet`` breaks MQTT 5 section 1.5.4 (its user properties, client id,
    authentication method, will topic and properties, user name), or None."""
    why = malformed_property(None, None, packet.user_properties)
    if why is not None:
        return f"CONNECT: {why}"
    for what, text in (
        ("client id", packet.client_id),
        ("authentication method", packet.authentication_method),
        ("will topic", packet.will.topic if packet.will is not None else None),
        ("user name", packet.username),
    ):
        reason = None if text is None else forbidden_character(text)
        if reason is not None:
            return f"CONNECT: the {what} {reason}"
    will = packet.will
    if will is not None:
        why = malformed_property(will.content_type, will.response_topic, will.user_properties)
        if why is not None:
            return f"CONNECT: will: {why}"
    return None
