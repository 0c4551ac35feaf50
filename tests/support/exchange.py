"""Two tars-core services talking through a real broker: what issue 22's "Done when" asks of
every broker a user may have (RabbitMQ, amqtt, Mosquitto).

:func:`exchange` runs two services, ``a`` and ``b``, each on its own URL (two nodes of a
cluster, two transports, or one broker) with its own ``protocol``: envelopes both ways, a
request each way answered with ``reply()``, and ``a``'s retained health status read by ``b``.
It returns what happened; :meth:`Exchanged.check` asserts what a user would check. Both
services speak MQTT 3.1.1 on the 3.1.1-only brokers; the 3.1.1<->5 pair, where a 5
requester's response topic does not reach a 3.1.1 responder, is ``_exchange`` in
``test_client_mqtt311.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import Envelope, Message, MQTTClient

__all__ = ["Exchanged", "exchange", "service"]


@contextlib.asynccontextmanager
async def service(url: str, prefix: str, **options: Any) -> AsyncIterator[MQTTClient]:
    """A connected client (``wait_for_broker=False``: a broker that is not there fails at once)."""
    options.setdefault("connect_timeout", 5)
    client = MQTTClient(url, unique(prefix), wait_for_broker=False, **options)
    await client.connect()
    try:
        yield client
    finally:
        await client.shutdown()


@dataclass(frozen=True)
class Exchanged:
    """What :func:`exchange` saw: envelopes each side received, answers, the health status."""

    a: str  # the client ids
    b: str
    to_a: list[Envelope]
    to_b: list[Envelope]
    answer_to_a: Envelope
    answer_to_b: Envelope
    health_of_a: Envelope
    properties_dropped: int

    def check(self) -> None:
        """What a user of the two services would check: each got the other's envelope, each
        request was answered by the other (correlated), ``a`` is seen healthy, and no MQTT 5
        property was dropped on the way (request/reply went through the envelope)."""
        assert [e.data for e in self.to_b] == [{"n": 1}]
        assert [e.data for e in self.to_a] == [{"n": 2}]
        assert self.answer_to_a.data == {"from": self.b}
        assert self.answer_to_b.data == {"from": self.a}
        assert self.answer_to_a.correlate is not None
        assert self.answer_to_b.correlate is not None
        assert self.health_of_a.type == "health.status"
        assert self.health_of_a.data["ok"] is True
        assert self.properties_dropped == 0


async def exchange(
    url_a: str,
    url_b: str,
    *,
    protocol_a: str = "3.1.1",
    protocol_b: str = "3.1.1",
    health_url: str | None = None,
    timeout: float = 10.0,
) -> Exchanged:
    """Envelopes, request/reply both ways and health between services ``a`` and ``b``.

    ``a``'s health status is read by ``b``, or by a third client on ``health_url`` (for a
    cluster that keeps retained messages on the node they were published on)."""
    async with (
        service(url_a, "svc-a", protocol=protocol_a, enable_health=True) as a,
        service(url_b, "svc-b", protocol=protocol_b) as b,
    ):
        topic = unique("exchange")
        got_a: Inbox[Envelope] = Inbox()
        got_b: Inbox[Envelope] = Inbox()

        def handler_of(me: MQTTClient, inbox: Inbox[Envelope]) -> Any:
            async def handler(msg: Message) -> None:
                if msg.envelope.type == "ask":
                    await me.reply(msg, "answer", {"from": me.client_id})
                else:
                    inbox.add(msg.envelope)

            return handler

        await a.subscribe(f"{topic}/to-a", handler_of(a, got_a), qos=1)
        await b.subscribe(f"{topic}/to-b", handler_of(b, got_b), qos=1)
        await a.publish_event(f"{topic}/to-b", "hello", {"n": 1}, qos=1)
        await b.publish_event(f"{topic}/to-a", "hello", {"n": 2}, qos=1)
        to_b = await got_b.wait_for(1, timeout)
        to_a = await got_a.wait_for(1, timeout)
        answer_to_a = await a.request(
            f"{topic}/to-b", "ask", {}, response_topic=unique("replies-a"), timeout=timeout
        )
        answer_to_b = await b.request(
            f"{topic}/to-a", "ask", {}, response_topic=unique("replies-b"), timeout=timeout
        )
        seen: Inbox[Envelope] = Inbox()

        async def on_health(msg: Message) -> None:
            seen.add(msg.envelope)

        async with contextlib.AsyncExitStack() as stack:
            reader = b
            if health_url is not None:
                reader = await stack.enter_async_context(
                    service(health_url, "health-reader", protocol=protocol_b)
                )
            await reader.subscribe(f"system/health/{a.client_id}", on_health, qos=1)
            [health_of_a] = await seen.wait_for(1, timeout)
        return Exchanged(
            a=a.client_id,
            b=b.client_id,
            to_a=to_a,
            to_b=to_b,
            answer_to_a=answer_to_a,
            answer_to_b=answer_to_b,
            health_of_a=health_of_a,
            properties_dropped=a.stats.properties_dropped + b.stats.properties_dropped,
        )
