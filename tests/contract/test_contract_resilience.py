"""Contract: what survives trouble. De-duplication, reconnection with subscriptions restored,
session resumption, and QoS 2 exactly once across dropped links, identical on every broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from mqtt5 import PublishPacket

from contract.harness import Target, collect, connections, publish_many
from support.mosquitto_cli import Inbox
from tars.mqtt import ClientOptions, Envelope, new_id

EXPIRY = 60  # seconds the broker keeps a session after its client left
SESSION: ClientOptions = {"session_expiry_interval": EXPIRY}


def envelope_bytes(data: dict[str, int]) -> tuple[str, bytes]:
    """A new envelope's id and its bytes, to publish (and re-publish) as they are."""
    envelope = Envelope(id=new_id(), type="order.created", ts=time.time(), source="pub", data=data)
    return envelope.id, envelope.model_dump_json().encode()


async def test_a_duplicate_delivery_of_an_envelope_is_handled_once(target: Target) -> None:
    """The same envelope twice (a publisher's retry, a bridge's loop) reaches the handler once."""
    publisher = await target.client("pub")
    subscriber = await target.client("sub", dedupe_ttl=60, dedupe_max_entries=100)
    handled: Inbox[Envelope] = Inbox()

    async def handle(envelope: Envelope) -> None:
        handled.add(envelope)

    await subscriber.subscribe(target.topic("orders"), handle, qos=1)
    first_id, first = envelope_bytes({"n": 1})
    second_id, second = envelope_bytes({"n": 2})

    await publish_many(publisher, target.topic("orders"), [first, first, second], qos=1)

    assert [e.id for e in await handled.wait_for(2)] == [first_id, second_id]
    assert subscriber.stats.deduplicated == 1
    assert subscriber.stats.handled == 2


async def test_a_dropped_link_is_reestablished_with_its_subscriptions(target: Target) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub", connect=False)
    inbox = await collect(subscriber, target.topic("after"), qos=1)
    connects = connections(subscriber)
    await subscriber.connect()
    await connects.wait_for(1)

    await target.drop(subscriber)
    await connects.wait_for(2)  # reconnected, subscriptions restored

    await publisher.publish(target.topic("after"), b"still here", qos=1)
    [message] = await inbox.wait_for(1)
    assert message.payload == b"still here"
    assert subscriber.connected
    assert subscriber.stats.connects == 2


async def test_a_resumed_session_receives_what_was_queued_while_away(target: Target) -> None:
    publisher = await target.client("pub")
    first = await target.client("svc", **SESSION)
    await collect(first, target.topic("work"), qos=1)
    await first.shutdown()  # DISCONNECT; the broker keeps the session for 60 s

    await publisher.publish(target.topic("work"), b"a", qos=1)
    await publisher.publish(target.topic("work"), b"zero", qos=0)  # Mosquitto never queues QoS 0
    await publish_many(publisher, target.topic("work"), [b"b", b"c"], qos=1)

    again = await target.client(
        "svc",
        client_id=first.client_id,
        connect=False,
        clean_start=False,
        session_expiry_interval=EXPIRY,
    )
    inbox = await collect(again, target.topic("work"), qos=1)
    await again.connect()
    if not target.queues_qos0:
        assert [m.payload for m in await inbox.wait_for(3)] == [b"a", b"b", b"c"]
        assert [m.qos for m in inbox.items] == [1, 1, 1]
        return
    # ejabberd and RabbitMQ queue QoS 0 too (MQTT 5, 4.1, allows it); RabbitMQ in a queue of
    # its own, so in no order with the QoS 1 ones.
    received = [(m.payload, m.qos) for m in await inbox.wait_for(4)]
    assert [m for m in received if m[1] == 0] == [(b"zero", 0)]
    assert [m for m in received if m[1] == 1] == [(b"a", 1), (b"b", 1), (b"c", 1)]


async def test_a_clean_start_forgets_what_was_queued(target: Target) -> None:
    publisher = await target.client("pub")
    first = await target.client("svc", **SESSION)
    await collect(first, target.topic("work"), qos=1)
    await first.shutdown()
    await publisher.publish(target.topic("work"), b"stale", qos=1)

    again = await target.client("svc", client_id=first.client_id, connect=False, **SESSION)
    inbox = await collect(again, target.topic("work"), qos=1)
    await again.connect()  # clean_start=True (the default): a new session
    await publisher.publish(target.topic("work"), b"fresh", qos=1)
    if target.protocol == "3.1.1":
        # 3.1.1 has one flag: a session that outlives its link (expiry > 0) is resumed, the
        # first link too (docs/mqtt311.md, "Session expiry").
        assert [m.payload for m in await inbox.wait_for(2)] == [b"stale", b"fresh"]
        return
    [message] = await inbox.wait_for(1)
    assert message.payload == b"fresh"


@pytest.mark.needs("qos2")
async def test_a_qos_2_delivery_resent_after_a_cut_is_handled_once(target: Target) -> None:
    """The subscriber reads a QoS 2 message, and its link dies before its PUBREC gets out.
    The broker must send the message again on the resumed session (MQTT 5, 4.4); the client
    acknowledges the resend but does not hand it to the handler a second time."""
    publisher = await target.client("pub")
    subscriber = await target.client("sub", **SESSION)
    topic = target.topic("exact")
    handled = await collect(subscriber, topic, qos=2)

    def on_read(packet: PublishPacket) -> None:  # called as the PUBLISH is read
        if packet.payload == b"once":
            target.halt(subscriber)  # so the PUBREC written next is lost

    subscriber.add_message_listener(on_read)
    connects = connections(subscriber)

    await publisher.publish(topic, b"once", qos=2)
    await handled.wait_for(1)
    # The premise, where the broker lets us look: it still waits for that PUBREC.
    assert target.inflight(subscriber) in (1, None)
    await target.drop(subscriber)
    await connects.wait_for(1)

    await publisher.publish(topic, b"end", qos=2)
    assert [m.payload for m in await handled.wait_for(2)] == [b"once", b"end"]


@pytest.mark.needs("qos2")
async def test_no_qos_2_message_is_lost_or_doubled_when_both_links_drop(target: Target) -> None:
    """Both clients keep a session; the subscriber's link is cut as the 10th message is
    handled, the publisher's as the 30th is: what was in flight is resent (PUBLISH with DUP,
    or PUBREL) by whichever side must, and each message is still handled exactly once."""
    publisher = await target.client("pub", **SESSION)
    subscriber = await target.client("sub", **SESSION)
    topic = target.topic("exact")
    handled: Inbox[bytes] = Inbox()
    cuts: list[asyncio.Task[None]] = []

    async def handle(payload: bytes) -> None:
        handled.add(payload)
        victim = {10: subscriber, 30: publisher}.get(len(handled.items))
        if victim is not None:
            cuts.append(asyncio.create_task(target.drop(victim)))

    await subscriber.subscribe(topic, handle, qos=2)
    reconnects = [connections(subscriber), connections(publisher)]
    sent = [b"%d" % n for n in range(60)]

    for payload in sent:  # each one acknowledged (across reconnects) before the next
        await publisher.publish(topic, payload, qos=2)
    for reconnected in reconnects:
        await reconnected.wait_for(1)
    await asyncio.gather(*cuts)
    await publisher.publish(topic, b"end", qos=2)

    count = len(sent) + 1
    while (await handled.wait_for(count))[-1] != b"end":
        count += 1
    assert handled.items == [*sent, b"end"]
