"""The subscribing methods of :class:`~tars.mqtt.MQTTClient`.

A subscription is two things: a :class:`~tars.mqtt.Subscription` (handler, queue, worker),
routed to by the dispatcher, and one entry of the session's table (filter, QoS, identifier),
which the broker is told about now or by the next link's restore.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ._argcheck import check_callable, check_int, check_number, check_str
from ._asyncio.subscription import Handler, ModelT, Overflow, Subscription
from ._client_state import ClientState
from ._config import MQTTClientConfig
from ._dedup import DedupWindow
from ._errors import ClientStateError, ConnectionLostError, InvalidArgumentError, SubscribeError
from ._topics import validate_topic_filter

if TYPE_CHECKING:
    from ._asyncio.acks import Acks
    from ._asyncio.dispatch import Dispatcher
    from ._asyncio.supervisor import Supervisor
    from ._core.session import Session
    from ._instrument import Instruments

__all__ = ["SubscribeMethods"]


class SubscribeMethods:
    """Mixed into :class:`~tars.mqtt.MQTTClient` (its state is the client's)."""

    if TYPE_CHECKING:
        _config: MQTTClientConfig
        _session: Session
        _dispatcher: Dispatcher
        _acks: Acks
        _supervisor: Supervisor
        _state: ClientState
        _instruments: Instruments

    async def subscribe(
        self,
        topic: str,
        handler: Handler[ModelT],
        qos: int = 0,
        *,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Call ``handler`` for every message on ``topic`` (a filter; wildcards and
        ``$share/group/...`` allowed), from its own bounded queue.

        The handler is ``async def handler(payload: bytes)``, or takes a
        :class:`~tars.mqtt.Message`, an :class:`~tars.mqtt.Envelope` or a pydantic model (the
        envelope's data, validated) when its first parameter is annotated so. Per-subscription
        ``queue_size``, ``overflow``, ``concurrency`` and ``timeout`` default to the config's.
        Before :meth:`connect` the subscription is sent on connect. Subscribing a handler
        again on the same filter (``==``: the same function or bound method) is a no-op that
        returns the existing :class:`Subscription`, whose options stay those of the first call.

        Raises :class:`~tars.mqtt.InvalidTopicError`, ``TypeError`` (not an async handler, or
        its first parameter annotated with another type, such as ``str`` or ``dict``),
        ``ValueError`` (qos or options), :class:`~tars.mqtt.SubscribeError` (broker refused),
        :class:`~tars.mqtt.ClientStateError` (after shutdown).
        """
        validate_topic_filter(topic)
        check_callable("handler", handler)
        check_int("qos", qos)
        check_int("queue_size", queue_size, optional=True)
        check_str("overflow", overflow, optional=True)
        check_int("concurrency", concurrency, optional=True)
        check_number("timeout", timeout, optional=True)
        if qos not in (0, 1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            raise ClientStateError(f"subscribe() while {self._state.value}")
        for existing in self._dispatcher.subscriptions(topic):
            if existing.handler == handler:
                # Already there (a reconnect loop subscribing again on the same client): a
                # second subscription would deliver every message twice.
                return existing
        cfg = self._config
        sup = self._supervisor
        sub = Subscription(
            topic,
            handler,
            qos=qos,
            queue_size=queue_size if queue_size is not None else cfg.queue_size,
            overflow=overflow if overflow is not None else cfg.overflow,
            concurrency=concurrency if concurrency is not None else cfg.handler_concurrency,
            timeout=timeout if timeout is not None else cfg.handler_timeout,
            dedup=DedupWindow(cfg.dedupe_ttl, cfg.dedupe_max_entries)
            if cfg.dedupe_ttl > 0
            else None,
            pause=sup.pause_reading,
            resume=sup.resume_reading,
            done=self._acks.done,
        )
        sub._instruments = self._instruments  # the instruments see its handler calls
        session = self._session
        fut = asyncio.get_running_loop().create_future()
        sent = session.add_subscription(topic, qos, handle=fut)  # refusals announced: raises
        self._dispatcher.add(sub, session.subscription_id(topic))
        if self._state is not ClientState.CREATED:
            sub.start()
        if not sent:  # the broker holds it already, or the next link's restore sends it
            return sub
        sup.flush_soon()
        try:
            codes: tuple[int, ...] = await fut
        except ConnectionLostError:
            return sub  # the link flapped under us: like subscribing while offline
        except BaseException:
            await self._undo(sub)
            raise
        if codes and codes[0] >= 0x80:
            await self._undo(sub)
            raise SubscribeError(topic, codes[0])
        return sub

    async def unsubscribe(
        self, topic: str | Subscription, handler: Handler[Any] | None = None
    ) -> None:
        """Remove the subscriptions on ``topic`` (all, or only ``handler``'s), or one
        :class:`Subscription`; the broker is told when no handler is left on the filter.

        Raises :class:`~tars.mqtt.InvalidTopicError` for a filter that breaks the MQTT rules."""
        if isinstance(topic, Subscription):
            subs = [topic]
        else:
            validate_topic_filter(topic)  # a filter that could never have been subscribed
            check_callable("handler", handler, optional=True)
            subs = [
                s
                for s in self._dispatcher.subscriptions(topic)
                if handler is None or s.handler == handler
            ]
        for sub in subs:
            if not self._dispatcher.remove(sub) and sub in self._dispatcher.subscriptions():
                continue
            await sub.stop()
            fut = asyncio.get_running_loop().create_future()
            # No link: a resumed (persistent) broker session would still hold the filter, so
            # the session unsubscribes it on the next link (a fresh session has nothing).
            if self._session.remove_subscription(sub.topic_filter, sub.qos, handle=fut):
                self._supervisor.flush_soon()
                with contextlib.suppress(ConnectionLostError):
                    await fut

    async def _undo(self, sub: Subscription) -> None:
        self._dispatcher.remove(sub)
        self._session.remove_subscription(sub.topic_filter, sub.qos)
        self._supervisor.flush_soon()
        await sub.stop()
