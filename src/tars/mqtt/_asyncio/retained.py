"""Put the service's retained state back on a broker that lost it (issue 20, section 2).

When a link comes up on a broker session that is new (CONNACK session present = 0: a broker
restart without persistence looks like this, and so does any reconnect with an expired session),
:class:`RetainedRestore` asks the broker which of the topics in the client's
:class:`~tars.mqtt._retained.RetainedMemory` still hold a retained message, and re-publishes the
last one this client published on each topic that holds none.

The question is asked the only way MQTT allows: a short-lived subscription of its own (QoS 0,
"send retained on subscribe", one subscription identifier, up to :data:`_BATCH` topics per
SUBSCRIBE). Every retained message the broker holds on those topics is sent with the retain flag
set right after the SUBACK. The answer is complete when one has arrived for every topic, or
:data:`_WINDOW` seconds after the last SUBACK (brokers with an asynchronous retained store, such
as clustered ones, may send them a little after the SUBACK); then the subscription is removed.

It never touches the service's own subscriptions: it never SUBSCRIBEs or UNSUBSCRIBEs a filter
of the client's subscription table (internal topics included). On the broker a SUBSCRIBE of the
same filter replaces the service's subscription (MQTT 5, 3.8.4: our options, our identifier, so
its messages are routed nowhere) and the UNSUBSCRIBE then deletes it, while the table still
believes it subscribed: a service that takes commands on the topic it publishes its state on
would hear nothing more. So a topic is asked with the first of three filters that match it and
is not one of the service's: the topic itself, ``topic/#``, then the topic with its last level
as ``+`` (``a/+``; the listener keeps only the topics asked, and the retained messages below or
beside the topic that come along are dropped); a topic whose three are all the service's is not
asked (:func:`~tars.mqtt._retained.check_filters`). The filters are chosen in the same step as
the SUBSCRIBE is queued, and a filter the service subscribed during the check is not
UNSUBSCRIBEd (its SUBSCRIBE, sent after ours, replaced ours).

On a link without subscription identifiers (MQTT 3.1.1, or a CONNACK with "subscription
identifiers available" false) the check's messages carry no tag of ours: the client routes them
by topic, like the service's, to every handler whose filter matches. The service would get its
retained state a second time (a command topic: the command run again), and with ``topic/#``
everything retained below the topic too. So on such a link a topic that any of the service's
filters matches is not asked (we cannot tell; said at INFO), and the others are asked as
themselves. Their copies reach no handler (they are counted as unmatched), except a handler the
service subscribes during the check on a filter that matches one of them.

It never writes over someone else's state: a topic on which any retained message arrives is left
alone (whoever published it, us included); a topic the broker refused to let us subscribe to, or
that could not be asked about, is left alone (we cannot know); a topic the service published
again while the check ran is left alone (its new value is already on the broker); and nothing is
sent once the link that was checked has ended (the next link checks again). What is left is a
window of a few round trips between the check and the re-publish, in which a retained message
published by someone else would be overwritten.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mqtt5 import PublishPacket, QoS, RetainHandling, TopicFilter

from .._core.session import Session
from .._errors import MQTTError
from .._retained import Retained, RetainedMemory, check_filters
from .connection import Connection, MessageListener
from .linkview import LinkView

__all__ = ["CHECK_SUBSCRIPTION_TOPIC", "RetainedRestore", "check_subscription_id"]

log = logging.getLogger("tars.mqtt")

Republish = Callable[[str, bytes, int, dict[str, Any] | None], Awaitable[None]]
"""``async (topic, payload, qos, properties)``: publish it retained again."""

CHECK_SUBSCRIPTION_TOPIC: Final = "$tars/retained-check"
"""A topic no one publishes: the dispatcher's key for the check's subscription identifier, so
the messages the check brings are routed nowhere and not counted as unmatched."""

_BATCH: Final = 100  # topics per SUBSCRIBE: well under any broker's packet size limit
_WINDOW: Final = 1.0  # seconds after the last SUBACK to wait for retained messages
_ANSWER_TIMEOUT: Final = 10.0  # seconds for each SUBACK / UNSUBACK


def check_subscription_id() -> int:
    """The subscription identifier of the check (derived like the table's, from a topic no
    user filter can collide with in practice)."""
    return zlib.crc32(CHECK_SUBSCRIPTION_TOPIC.encode()) % 268_435_455 + 1


class RetainedRestore:
    """The connect hook that re-publishes what the broker lost (see the module docstring)."""

    def __init__(
        self,
        memory: RetainedMemory,
        session: Session,
        current_link: Callable[[], Connection | None],
        listeners: list[MessageListener],
        republish: Republish,
    ) -> None:
        self._memory = memory
        self._session = session
        self._current_link = current_link
        self._listeners = listeners
        self._republish = republish
        self._sid = check_subscription_id()

    async def __call__(self) -> None:
        """Run on every link that became ready; does nothing on a resumed broker session or
        when this client never published anything retained."""
        session = self._session
        link = self._current_link()
        if not self._memory or session.session_present or link is None:
            return
        wanted = self._memory.snapshot()
        held = await self._held_by_broker(link, list(wanted))
        if held is None:
            return  # the link ended first: the next one checks again
        missing = [
            (topic, entry)
            for topic, entry in wanted.items()
            if topic not in held and self._memory.unchanged(topic, entry)
        ]
        if missing:
            await self._put_back(link, missing)

    async def _held_by_broker(self, link: Connection, topics: list[str]) -> set[str] | None:
        """The topics of ``topics`` on which the broker holds a retained message, or on which
        we cannot tell (a refused subscription, or no filter left to ask with); None when the
        link ended meanwhile."""
        asked = set(topics)
        held: set[str] = set()
        complete = asyncio.Event()

        def on_packet(packet: PublishPacket) -> None:
            if packet.retain and packet.topic in asked and packet.topic not in held:
                held.add(packet.topic)
                if len(held) == len(asked):
                    complete.set()

        view = LinkView(link, self._session)
        connack = self._session.connack
        sid = self._sid if connack is None or connack.subscription_id_available else None
        batches = [topics[i : i + _BATCH] for i in range(0, len(topics), _BATCH)]
        asked_with: dict[str, str] = {}  # topic -> the filter it was asked with
        sent: set[str] = set()  # one ``a/+`` may ask about several topics, in several batches
        refused: dict[str, int] = {}  # filter -> SUBACK reason code

        async def ask(batch: list[str]) -> list[str]:
            # The filters are chosen in the same step as the SUBSCRIBE is queued: a filter the
            # service subscribes from now on is sent after ours, and replaces it.
            filters, unasked = check_filters(
                batch, self._own_filters(), routed_by_topic=sid is None
            )
            for topic, why in unasked.items():
                self._cannot_tell(topic, why)
                held.add(topic)
            asked_with.update(filters)
            new = [f for f in dict.fromkeys(filters.values()) if f not in sent]
            sent.update(new)
            if not new:
                return []
            codes = await view.subscribe(
                *(
                    TopicFilter(
                        topic_filter,
                        max_qos=QoS.AT_MOST_ONCE,
                        retain_handling=RetainHandling.SEND_ALWAYS,
                    )
                    for topic_filter in new
                ),
                subscription_id=sid,
            )
            refused.update((f, code) for f, code in zip(new, codes, strict=False) if code >= 0x80)
            return new

        async def withdraw(filters: list[str]) -> None:
            # A filter the service subscribed during the check replaced ours on the broker: it
            # is the service's now, and stays.
            own = self._own_filters()
            ours = [topic_filter for topic_filter in filters if topic_filter not in own]
            if ours:
                await view.unsubscribe(*ours)

        self._listeners.append(on_packet)
        try:
            async with asyncio.timeout(_ANSWER_TIMEOUT):
                subscribed = await asyncio.gather(*(ask(batch) for batch in batches))
            for topic, topic_filter in asked_with.items():
                if topic_filter in refused:
                    why = f"subscription refused: reason code {refused[topic_filter]:#x}"
                    self._cannot_tell(topic, why)
                    held.add(topic)
            if len(held) < len(asked):
                try:
                    async with asyncio.timeout(_WINDOW):
                        await complete.wait()
                except TimeoutError:
                    pass  # no retained message on the topics not seen: the broker lost them
            async with asyncio.timeout(_ANSWER_TIMEOUT):
                await asyncio.gather(*(withdraw(filters) for filters in subscribed))
        except (MQTTError, TimeoutError) as exc:
            if link.is_connected:
                log.warning(
                    "%s: could not check the broker's retained messages (%s); not "
                    "re-publishing ours on this link",
                    self._session.client_id,
                    exc,
                )
            return None
        finally:
            self._listeners.remove(on_packet)
        return held if link.is_connected else None

    def _own_filters(self) -> set[str]:
        """The filters of the client's own subscription table, internal topics included."""
        table = self._session.subscriptions.table
        return table.filters.keys() | table.internal.keys()

    def _cannot_tell(self, topic: str, why: str) -> None:
        log.info(
            "%s: cannot check whether the broker still holds our retained message on %r (%s); "
            "not re-publishing it",
            self._session.client_id,
            topic,
            why,
        )

    async def _put_back(self, link: Connection, missing: list[tuple[str, Retained]]) -> None:
        done: list[str] = []
        for topic, entry in missing:
            if not link.is_connected:
                break  # the next link checks again
            try:
                await self._republish(topic, entry.payload, entry.qos, entry.properties)
            except MQTTError as exc:
                log.warning(
                    "%s: could not re-publish our retained message on %r: %s",
                    self._session.client_id,
                    topic,
                    exc,
                )
            else:
                done.append(topic)
        if done:
            log.info(
                "%s: the broker had lost %d retained message(s) of ours; re-published: %s",
                self._session.client_id,
                len(done),
                ", ".join(done[:10]) + (f" and {len(done) - 10} more" if len(done) > 10 else ""),
            )
