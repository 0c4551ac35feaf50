"""Keeping the broker's subscriptions in step with the dispatcher's, across links.

The :class:`~tars.mqtt._dispatch.Dispatcher` is the truth about what the client wants; the
broker's session is a copy that a link may or may not carry over. :class:`SubscriptionSync`
sends one SUBSCRIBE per filter (each with its subscription identifier), remembers what was
added or removed while no link was up, and on a new link sends what the broker is missing: all
of it on a fresh session, only the changes on a resumed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from mqtt5 import QoS, RetainHandling, TopicFilter

from ._connection import Connection
from ._dispatch import Dispatcher
from ._errors import ConnectionLostError, SubscribeError

__all__ = ["SubscriptionSync"]

log = logging.getLogger("tars.mqtt")


class SubscriptionSync:
    """The broker-side half of subscribe/unsubscribe, for one client."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        # Added (or raised in QoS) while no link was up: a resumed broker session does not have
        # them, so the next link subscribes them even when it skips the others.
        self._unsent: set[str] = set()
        # Removed while no link was up: a resumed broker session still has them.
        self._unsent_removals: set[str] = set()

    async def added(self, conn: Connection | None, topic: str, qos: int) -> None:
        """A filter is new or asks a higher QoS: subscribe now on a live link, else later.

        Raises :class:`~tars.mqtt.SubscribeError` when the broker refuses it.
        """
        if conn is not None and conn.is_connected:
            try:
                await self._subscribe(conn, topic, qos, raise_=True)
                return
            except ConnectionLostError:
                pass  # the link flapped under us: like subscribing while offline
        self._unsent.add(topic)

    async def removed(self, conn: Connection | None, topic: str) -> None:
        """A filter has no subscription left: unsubscribe now on a live link, else later."""
        self._unsent.discard(topic)
        if conn is not None and conn.is_connected:
            try:
                await conn.unsubscribe(topic)
                return
            except ConnectionLostError:
                pass
        self._unsent_removals.add(topic)

    async def internal_added(self, conn: Connection | None, topic: str, sid: int) -> None:
        """An internal consumer's topic (heartbeat echo, responses) is new."""
        if conn is not None and conn.is_connected:
            # Lost meanwhile: the next link subscribes every internal topic anyway.
            with contextlib.suppress(ConnectionLostError):
                await self._subscribe_internal(conn, topic, sid)

    async def restore(self, conn: Connection, *, fresh: bool) -> None:
        """Bring a new link's broker session in step: everything on a ``fresh`` session, only
        what changed while no link was up on a resumed one. Failures are logged, not raised
        (one refused filter must not keep the others away); a lost link raises
        :class:`~tars.mqtt.ConnectionLostError`."""
        jobs: list[Awaitable[None]] = []
        unsent = set(self._unsent)
        for topic, qos in self._dispatcher.filters.items():
            if fresh or topic in unsent:
                jobs.append(self._subscribe(conn, topic, qos, raise_=False))
        for topic, sid in self._dispatcher.internal_topics().items():
            jobs.append(self._subscribe_internal(conn, topic, sid))
        gone = {t for t in self._unsent_removals if t not in self._dispatcher.filters}
        self._unsent_removals.clear()
        if gone and not fresh:
            jobs.append(self._unsubscribe_all(conn, gone))
        if jobs:
            await asyncio.gather(*jobs)
        self._unsent -= unsent

    async def _subscribe(self, conn: Connection, topic: str, qos: int, *, raise_: bool) -> None:
        # retain_as_published off (MQTT 5's default; mqtt5's TopicFilter defaults to on): a
        # handler sees retain=True only on the broker's stored copy, never on a live update.
        tf = TopicFilter(
            topic,
            max_qos=QoS(qos),
            retain_handling=RetainHandling.SEND_ALWAYS,
            retain_as_published=False,
        )
        refusal = _unservable(conn, topic)
        if refusal is not None:
            # Sent anyway, such a SUBSCRIBE costs the link on some brokers (ejabberd answers
            # DISCONNECT 0x9E), and the restore would do it again on every reconnect.
            if raise_:
                raise refusal
            log.error("%s", refusal)
            return
        sid = self._dispatcher.subscription_id(topic) if _ids_available(conn) else None
        codes = await conn.subscribe(tf, subscription_id=sid)
        if codes and codes[0] >= 0x80:
            error = SubscribeError(topic, codes[0])
            if raise_:
                raise error
            log.error("%s", error)

    async def _subscribe_internal(self, conn: Connection, topic: str, sid: int) -> None:
        tf = TopicFilter(topic, max_qos=QoS.AT_MOST_ONCE, retain_handling=RetainHandling.SEND_NEVER)
        codes = await conn.subscribe(tf, subscription_id=sid if _ids_available(conn) else None)
        if codes and codes[0] >= 0x80:
            log.error("%s", SubscribeError(topic, codes[0]))

    async def _unsubscribe_all(self, conn: Connection, topics: set[str]) -> None:
        ordered = sorted(topics)
        codes = await conn.unsubscribe(*ordered)
        for topic, code in zip(ordered, codes, strict=False):
            if code >= 0x80:
                log.warning("could not unsubscribe %r: reason code %#x", topic, code)


def _ids_available(conn: Connection) -> bool:
    """Whether the broker takes subscription identifiers (MQTT 5 lets it refuse them)."""
    connack = conn.connack
    return connack is None or bool(connack.subscription_id_available)


def _unservable(conn: Connection, topic: str) -> SubscribeError | None:
    """The refusal the broker announced in its CONNACK for ``topic``, if any (MQTT 5 lets a
    broker say it has no shared subscriptions or no wildcard subscriptions)."""
    connack = conn.connack
    if connack is None:
        return None
    if topic.startswith("$share/") and connack.shared_subscription_available is False:
        return SubscribeError(topic, 0x9E, "the broker does not offer shared subscriptions")
    if connack.wildcard_subscription_available is False and ("+" in topic or "#" in topic):
        return SubscribeError(topic, 0xA2, "the broker does not offer wildcard subscriptions")
    return None
