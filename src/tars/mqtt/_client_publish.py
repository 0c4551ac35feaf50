"""The publishing methods of :class:`~tars.mqtt.MQTTClient`: checks, the session, the link.

A publish goes client -> session -> connection: it is checked once (:mod:`._checks`), handed to
the session (which sends it, queues it for the Receive Maximum, or keeps it in the outbox while
no link is up), and the current link writes it at the end of the loop turn; the caller awaits
the future the session's event resolves. Nothing comes back through the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ._argcheck import check_number
from ._asyncio.boundary import settle
from ._client_state import ClientState
from ._core.session import WaitFor
from ._errors import ClientStateError, ConnectionLostError, NotConnectedError

if TYPE_CHECKING:
    from ._asyncio.supervisor import Supervisor
    from ._checks import PublishCheck
    from ._config import MQTTClientConfig
    from ._core.session import Session
    from ._instrument import Instruments
    from ._retained import RetainedMemory

__all__ = ["PublishMethods"]


class PublishMethods:
    """Mixed into :class:`~tars.mqtt.MQTTClient` (its state is the client's)."""

    if TYPE_CHECKING:
        _config: MQTTClientConfig
        _session: Session
        _supervisor: Supervisor
        _instruments: Instruments
        _check: PublishCheck
        _state: ClientState
        _retained: RetainedMemory | None

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Publish raw bytes (or str, sent as UTF-8).

        QoS 1/2 with ``wait=True`` return once the broker acknowledged (across reconnects:
        the message is resent); ``wait=False`` returns once the message is handed over (the ack
        is tracked, see :meth:`flush`). While disconnected, QoS 1/2 (and QoS 0 with
        ``queue_qos0_offline``) go to the outbox; QoS 0 is otherwise dropped and counted. With
        ``outbox_path``, an offline QoS 1/2 message is on disk (fsynced) when this returns.

        Raises :class:`~tars.mqtt.InvalidTopicError`, :class:`~tars.mqtt.PayloadTooLarge`,
        ``ValueError`` (qos), :class:`~tars.mqtt.NotConnectedError` (before :meth:`connect`),
        :class:`~tars.mqtt.ClientStateError` (after :meth:`shutdown`),
        :class:`~tars.mqtt.OutboxFullError` (policy ``raise``, or the durable outbox cannot
        write to its disk),
        :class:`~tars.mqtt.PublishError` (the broker refused it).
        """
        if self._instruments:  # observers (tars.mqtt._instrument) around the same call
            await self._instruments.publish(
                self._publish, topic, payload, qos, retain, wait, properties
            )
        else:
            await self._publish(
                topic, payload, qos=qos, retain=retain, wait=wait, properties=properties
            )

    async def _publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool,
        wait: bool,
        properties: dict[str, Any] | None,
    ) -> None:
        payload = self._check(topic, payload, qos, properties, retain, wait)
        self._require_running("publish")
        session = self._session
        fut: asyncio.Future[int] | None = None
        if qos:
            if not wait and session.at_capacity:
                # Bounds the memory of publishes nobody awaits when the broker is slower than
                # the producer: the producer is slowed down instead.
                await self._wait_for(WaitFor.CAPACITY)
            if not session.has_room(len(payload)) and self._config.outbox_policy == "block":
                await self._wait_for(WaitFor.ROOM, len(payload))
                self._require_running("publish")
            if wait:
                fut = asyncio.get_running_loop().create_future()
        if qos or not session.linked:
            # Dates an offline record (TTL) and starts a QoS 1/2 publish's ack clock.
            now = asyncio.get_running_loop().time()
            events = session.publish(
                topic, payload, qos, retain, handle=fut, properties=properties, now=now
            )
            if events:
                settle(events)
        else:  # QoS 0 on a link: written, or raises; it ends nothing
            session.publish(topic, payload, 0, retain, properties=properties)
        if retain and self._retained is not None:  # accepted: the service's state now
            self._retained.note(topic, payload, qos, properties)
        current = self._supervisor.current
        if current is not None:
            current.flush_soon()
            if current.write_paused:
                # Handed over already: a QoS 1/2 message is resent on the next link, and a
                # QoS 0 one is at most once anyway. Losing the link here is not an error.
                with contextlib.suppress(ConnectionLostError):
                    await current.drain()
        if fut is not None:
            await fut

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every QoS 1/2 publish issued so far is acknowledged and the outbox is
        empty. Raises ``TimeoutError`` after ``timeout`` seconds, and
        :class:`~tars.mqtt.ClientStateError` before :meth:`connect` or after :meth:`shutdown`."""
        check_number("timeout", timeout, optional=True)
        if self._state in (ClientState.CLOSED, ClientState.CREATED):
            raise ClientStateError(f"flush() while {self._state.value}")
        async with asyncio.timeout(timeout):
            await self._wait_for(WaitFor.FLUSHED)

    async def _wait_for(self, what: WaitFor, size: int = 0) -> None:
        """Wait until the session settles ``what`` (or shutdown fails the wait)."""
        fut = asyncio.get_running_loop().create_future()
        if not self._session.wait(fut, what, size):
            return
        try:
            await fut
        finally:
            self._session.forget_waiter(fut)

    def _require_running(self, what: str) -> None:
        state = self._state
        if state is ClientState.CREATED:
            raise NotConnectedError(f"{what}() before connect()")
        if state is not ClientState.CONNECTING:
            raise ClientStateError(f"{what}() while {state.value}")
