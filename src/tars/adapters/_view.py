"""``MQTTClient.client`` of the drop-in: the asyncio-mqtt ``Client`` calls the fleet uses.

The original handed out its asyncio-mqtt ``Client``; services call ``publish``, ``subscribe``
and iterate ``messages()`` / ``filtered_messages(topic)`` on it (the router's adapters, the
example's pattern 3). This view offers those calls over tars-core's client, and it is one object
for the client's whole life: a lost link does not invalidate it. Subscriptions made through it
are tars-core subscriptions (restored after every reconnect); every message the client receives
is offered to every open iterator whose filter matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from mqtt5 import PublishPacket

from tars.mqtt import ClientStateError, Message, MQTTClient, NotConnectedError, topic_matches
from tars.mqtt._argcheck import wrong_type

from ._models import DropInNotConnectedError

__all__ = ["ClientView", "ViewMessage", "ViewTopic"]

log = logging.getLogger("tars.adapters.mqtt_client")


class ViewTopic(str):
    """A topic name that is a ``str`` (as paho's ``message.topic``) and also has asyncio-mqtt
    0.16's ``.value`` and ``.matches(filter)``."""

    __slots__ = ()

    @property
    def value(self) -> str:
        """The topic as a plain string."""
        return str.__str__(self)

    def matches(self, topic_filter: str) -> bool:
        """Whether ``topic_filter`` (wildcards allowed) matches this topic."""
        return topic_matches(topic_filter, self)


class ViewMessage:
    """A received message as the iterators yield it: ``topic``, ``payload``, ``qos``,
    ``retain``, ``mid`` and ``properties`` (the ``mqtt5.PublishPacket``)."""

    __slots__ = ("mid", "payload", "properties", "qos", "retain", "topic")

    def __init__(self, packet: PublishPacket) -> None:
        self.topic = ViewTopic(packet.topic)
        self.payload: bytes = packet.payload
        self.qos = int(packet.qos)
        self.retain: bool = packet.retain
        self.mid: int = packet.packet_id or 0
        self.properties = packet

    def __repr__(self) -> str:
        return f"<ViewMessage topic={str(self.topic)!r} qos={self.qos} {len(self.payload)} bytes>"


_END: Any = object()


class _Feed:
    """One open iterator: its filter, its queue and what it dropped."""

    def __init__(self, topic_filter: str | None, maxsize: int) -> None:
        self.topic_filter = topic_filter
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "message iterator on %r full: %d message(s) dropped so far",
                    self.topic_filter or "#",
                    self.dropped,
                )

    async def __aiter__(self) -> AsyncIterator[ViewMessage]:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            yield item


async def _sink(message: Message) -> None:
    """The handler of subscriptions made through the view: their messages reach the
    iterators through the message listener, so there is nothing left to do here."""


class ClientView:
    """publish / subscribe / unsubscribe / messages / filtered_messages over a tars-core client."""

    def __init__(self, native: MQTTClient) -> None:
        self._native = native
        self._feeds: list[_Feed] = []
        self._remove_listener: Callable[[], None] | None = None

    # --- publishing and subscribing ----------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: str | bytes | bytearray | int | float | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        *args: Any,
        timeout: float | None = 10,
        **kwargs: Any,
    ) -> None:
        """Publish raw bytes (str, int and float are sent as text, None as empty).

        QoS 1/2 wait for the broker's acknowledgement, at most ``timeout`` seconds
        (``TimeoutError``); while the link is down they wait in tars-core's outbox.
        """
        if payload is None:
            data = b""
        elif isinstance(payload, bytes | bytearray):
            data = bytes(payload)
        elif isinstance(payload, str):
            data = payload.encode()
        elif isinstance(payload, int | float):
            data = str(payload).encode()
        else:
            raise wrong_type("payload", payload, "str, bytes, int, float or None")
        with _as_runtime_error():
            async with asyncio.timeout(timeout):
                await self._native.publish(
                    topic, data, qos=qos, retain=retain, properties=properties or None
                )

    async def subscribe(
        self,
        topic: str | Sequence[tuple[str, int]],
        qos: int = 0,
        options: Any = None,
        properties: Any = None,
        *args: Any,
        timeout: float | None = 10,
        **kwargs: Any,
    ) -> None:
        """Subscribe one filter, or a list of ``(filter, qos)``; messages go to the iterators.

        The subscription is kept and restored after reconnects until :meth:`unsubscribe`.
        """
        pairs = [(topic, qos)] if isinstance(topic, str) else [(f, q) for f, q in topic]
        with _as_runtime_error():
            async with asyncio.timeout(timeout):
                for topic_filter, level in pairs:
                    await self._native.subscribe(topic_filter, _sink, int(level))

    async def unsubscribe(
        self, topic: str | Sequence[str], properties: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        """Undo :meth:`subscribe` for one filter or a list of filters."""
        filters = [topic] if isinstance(topic, str) else list(topic)
        for topic_filter in filters:
            await self._native.unsubscribe(topic_filter, _sink)

    # --- iteration -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def messages(
        self, *, queue_class: Any = None, queue_maxsize: int = 0
    ) -> AsyncIterator[AsyncIterator[ViewMessage]]:
        """``async with client.messages() as messages: async for message in messages``: every
        message the client receives, until the context exits or the client shuts down.

        A full queue (``queue_maxsize`` > 0) drops the newest message, counted and logged.
        """
        async with self._feed(None, queue_maxsize) as feed:
            yield feed.__aiter__()

    @contextlib.asynccontextmanager
    async def filtered_messages(
        self, topic_filter: str, *, queue_maxsize: int = 0
    ) -> AsyncIterator[AsyncIterator[ViewMessage]]:
        """Like :meth:`messages`, for the messages whose topic ``topic_filter`` matches."""
        async with self._feed(topic_filter, queue_maxsize) as feed:
            yield feed.__aiter__()

    @contextlib.asynccontextmanager
    async def unfiltered_messages(
        self, *, queue_maxsize: int = 0
    ) -> AsyncIterator[AsyncIterator[ViewMessage]]:
        """Every message (as :meth:`messages`; filtered iterators do not take messages away)."""
        async with self._feed(None, queue_maxsize) as feed:
            yield feed.__aiter__()

    @contextlib.asynccontextmanager
    async def _feed(self, topic_filter: str | None, maxsize: int) -> AsyncIterator[_Feed]:
        feed = _Feed(topic_filter, maxsize)
        if self._remove_listener is None:
            self._remove_listener = self._native.add_message_listener(self._on_packet)
        self._feeds.append(feed)
        try:
            yield feed
        finally:
            self._feeds.remove(feed)

    def _on_packet(self, packet: PublishPacket) -> None:
        if not self._feeds:
            return
        message = ViewMessage(packet)
        for feed in self._feeds:
            if feed.topic_filter is None or topic_matches(feed.topic_filter, packet.topic):
                feed.offer(message)

    def close(self) -> None:
        """End every open iteration (the client is shutting down)."""
        for feed in self._feeds:
            if feed.queue.full():
                # Make room: the end must reach even a reader that stopped reading.
                feed.queue.get_nowait()
                feed.dropped += 1
            feed.queue.put_nowait(_END)


@contextlib.contextmanager
def _as_runtime_error() -> Any:
    """The original raised RuntimeError-like errors for calls on a client that is not up."""
    try:
        yield
    except (NotConnectedError, ClientStateError) as exc:
        if isinstance(exc, DropInNotConnectedError):
            raise
        raise DropInNotConnectedError(f"not connected to the MQTT broker: {exc}") from exc
