"""One network connection of the broker: framing, writing, keep-alive and link-level faults.

A :class:`BrokerLink` is the ``asyncio.Protocol`` on the broker's side of a connection, TCP or
in-memory alike. It cuts the byte stream into packets with the framing the client uses too
(``tars.mqtt._core.framing``), checking the broker's maximum packet size before buffering a whole
packet, hands them to its :class:`LinkOwner` (the broker core), and writes the core's answers,
coalesced per loop turn. It owns no MQTT state: the session does.

The broker does not slow down on ``pause_writing``: a client that stops reading lets its
buffer grow, bounded for QoS 1/2 by its own receive maximum (a dev broker's trade-off).

Faults that act on the wire live here: a stalled link neither reads nor writes (its socket stays
open and what it would have written is held until unstalled), a PUBLISH may be written twice,
and a run of PUBLISH packets may be held and written in reverse order.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

import mqtt5

from .._core import mqtt311
from .._core.framing import FramingError, check_fixed_header, frame_length, read_packet
from ._broker_faults import Faults
from ._broker_session import BrokerSession

__all__ = ["BrokerLink", "LinkOwner", "LinkState"]

_log = logging.getLogger("tars.mqtt.testing.broker")

_CONNECT_TIMEOUT = 10.0  # seconds a new connection may take to send CONNECT
_V311_UNSUPPORTED = b"\x20\x02\x00\x01"  # MQTT 3.1.1 CONNACK: unacceptable protocol version


class LinkState(enum.Enum):
    AWAIT_CONNECT = "await-connect"
    CONNECTED = "connected"
    CLOSING = "closing"
    CLOSED = "closed"


class LinkOwner(Protocol):
    """What a link needs from the broker it belongs to (the broker core satisfies it).

    Declared here, on the link's side, so that the link does not import the core: the core
    knows links, a link knows only this.
    """

    @property
    def accepting(self) -> bool: ...
    @property
    def max_packet_size(self) -> int | None: ...
    @property
    def levels(self) -> frozenset[int]: ...  # protocol levels accepted: 5 (MQTT 5), 4 (3.1.1)
    @property
    def faults(self) -> Faults: ...
    def now(self) -> float: ...
    def link_opened(self, link: BrokerLink) -> None: ...
    def link_lost(self, link: BrokerLink) -> None: ...
    def handle(self, link: BrokerLink, packet: mqtt5.Packet) -> None: ...
    def protocol_error(self, link: BrokerLink, reason_code: int, why: str) -> None: ...
    def keep_alive_expired(self, link: BrokerLink) -> None: ...


def _write_mqtt5(packet: mqtt5.Packet) -> bytes:
    return packet.write()


class BrokerLink(asyncio.Protocol):
    """The broker's end of one connection (see the module docstring)."""

    def __init__(self, owner: LinkOwner, label: str) -> None:
        self._owner = owner
        self.label = label
        self.state = LinkState.AWAIT_CONNECT
        self.client_id: str | None = None
        self.session: BrokerSession | None = None
        self.will: mqtt5.Will | None = None
        self.keep_alive = 0
        self.stalled = False
        self.closed = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._inbound = bytearray()
        self._outbound = bytearray()
        self._held = bytearray()
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_received = 0.0
        self._reorder_left = 0
        self._reordered: list[mqtt5.PublishPacket] = []
        # The codec of this link, chosen by its CONNECT's protocol level (4: MQTT 3.1.1).
        self.level = 5
        self._read: Callable[[bytes], tuple[mqtt5.Packet, int]] = read_packet
        self._write: Callable[[mqtt5.Packet], bytes] = _write_mqtt5

    def __repr__(self) -> str:
        return f"<BrokerLink {self.label} {self.client_id!r} {self.state.value}>"

    # -- asyncio.Protocol ----------------------------------------------------------------------

    # An exception raised in one of these callbacks (or in the flush and timer callbacks) would
    # go to the loop's exception handler and leave this link stuck: its client waits for a
    # CONNACK or an ack until its own timeout, or for ever. Each one is caught, logged with
    # what raised it (a bug of the broker's, a user's auth callback), and drops the link
    # (_callback_failed): the client sees a lost link at once and reconnects.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport by asyncio's contract, whatever its class (uvloop's is not a
        # subclass of asyncio.Transport): a cast, never a check.
        self._transport = transport = cast(asyncio.Transport, transport)
        try:
            if not self._owner.accepting:
                self.abort()  # accepted by a listener of a broker that is going down
                return
            peer = transport.get_extra_info("peername")
            if peer:
                self.label = f"{self.label} {peer[0]}:{peer[1]}"
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # Without it, every small ack waits for the peer's delayed ACK (tens of ms).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._last_received = self._owner.now()
            self._arm_timer(_CONNECT_TIMEOUT)
            self._owner.link_opened(self)
        except Exception as exc:
            self._callback_failed("connection_made", exc)

    def data_received(self, data: bytes) -> None:
        if self.state not in (LinkState.AWAIT_CONNECT, LinkState.CONNECTED):
            return
        try:
            self._last_received = self._owner.now()
            self._inbound += data
            self._process()
        except Exception as exc:
            self._callback_failed("data_received", exc)

    def eof_received(self) -> bool | None:
        return False  # a half-closed MQTT connection is a closed one

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = LinkState.CLOSED
        self._cancel_timer()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._inbound.clear()
        self._outbound.clear()
        self._held.clear()
        self._reordered.clear()
        _log.debug("%r lost (%s)", self, exc or "closed")
        try:
            self._owner.link_lost(self)
        except Exception as error:
            self._callback_failed("connection_lost", error)
        finally:
            self.closed.set()  # whoever waits for this link (close(), drop_link()) goes on

    def _callback_failed(self, callback: str, exc: Exception) -> None:
        """A callback of this link raised: log it with its traceback and drop the link (no
        DISCONNECT, as a crash would: its will is published); every other link goes on."""
        _log.error(
            "%r: the link's %s callback raised %r; dropping the link",
            self,
            callback,
            exc,
            exc_info=exc,
        )
        self.abort()

    # -- reading -------------------------------------------------------------------------------

    def _process(self) -> None:
        buffer = self._inbound
        pos = 0
        try:
            while (
                pos < len(buffer)
                and not self.stalled
                and self.state in (LinkState.AWAIT_CONNECT, LinkState.CONNECTED)
            ):
                check_fixed_header(buffer[pos])  # refuse garbage before waiting for its body
                total = frame_length(buffer, pos)
                if total is None:
                    break
                limit = self._owner.max_packet_size
                if limit is not None and total > limit:
                    self._owner.protocol_error(self, 0x95, f"packet of {total} bytes over {limit}")
                    break
                if len(buffer) - pos < total:
                    break
                chunk = bytes(buffer[pos : pos + total])
                pos += total
                packet = self._decode(chunk)
                if packet is None:
                    break
                self._owner.handle(self, packet)
        except FramingError as exc:  # a reserved first byte or a broken remaining length
            self._owner.protocol_error(self, 0x81, str(exc))
        finally:
            del buffer[:pos]

    def _decode(self, chunk: bytes) -> mqtt5.Packet | None:
        """One whole packet's bytes to a packet; None (and the link closing) when malformed."""
        if self.state is LinkState.AWAIT_CONNECT and chunk[0] == 0x10:
            level = mqtt311.connect_level(chunk)
            if level == mqtt311.PROTOCOL_LEVEL and level in self._owner.levels:
                self.level = level
                self._read = mqtt311.read
                self._write = mqtt311.write
            elif level == 5 and level not in self._owner.levels:
                # What a 3.1.1-only broker answers an MQTT 5 CONNECT (3.1.2.2): return code 1.
                _log.info("%r: MQTT 5 client refused: this broker speaks MQTT 3.1.1 only", self)
                self.write_raw(_V311_UNSUPPORTED)
                self.close()
                return None
        try:
            packet, size = self._read(chunk)
        except (FramingError, IndexError) as exc:
            level = mqtt311.connect_level(chunk) if chunk[0] == 0x10 else None
            if self.state is LinkState.AWAIT_CONNECT and level in (3, 4) and self.level == 5:
                # WARNING: an old client (MQTT 3.1), or one of the wrong version, and a refusal
                # seen only by the client ("unacceptable protocol version") is easy to misread.
                spoken = " and ".join(f"MQTT {'5' if v == 5 else '3.1.1'}" for v in (5, 4)
                                      if v in self._owner.levels)  # fmt: skip
                _log.warning(
                    "%r: MQTT 3.x client refused (protocol level %d): this broker speaks %s; "
                    "tell Mosquitto's clients so with -V 5 or -V 311",
                    self,
                    level,
                    spoken,
                )
                self.write_raw(_V311_UNSUPPORTED)
                self.close()
                return None
            # IndexError: the whole packet is here, so its fields overrun its remaining length.
            why = str(exc) if isinstance(exc, FramingError) else "malformed packet: truncated"
            self._owner.protocol_error(self, 0x81, why)
            return None
        if size != len(chunk):
            self._owner.protocol_error(self, 0x81, "packet shorter than its remaining length")
            return None
        return packet

    # -- writing -------------------------------------------------------------------------------

    def send(self, packet: mqtt5.Packet) -> None:
        """Write one packet (coalesced with the others of this loop turn)."""
        if isinstance(packet, mqtt5.PublishPacket) and not packet.duplicate:
            self._send_fresh_publish(packet)
        else:
            self.write_raw(self._write(packet))

    def write_raw(self, data: bytes) -> None:
        if self.state is LinkState.CLOSED or self._transport is None:
            return
        if self.stalled:
            self._held += data
            return
        self._outbound += data
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        try:
            if self._outbound and self._transport is not None and not self._transport.is_closing():
                self._transport.write(bytes(self._outbound))
        except Exception as exc:
            self._callback_failed("flush", exc)
        finally:
            self._outbound.clear()

    def _send_fresh_publish(self, packet: mqtt5.PublishPacket) -> None:
        if self._reorder_left == 0 and self.client_id is not None:
            claimed = self._owner.faults.claim_reorder(self.client_id)
            if claimed:
                _log.debug("%r: next %d deliveries reordered", self, claimed)
                self._reorder_left = claimed
        if self._reorder_left:
            self._reordered.append(packet)
            self._reorder_left -= 1
            if self._reorder_left == 0:
                self.release_reordered()
            return
        self._emit(packet)

    def release_reordered(self) -> None:
        """Write the held PUBLISH packets, last first (also when fewer than asked are held)."""
        held, self._reordered = self._reordered, []
        self._reorder_left = 0
        for packet in reversed(held):
            self._emit(packet)

    @property
    def holding_reordered(self) -> bool:
        return bool(self._reordered)

    def _emit(self, packet: mqtt5.PublishPacket) -> None:
        self.write_raw(self._write(packet))

    # -- closing -------------------------------------------------------------------------------

    def disconnect(self, reason_code: int) -> None:
        """Send DISCONNECT (or, before CONNACK, a refusing CONNACK) and close after it."""
        if self.state is LinkState.CONNECTED and self.level == 5:  # 3.1.1: just the close
            reason = mqtt5.DisconnectReasonCode(reason_code)
            self.write_raw(mqtt5.DisconnectPacket(reason_code=reason).write())
        elif self.state is LinkState.AWAIT_CONNECT:
            try:
                refused = mqtt5.ConnAckReasonCode(reason_code)
            except ValueError:  # a DISCONNECT-only code: say no more than "unspecified"
                refused = mqtt5.ConnAckReasonCode.UNSPECIFIED_ERROR
            self.write_raw(self._write(mqtt5.ConnAckPacket(reason_code=refused)))
        self.close()

    def close(self) -> None:
        """Close after what was written (held data of a stalled link is dropped)."""
        if self.state in (LinkState.CLOSING, LinkState.CLOSED):
            return
        self.state = LinkState.CLOSING
        self._cancel_timer()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once: no DISCONNECT, unsent data lost (a crash, a cut cable)."""
        if self.state is LinkState.CLOSED:
            return
        self.state = LinkState.CLOSING
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    # -- connection state ----------------------------------------------------------------------

    def bind(
        self, client_id: str, session: BrokerSession, will: mqtt5.Will | None, keep_alive: int
    ) -> None:
        self.state = LinkState.CONNECTED
        self.client_id = client_id
        self.session = session
        self.will = will
        self.keep_alive = keep_alive
        self._cancel_timer()
        if keep_alive:
            self._arm_timer(1.5 * keep_alive)

    # -- stall ---------------------------------------------------------------------------------

    def stall(self) -> None:
        """Stop reading and writing; the connection stays open. Keep-alive is not enforced."""
        if self.stalled or self.state not in (LinkState.AWAIT_CONNECT, LinkState.CONNECTED):
            return
        self.stalled = True
        if self._transport is not None:
            self._transport.pause_reading()
        self._held += self._outbound
        self._outbound.clear()

    def unstall(self) -> None:
        if not self.stalled:
            return
        self.stalled = False
        if self.state not in (LinkState.AWAIT_CONNECT, LinkState.CONNECTED):
            return
        self._last_received = self._owner.now()
        held, self._held = self._held, bytearray()
        self.write_raw(bytes(held))
        if self._transport is not None:
            self._transport.resume_reading()
        self._process()

    # -- keep-alive ----------------------------------------------------------------------------

    def _arm_timer(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        """Enforce the CONNECT deadline, then 1.5 x keep-alive of silence (MQTT 5, 3.1.2.10)."""
        self._timer = None
        try:
            self._check_deadline()
        except Exception as exc:
            self._callback_failed("timer", exc)

    def _check_deadline(self) -> None:
        if self.state is LinkState.AWAIT_CONNECT:
            if self.stalled:
                self._arm_timer(_CONNECT_TIMEOUT)
                return
            _log.debug("%r: no CONNECT in time", self)
            self.abort()
            return
        if self.state is not LinkState.CONNECTED or not self.keep_alive:
            return
        limit = 1.5 * self.keep_alive
        idle = self._owner.now() - self._last_received
        if self.stalled or idle < limit:
            self._arm_timer(limit if self.stalled else limit - idle)
            return
        self._owner.keep_alive_expired(self)
