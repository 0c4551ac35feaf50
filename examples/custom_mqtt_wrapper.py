"""Three ways to extend MQTTClient without editing or subclassing it: wrap it.

- :class:`DomainMQTTClient` speaks a service's vocabulary (``publish_stt_final``) so callers
  never repeat topics, event types and QoS.
- :class:`BatchingMQTTClient` adds behaviour around ``publish_event``: small events are
  grouped per topic and sent when a batch is full, when ``batch_interval`` has passed, and on
  shutdown, so nothing is left behind.
- :class:`AdvancedMQTTClient` uses the protocol-level ``client`` property for what the wrapper
  does not offer: a subscription with MQTT 5 options (``no_local``), a filter on the MQTT 5
  user properties, and the broker's CONNACK.

Each holds an :class:`~tars.mqtt.MQTTClient` (composition), so the core's reconnection, health,
outbox and dispatch keep working underneath. Run ``main()`` against a broker::

    MQTT_URL=mqtt://localhost:1883 python examples/custom_mqtt_wrapper.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mqtt5 import PublishPacket, QoS, TopicFilter
from pydantic import BaseModel

from tars.mqtt import (
    Envelope,
    LinkView,
    Message,
    MQTTClient,
    NotConnectedError,
    SubscribeError,
    Subscription,
    topic_matches,
)

log = logging.getLogger("examples.custom_mqtt_wrapper")

# --- 1. Domain vocabulary -------------------------------------------------------------------------


class SttFinal(BaseModel):
    """The data of a ``stt.final`` event: what the speech-to-text service heard."""

    text: str
    confidence: float
    lang: str = "en"


class DomainMQTTClient:
    """The STT service's words for its messages; topics, types and QoS live here only."""

    TOPIC = "stt/final"
    EVENT = "stt.final"

    def __init__(self, mqtt: MQTTClient) -> None:
        self.mqtt = mqtt

    async def publish_stt_final(self, text: str, confidence: float, lang: str = "en") -> str:
        """Publish a final transcript (QoS 1: a lost utterance is a lost command); return its
        envelope id."""
        data = SttFinal(text=text, confidence=confidence, lang=lang)
        return await self.mqtt.publish_event(self.TOPIC, self.EVENT, data, qos=1)

    async def on_stt_final(self, handler: Callable[[SttFinal], Awaitable[None]]) -> Subscription:
        """Call ``handler`` with every valid transcript (invalid ones are counted and logged by
        the core, never passed on)."""

        async def typed(event: SttFinal) -> None:
            await handler(event)

        return await self.mqtt.subscribe(self.TOPIC, typed, qos=1)


# --- 2. Batching ----------------------------------------------------------------------------------


class BatchingMQTTClient:
    """Send many small events as fewer ``batch`` events, one batch per topic.

    A topic's batch is published (as ``{"items": [...]}``) as soon as it holds ``batch_size``
    items, else ``batch_interval`` seconds after its first item, and every batch is published
    by :meth:`flush` and :meth:`shutdown`.
    """

    def __init__(
        self,
        mqtt: MQTTClient,
        batch_size: int = 10,
        batch_interval: float = 1.0,
        *,
        event_type: str = "batch",
        qos: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if batch_interval <= 0:
            raise ValueError(f"batch_interval must be > 0, got {batch_interval!r}")
        self.mqtt = mqtt
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.event_type = event_type
        self.qos = qos
        self._batches: dict[str, list[dict[str, Any]]] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}

    def pending(self, topic: str) -> int:
        """Items waiting in ``topic``'s batch."""
        return len(self._batches.get(topic, ()))

    async def publish_batched(self, topic: str, data: Mapping[str, Any]) -> None:
        """Add ``data`` to ``topic``'s batch; publish the batch now if it is full."""
        batch = self._batches.setdefault(topic, [])
        batch.append(dict(data))
        if len(batch) >= self.batch_size:
            await self._publish(topic)
        elif topic not in self._timers:
            self._timers[topic] = asyncio.create_task(
                self._publish_later(topic), name=f"batch-timer:{topic}"
            )

    async def flush(self) -> None:
        """Publish every pending batch now."""
        await asyncio.gather(*(self._publish(topic) for topic in list(self._batches)))

    async def shutdown(self) -> None:
        """Publish what is pending, then shut the wrapped client down."""
        try:
            await self.flush()
        finally:
            await self.mqtt.shutdown()

    async def _publish_later(self, topic: str) -> None:
        await asyncio.sleep(self.batch_interval)
        try:
            await self._publish(topic)
        except Exception:  # nobody awaits a timer: log it, as the core logs a failed handler
            log.exception("could not publish the batch of %r", topic)

    async def _publish(self, topic: str) -> None:
        timer = self._timers.pop(topic, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        items = self._batches.pop(topic, [])  # taken before awaiting: new items start a new one
        if items:
            await self.mqtt.publish_event(topic, self.event_type, {"items": items}, qos=self.qos)


# --- 3. Protocol-level access ---------------------------------------------------------------------

MessageFilter = Callable[[Message], bool]
MessageHandler = Callable[[Message], Awaitable[None]]


@dataclass
class _FilteredSubscription:
    pattern: str
    qos: int
    accept: MessageFilter
    handler: MessageHandler
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None


class AdvancedMQTTClient:
    """MQTT 5 features the wrapper does not wrap, through ``mqtt.client`` (a LinkView).

    Subscriptions made on the connection are not the core's: the core does not restore them
    after a reconnect, so this class re-sends them from an ``on_connect`` hook, and it receives
    their messages through ``add_message_listener``.
    """

    def __init__(self, mqtt: MQTTClient) -> None:
        self.mqtt = mqtt
        self._subscriptions: list[_FilteredSubscription] = []
        self._remove_listener = mqtt.add_message_listener(self._on_packet)
        mqtt.on_connect(self._resubscribe)

    def broker_limits(self) -> dict[str, Any]:
        """What the broker's CONNACK said about its limits (MQTT 5 properties)."""
        connack = self._connection().connack
        assert connack is not None  # a live link has had its CONNACK
        return {
            "max_qos": int(connack.max_qos),
            "retain_available": connack.retain_available,
            "receive_max": connack.receive_max,
            "shared_subscription_available": connack.shared_subscription_available,
        }

    async def subscribe_with_filter(
        self, topic: str, filter_fn: MessageFilter, handler: MessageHandler, *, qos: int = 1
    ) -> None:
        """Call ``handler`` for the messages on ``topic`` that ``filter_fn`` accepts, except our
        own publishes (``no_local``, an MQTT 5 subscription option).

        ``filter_fn`` runs on the receive path: keep it fast. Raises
        :class:`~tars.mqtt.NotConnectedError` when not connected and
        :class:`~tars.mqtt.SubscribeError` when the broker refuses.
        """
        conn = self._connection()
        sub = _FilteredSubscription(topic, qos, filter_fn, handler)
        sub.worker = asyncio.create_task(self._work(sub), name=f"filtered:{topic}")
        self._subscriptions.append(sub)
        try:
            await self._subscribe(conn, sub)
        except BaseException:
            self._subscriptions.remove(sub)
            sub.worker.cancel()
            raise

    async def close(self) -> None:
        """Stop delivering (the broker-side subscriptions end with the connection)."""
        self._remove_listener()
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            if sub.worker is not None:
                sub.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sub.worker

    def _connection(self) -> LinkView:
        conn = self.mqtt.client
        if conn is None:
            raise NotConnectedError("the MQTT client is not connected")
        return conn

    @staticmethod
    async def _subscribe(conn: LinkView, sub: _FilteredSubscription) -> None:
        options = TopicFilter(sub.pattern, max_qos=QoS(sub.qos), no_local=True)
        [code] = await conn.subscribe(options)
        if code >= 0x80:
            raise SubscribeError(sub.pattern, code)

    async def _resubscribe(self) -> None:
        conn = self.mqtt.client
        for sub in list(self._subscriptions):
            if conn is not None:
                await self._subscribe(conn, sub)

    def _on_packet(self, packet: PublishPacket) -> None:
        message: Message | None = None
        for sub in self._subscriptions:
            if topic_matches(sub.pattern, packet.topic):
                message = message or Message(packet)
                if sub.accept(message):
                    sub.queue.put_nowait(message)

    @staticmethod
    async def _work(sub: _FilteredSubscription) -> None:
        while True:
            message = await sub.queue.get()
            try:
                await sub.handler(message)
            except Exception:
                log.exception("filtered handler failed on %r", message.topic)


# --- main(): all three against a broker -----------------------------------------------------------


def _severity(message: Message) -> str | None:
    return dict(message.packet.user_properties).get("severity")


async def main(url: str | None = None) -> int:
    """Exercise the three wrappers against the broker at ``url`` (default: ``$MQTT_URL``)."""
    url = url or os.environ.get("MQTT_URL", "mqtt://localhost:1883")
    suffix = str(os.getpid())
    mqtt = MQTTClient(url, f"wrapper-demo-{suffix}")
    peer = MQTTClient(url, f"wrapper-peer-{suffix}")
    async with mqtt, peer:
        # 1. Domain vocabulary: a typed round trip.
        heard: asyncio.Queue[SttFinal] = asyncio.Queue()
        stt = DomainMQTTClient(mqtt)
        await stt.on_stt_final(heard.put)
        await stt.publish_stt_final("turn left", 0.93)
        transcript = await asyncio.wait_for(heard.get(), 5)
        print(f"domain:   heard {transcript.text!r} ({transcript.confidence}, {transcript.lang})")

        # 3. Protocol level: only high-severity alerts from others reach the handler.
        alerts: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_alert(message: Message) -> None:
            await alerts.put(message.payload)

        advanced = AdvancedMQTTClient(mqtt)
        print(f"advanced: broker limits {advanced.broker_limits()}")
        high = {"user_properties": [("severity", "high")]}
        low = {"user_properties": [("severity", "low")]}
        await advanced.subscribe_with_filter("alerts/#", lambda m: _severity(m) == "high", on_alert)
        await mqtt.publish("alerts/battery", b"our own alert", qos=1, properties=high)
        await peer.publish("alerts/battery", b"battery at 40%", qos=1, properties=low)
        await peer.publish("alerts/battery", b"battery at 5%", qos=1, properties=high)
        alert = await asyncio.wait_for(alerts.get(), 5)
        print(f"advanced: got {alert!r} only")
        await advanced.close()

        # 2. Batching: 25 readings leave as batches of 10, 10 and (on shutdown) 5.
        batches: asyncio.Queue[Envelope] = asyncio.Queue()

        async def on_batch(batch: Envelope) -> None:
            await batches.put(batch)

        topic = f"sensors/imu/{suffix}"
        await peer.subscribe(topic, on_batch, qos=1)
        batcher = BatchingMQTTClient(mqtt, batch_size=10, batch_interval=1.0)
        for i in range(25):
            await batcher.publish_batched(topic, {"i": i})
        await batcher.shutdown()
        sizes = [len((await asyncio.wait_for(batches.get(), 5)).data["items"]) for _ in range(3)]
        print(f"batching: batch sizes {sizes}")

    ok = (transcript.text, alert, sizes) == ("turn left", b"battery at 5%", [10, 10, 5])
    print("all three patterns work" if ok else "something went wrong")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
