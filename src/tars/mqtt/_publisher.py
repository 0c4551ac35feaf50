"""Where a publish goes, and what the client still owes.

:class:`Publisher` checks a publish once (topic, payload type, QoS, size), hands it to the live
link or, while there is none, to the :class:`~tars.mqtt._outbox.Outbox`; it flushes the outbox
in order onto the next link, counts what happened, and answers "is everything acknowledged?"
for :meth:`MQTTClient.flush <tars.mqtt.MQTTClient.flush>` and a graceful shutdown.

It knows the link only through the :class:`~tars.mqtt.Connection` it is given, and the client's
lifecycle only through two questions (``link`` and ``closing``), so the supervisor stays the
one place that decides which link is current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from mqtt5 import PublishPacket

from ._config import MQTTClientConfig
from ._connection import Connection
from ._errors import (
    ClientStateError,
    ConnectionLostError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MQTTError,
    OutboxFullError,
    PayloadTooLarge,
)
from ._outbox import Outbox, OutboxItem
from ._session import PublishDone, Session
from ._topics import validate_topic_name

__all__ = ["Publisher"]

log = logging.getLogger("tars.mqtt")

_TOPIC_CACHE: Final = 4096


class Publisher:
    """The publish paths of one client: checks, live link, outbox, acks and flush waiters."""

    def __init__(
        self,
        config: MQTTClientConfig,
        *,
        link: Callable[[], Connection | None],
        closing: Callable[[], bool],
    ) -> None:
        self._config = config
        self._link = link  # the live link the client publishes on, or None
        self._closing = closing  # shutdown has begun: nothing may be queued any more
        self.outbox = Outbox(
            max_messages=config.outbox_max_messages,
            max_bytes=config.outbox_max_bytes,
            ttl=config.outbox_message_ttl,
            policy=config.outbox_policy,
        )
        self._room: asyncio.Event | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._valid_topics: dict[str, None] = {}
        self.published = 0
        self.publish_failed = 0
        self.dropped_offline = 0
        self.last_ack = 0.0  # time.monotonic() of the last PUBACK/PUBCOMP/refusal

    def start(self) -> None:
        """Bind to the running loop (called by ``connect()``)."""
        self._room = asyncio.Event()

    # --- checks ------------------------------------------------------------------------------

    def check(
        self,
        topic: str,
        payload: bytes | str,
        qos: int,
        properties: dict[str, Any] | None = None,
    ) -> bytes:
        """Validate a publish before anything is queued; return the payload as bytes.

        MQTT 5 ``properties`` are checked here too (by the codec), so that a bad one fails the
        call that passed it, not a later flush of the outbox on some reconnect.
        """
        if properties:
            try:
                PublishPacket(topic, b"", **properties)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentTypeError(
                    f"invalid MQTT 5 publish properties: {exc}"
                ) from None
        if topic not in self._valid_topics:
            validate_topic_name(topic)
            if len(self._valid_topics) >= _TOPIC_CACHE:
                self._valid_topics.clear()
            self._valid_topics[topic] = None
        if type(payload) is not bytes:
            if isinstance(payload, str):
                payload = payload.encode()
            elif isinstance(payload, bytearray | memoryview):
                payload = bytes(payload)
            else:
                raise InvalidArgumentTypeError(
                    f"payload must be bytes or str, not {type(payload).__name__}"
                )
        if qos != 0 and qos != 1 and qos != 2:
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        limit = self._config.max_payload_size
        if len(payload) > limit:
            raise PayloadTooLarge(len(payload), limit)
        return payload

    # --- the live link -------------------------------------------------------------------------

    async def send_live(
        self,
        conn: Connection,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        wait: bool,
        properties: dict[str, Any] | None,
    ) -> bool:
        """Publish on ``conn``; False when it turned out to be gone (use the offline path)."""
        while qos and not wait and conn.at_capacity and conn.is_connected:
            # A link lost meanwhile is not this publish's failure: decide again on whatever
            # link (or none: the outbox) there is once the wait is over.
            with contextlib.suppress(ConnectionLostError):
                await conn.wait_for_capacity()
            current = self._link()
            if current is None:
                return False
            conn = current
        try:
            fut = conn.publish_nowait(
                topic, payload, qos=qos, retain=retain, wait=wait, properties=properties
            )
        except ConnectionLostError:
            return False  # the link died and the supervisor has not noticed yet
        self.published += 1
        if fut is not None:
            await fut
        elif conn.write_paused:
            # Handed over already: a QoS 1/2 message is resent on the next link, and a QoS 0
            # one is at most once anyway. Losing the link here is not an error.
            with contextlib.suppress(ConnectionLostError):
                await conn.drain()
        return True

    # --- no link: the outbox -------------------------------------------------------------------

    async def send_offline(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        wait: bool,
        properties: dict[str, Any] | None,
    ) -> None:
        """Queue a publish made while disconnected (or drop a QoS 0 one, as configured)."""
        cfg = self._config
        if qos == 0 and not cfg.queue_qos0_offline:
            self.dropped_offline += 1
            log.debug("not connected: QoS 0 message for %r dropped", topic)
            return
        outbox = self.outbox
        if outbox.policy == "block":
            while not outbox.has_room(len(payload)) and self._link() is None:
                if self._closing():
                    break
                assert self._room is not None
                self._room.clear()
                await self._room.wait()
            conn = self._link()
            if conn is not None:  # the link came back while we waited
                if await self.send_live(conn, topic, payload, qos, retain, wait, properties):
                    return
            elif self._closing():
                # Woken by shutdown(), which emptied the outbox: queuing now would never send.
                raise ClientStateError("publish() while the client is shutting down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] | None = loop.create_future() if qos and wait else None
        ttl = cfg.outbox_message_ttl
        expires = time.monotonic() + ttl if ttl is not None else None
        item = OutboxItem(topic, payload, qos, retain, properties, fut, expires)
        for dropped in outbox.put(item):
            _fail(dropped.future, OutboxFullError(f"outbox full: message for {topic!r} dropped"))
            log.warning("outbox full: dropped a message for %r", dropped.topic)
        if fut is not None:
            await fut

    def flush_outbox(self, conn: Connection) -> None:
        """Send everything queued, in order, on a link that just came up (no await: nothing
        published meanwhile can overtake it)."""
        ready, expired = self.outbox.take_all(time.monotonic())
        for item in expired:
            _fail(item.future, OutboxFullError("message expired in the outbox"))
        for item in ready:
            try:
                fut = conn.publish_nowait(
                    item.topic,
                    item.payload,
                    qos=item.qos,
                    retain=item.retain,
                    wait=item.future is not None,
                    properties=item.properties,
                )
            except (MQTTError, ValueError, TypeError) as exc:
                # E.g. over this broker's maximum packet size: this message fails, alone.
                _fail(item.future, exc)
                log.warning("queued message for %r could not be sent: %s", item.topic, exc)
                continue
            self.published += 1
            if fut is not None and item.future is not None:
                _chain(fut, item.future)
        self.wake_blocked()

    def wake_blocked(self) -> None:
        """Let publishers waiting for outbox room decide again."""
        if self._room is not None:
            self._room.set()

    # --- acks and flush ------------------------------------------------------------------------

    def on_publish_done(self, event: PublishDone, session: Session | None) -> None:
        """The session finished a QoS 1/2 publish (acknowledged or refused)."""
        self.last_ack = time.monotonic()
        if event.reason_code >= 0x80:
            self.publish_failed += 1
            if event.handle is None:  # nobody awaits it: say it here
                log.warning("broker refused a publish: reason code %#x", event.reason_code)
        if self._flush_waiters and self.flushed(session):
            self.wake_flush()

    def flushed(self, session: Session | None) -> bool:
        """Nothing owed: no QoS 1/2 publish unfinished in the session, nothing in the outbox."""
        pending = session.unfinished_count if session is not None else 0
        return pending == 0 and len(self.outbox) == 0

    async def wait_progress(self) -> None:
        """Wait for the next moment something owed may have been settled."""
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        try:
            await waiter
        finally:  # a flush(timeout=...) that gave up must not leave its waiter behind
            if waiter in self._flush_waiters:
                self._flush_waiters.remove(waiter)

    def wake_flush(self) -> None:
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._flush_waiters.clear()

    def close(self, error: BaseException) -> None:
        """Shutdown: fail every queued waiter with ``error``; wake every other waiter."""
        for item in self.outbox.take_all(time.monotonic())[0]:
            _fail(item.future, error)
        self.wake_flush()
        self.wake_blocked()


def _fail(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


def _chain(source: asyncio.Future[int], target: asyncio.Future[int]) -> None:
    """Complete ``target`` (the caller's waiter) when ``source`` (the link's ack) completes."""

    def done(fut: asyncio.Future[int]) -> None:
        if target.done():
            return
        if fut.cancelled():
            target.cancel()
        elif (exc := fut.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(fut.result())

    source.add_done_callback(done)
