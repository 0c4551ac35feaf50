"""Contract: what reaches whom. Publish/subscribe, wildcards, retained messages, QoS,
overlapping filters and shared subscriptions, identical on every broker (see conftest.py).

"Nothing else arrived" is never waited for with a sleep: a last message (the end marker) is
published after the ones under test, on a topic every subscription involved matches; a broker
keeps one publisher's messages in order, so once the marker is in, anything else would be too.
"""

from __future__ import annotations

import asyncio

import pytest

from contract.harness import Target, collect, publish_many
from support.mosquitto_cli import Inbox
from tars.mqtt import Envelope, Message

END = b"end"


async def until_end(inbox: Inbox[Message], timeout: float = 5.0) -> list[bytes]:
    """The payloads ``inbox`` received up to and including the end marker (waited for)."""
    count = 1
    while True:
        items = await inbox.wait_for(count, timeout)
        if items[-1].payload == END:
            return [message.payload for message in items]
        count += 1


async def test_a_subscriber_receives_what_is_published_on_its_topic(target: Target) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    raw = await collect(subscriber, target.topic("raw"), qos=1)
    events: Inbox[Envelope] = Inbox()

    async def on_event(envelope: Envelope) -> None:
        events.add(envelope)

    await subscriber.subscribe(target.topic("events"), on_event, qos=1)

    await publisher.publish(target.topic("raw"), b"\x00binary\xff", qos=1)
    event_id = await publisher.publish_event(
        target.topic("events"), "order.created", {"order": 42}, qos=1
    )

    [message] = await raw.wait_for(1)
    assert (message.topic, message.payload, message.retain) == (
        target.topic("raw"),
        b"\x00binary\xff",
        False,
    )
    [envelope] = await events.wait_for(1)
    assert (envelope.id, envelope.type, envelope.data, envelope.source) == (
        event_id,
        "order.created",
        {"order": 42},
        publisher.client_id,
    )


async def test_wildcards_match_as_mqtt_5_defines_them(target: Target) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    single = await collect(subscriber, target.topic("+", "temp"), qos=1)
    multi = await collect(subscriber, target.topic("kitchen", "#"), qos=1)

    for levels in ("kitchen/temp", "hall/temp", "kitchen/light/on", "kitchen", "hall/light"):
        await publisher.publish(target.topic(levels), levels.encode(), qos=1)
    await publisher.publish(target.topic("kitchen/temp"), END, qos=1)

    assert await until_end(single) == [b"kitchen/temp", b"hall/temp", END]
    # "kitchen/#" also matches "kitchen" itself, its parent level (MQTT 5, 4.7.1.2).
    assert await until_end(multi) == [b"kitchen/temp", b"kitchen/light/on", b"kitchen", END]


@pytest.mark.needs("dollar_topics")
async def test_a_first_level_wildcard_never_matches_a_dollar_topic(target: Target) -> None:
    """MQTT 5, 4.7.2 (the same in 3.1.1, 4.7.2)."""
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    dollar, plain = f"$x/{target.root}/d", f"x/{target.root}/d"
    first_level = await collect(subscriber, f"+/{target.root}/d", qos=1)

    await publisher.publish(dollar, b"hidden", qos=1)
    await publisher.publish(plain, b"seen", qos=1)
    await publisher.publish(plain, END, qos=1)

    assert await until_end(first_level) == [b"seen", END]


async def test_a_new_subscriber_gets_the_last_retained_message_and_an_empty_one_clears_it(
    target: Target,
) -> None:
    publisher = await target.client("pub")
    state = target.topic("state")
    await publisher.publish(state, b"v1", qos=1, retain=True)
    await publisher.publish(state, b"v2", qos=1, retain=True)

    early = await target.client("early")
    early_inbox = await collect(early, state, qos=1)
    [stored] = await early_inbox.wait_for(1)
    assert (stored.payload, stored.retain) == (b"v2", True)  # only the last one is kept

    # A live retained publish reaches a present subscriber with retain=False: the client
    # subscribes with retain-as-published off, so the flag means "the broker's stored copy".
    await publisher.publish(state, b"v3", qos=1, retain=True)
    [_, live] = await early_inbox.wait_for(2)
    assert (live.payload, live.retain) == (b"v3", False)

    await publisher.publish(state, b"", qos=1, retain=True)  # clears the topic
    late = await target.client("late")
    late_inbox = await collect(late, state, qos=1)
    await publisher.publish(state, END, qos=1)
    assert await until_end(late_inbox) == [END]
    assert late_inbox.items[0].retain is False


@pytest.mark.needs("qos2")
async def test_each_message_arrives_at_the_lower_of_publish_and_subscription_qos(
    target: Target,
) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    at_2 = await collect(subscriber, target.topic("q2"), qos=2)
    at_1 = await collect(subscriber, target.topic("q1"), qos=1)

    for qos in (0, 1, 2):
        await publisher.publish(target.topic("q2"), b"%d" % qos, qos=qos)
        await publisher.publish(target.topic("q1"), b"%d" % qos, qos=qos)

    received_2 = await at_2.wait_for(3)
    assert [(m.payload, m.qos) for m in received_2] == [(b"0", 0), (b"1", 1), (b"2", 2)]
    received_1 = await at_1.wait_for(3)
    assert [(m.payload, m.qos) for m in received_1] == [(b"0", 0), (b"1", 1), (b"2", 1)]


@pytest.mark.needs("qos2")
async def test_qos_2_messages_are_each_handled_exactly_once(target: Target) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    inbox = await collect(subscriber, target.topic("exact"), qos=2)
    sent = [b"%d" % n for n in range(50)]

    for payload in sent:  # all in flight at once: acks and deliveries interleave
        await publisher.publish(target.topic("exact"), payload, qos=2, wait=False)
    await publisher.flush(timeout=10)
    await publisher.publish(target.topic("exact"), END, qos=2)

    assert await until_end(inbox) == [*sent, END]
    assert {m.qos for m in inbox.items} == {2}


async def test_overlapping_filters_deliver_once_to_each_handler(target: Target) -> None:
    """One copy per matching subscription, each carrying its subscription id: each handler
    is called once per message, however many of the client's filters match."""
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    everything = await collect(subscriber, target.topic("o", "#"), qos=1)
    by_room = await collect(subscriber, target.topic("o", "+", "x"), qos=1)
    exact = await collect(subscriber, target.topic("o", "a", "x"), qos=1)
    exact_again = await collect(subscriber, target.topic("o", "a", "x"), qos=1)

    await publish_many(publisher, target.topic("o", "a", "x"), [b"one", END], qos=1)

    for inbox in (everything, by_room, exact, exact_again):
        assert await until_end(inbox) == [b"one", END]


@pytest.mark.needs("qos2")
async def test_overlapping_filters_each_deliver_at_their_own_qos(target: Target) -> None:
    """MQTT 5 (3.3.4) requires one copy at the highest matching QoS and allows one more per
    further subscription at that subscription's QoS. Mosquitto sends one per subscription,
    and so does the in-memory broker: a handler sees the QoS of the filter it asked for."""
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    low = await collect(subscriber, target.topic("o", "#"), qos=0)
    high = await collect(subscriber, target.topic("o", "a"), qos=2)

    await publisher.publish(target.topic("o", "a"), b"one", qos=2)
    await publisher.publish(target.topic("o", "a"), END, qos=2)

    assert await until_end(low) == [b"one", END]
    assert await until_end(high) == [b"one", END]
    if target.protocol == "3.1.1":
        # One copy at the highest QoS (3.1.1, 3.3.5; Mosquitto and the in-memory broker):
        # routed by topic to both handlers (docs/mqtt311.md, "Subscription identifiers").
        assert [m.qos for m in low.items] == [2, 2]
    else:
        assert [m.qos for m in low.items] == [0, 0]
    assert [m.qos for m in high.items] == [2, 2]


@pytest.mark.needs("shared_subscriptions")
async def test_a_shared_subscription_gives_each_message_to_one_member_in_turn(
    target: Target,
) -> None:
    """Both brokers hand a ``$share`` group's messages round robin over its connected
    members; MQTT 5 itself only requires that each message reach exactly one member."""
    publisher = await target.client("pub")
    jobs = target.topic("jobs")
    shared = f"$share/{target.root}/{jobs}"
    received: Inbox[tuple[int, bytes]] = Inbox()
    for number in (0, 1):
        member = await target.client(f"worker{number}")

        async def work(payload: bytes, number: int = number) -> None:
            received.add((number, payload))

        await member.subscribe(shared, work, qos=1)
    sent = [b"job-%d" % n for n in range(10)]

    await publish_many(publisher, jobs, [*sent, END], qos=1)

    # Two members, two connections: no order between them, so count rather than wait for END.
    got = await received.wait_for(len(sent) + 1)
    assert sorted(payload for _, payload in got) == sorted([*sent, END])  # each exactly once
    by_member = sorted([p for m, p in got if m == n and p != END] for n in (0, 1))
    assert by_member == [sent[0::2], sent[1::2]]  # in turn, each member in publish order


async def test_mqtt_5_properties_reach_the_subscriber_unchanged(target: Target) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    inbox = await collect(subscriber, target.topic("props"), qos=1)
    properties = {
        "user_properties": [("trace", "abc"), ("trace", "def")],
        "content_type": "application/json",
        "response_topic": target.topic("reply"),
        "correlation_data": b"\x01\x02",
        "message_expiry_interval": 3600,
    }

    await publisher.publish(target.topic("props"), b"{}", qos=1, properties=properties)

    [message] = await inbox.wait_for(1)
    packet = message.packet
    if target.protocol == "3.1.1":
        # 3.1.1 has no properties: none sent, and the publisher counts it (docs/mqtt311.md).
        assert publisher.stats.properties_dropped == 1
        assert packet.user_properties == []
        assert (packet.content_type, packet.response_topic, packet.correlation_data) == (
            None,
            None,
            None,
        )
        assert packet.message_expiry_interval is None
        return
    assert packet.user_properties == [("trace", "abc"), ("trace", "def")]  # order and repeats
    assert (packet.content_type, packet.response_topic, packet.correlation_data) == (
        "application/json",
        target.topic("reply"),
        b"\x01\x02",
    )
    # The broker forwards the remaining lifetime: a second or so may have passed.
    assert packet.message_expiry_interval is not None
    assert 3590 <= packet.message_expiry_interval <= 3600


async def test_a_request_gets_its_reply(target: Target) -> None:
    responder = await target.client("responder")

    async def answer(request: Message) -> None:
        await responder.reply(request, "sum.result", {"sum": sum(request.envelope.data["terms"])})

    await responder.subscribe(target.topic("sum"), answer, qos=1)
    requester = await target.client("requester")

    reply = await requester.request(
        target.topic("sum"),
        "sum.request",
        {"terms": [1, 2, 3]},
        response_topic=target.topic("sum", "reply"),
        timeout=5,
    )
    assert (reply.type, reply.data, reply.source) == ("sum.result", {"sum": 6}, responder.client_id)


async def test_after_unsubscribing_nothing_more_arrives(target: Target) -> None:
    publisher = await target.client("pub")
    subscriber = await target.client("sub")
    gone = await collect(subscriber, target.topic("gone"), qos=1)
    kept = await collect(subscriber, target.topic("kept"), qos=1)
    await publisher.publish(target.topic("gone"), b"before", qos=1)
    await gone.wait_for(1)

    await subscriber.unsubscribe(target.topic("gone"))
    await publisher.publish(target.topic("gone"), b"after", qos=1)
    await publisher.publish(target.topic("kept"), END, qos=1)

    assert await until_end(kept) == [END]
    assert [m.payload for m in gone.items] == [b"before"]
    # Read before END on the same link: the broker did not send "after" at all (a message no
    # subscription of the client wants is counted as unmatched as soon as it is read).
    assert subscriber.stats.unmatched == 0


async def test_publishing_where_nobody_listens_succeeds_at_every_qos(target: Target) -> None:
    """Both brokers answer QoS 1 with "no matching subscribers" (0x10, a success code) and QoS 2
    with Success: nothing counts as a failure."""
    publisher = await target.client("pub")
    for qos in (0, 1) if target.lacks("qos2") else (0, 1, 2):  # (RabbitMQ: no QoS 2)
        await publisher.publish(target.topic("nobody", str(qos)), b"x", qos=qos)
    assert publisher.stats.publish_failed == 0


@pytest.mark.needs("shared_subscriptions")
async def test_shared_members_get_retained_messages_only_where_the_broker_sends_them(
    target: Target,
) -> None:
    """MQTT 5 (4.8.2): retained messages are not sent because of a shared subscription; the
    in-memory broker follows it. Mosquitto 2.0 does not: it sends the retained message to
    every member as it subscribes. Both are accepted here, so that the suite states the
    difference instead of hiding it; what a service may rely on is the same on both: live
    messages go to one member each, and a retained copy, if any, says retain=True."""
    publisher = await target.client("pub")
    jobs = target.topic("jobs")
    await publisher.publish(jobs, b"stored", qos=1, retain=True)
    received: Inbox[tuple[int, Message]] = Inbox()
    for number in (0, 1):
        member = await target.client(f"worker{number}")

        async def work(message: Message, number: int = number) -> None:
            received.add((number, message))

        await member.subscribe(f"$share/{target.root}/{jobs}", work, qos=1)

    await publish_many(publisher, jobs, [b"live-0", b"live-1"], qos=1)

    count = 2
    while sum(not m.retain for _, m in await received.wait_for(count)) < 2:
        count += 1
    retained = sorted((n, m.payload) for n, m in received.items if m.retain)
    assert retained in ([], [(0, b"stored"), (1, b"stored")])
    live = sorted(m.payload for _, m in received.items if not m.retain)
    assert live == [b"live-0", b"live-1"]


async def test_a_slow_subscriber_loses_nothing_at_qos_1(target: Target) -> None:
    """A handler that blocks fills its one-slot queue, the client stops reading, and the
    broker holds the rest within the client's receive maximum (10): all arrive, in order."""
    publisher = await target.client("pub")
    subscriber = await target.client("sub", receive_maximum=10)
    release = asyncio.Event()
    handled: Inbox[bytes] = Inbox()

    async def slow(payload: bytes) -> None:
        await release.wait()
        handled.add(payload)

    await subscriber.subscribe(target.topic("burst"), slow, qos=1, queue_size=1, overflow="block")
    sent = [b"%d" % n for n in range(300)]

    for payload in sent:
        await publisher.publish(target.topic("burst"), payload, qos=1, wait=False)
    await publisher.flush(timeout=10)  # the broker has them all: now let the handler run
    release.set()

    assert await handled.wait_for(len(sent), timeout=10) == sent
    assert subscriber.stats.dropped == 0
