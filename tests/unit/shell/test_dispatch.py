"""The dispatcher routes received PUBLISH packets to subscriptions; nothing more.

Identifiers come from the session's subscription table (as the client wires them); the
subscriptions are real ones, with their workers on the test's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from mqtt5 import ConnAckPacket, PubAckPacket, PublishPacket, QoS

from support.mosquitto_cli import Inbox
from support.session_wire import connected, feed, sent
from tars.mqtt import Message
from tars.mqtt._asyncio.acks import Acks
from tars.mqtt._asyncio.dispatch import Dispatcher
from tars.mqtt._asyncio.subscription import Handler, Overflow, Subscription
from tars.mqtt._core.subtable import SubscriptionTable
from tars.mqtt._envelope import encode_event


def packet(
    payload: bytes = b"p", topic: str = "a/b", ids: list[int] | None = None
) -> PublishPacket:
    return PublishPacket(topic, payload, subscription_ids=ids)


def event(data: dict[str, Any]) -> bytes:
    return encode_event("t", data, source="test")[1]


def _never() -> None:
    raise AssertionError("a drop or roomy queue never pauses the link")


def subscription(
    handler: Handler[Any],
    topic_filter: str = "a/#",
    *,
    queue_size: int = 100,
    overflow: Overflow = "drop_newest",
    done: Callable[[int], None] | None = None,
) -> Subscription:
    return Subscription(
        topic_filter,
        handler,
        qos=0,
        queue_size=queue_size,
        overflow=overflow,
        concurrency=1,
        timeout=None,
        dedup=None,
        pause=_never,
        resume=_never,
        done=done,
    )


def recorder() -> tuple[Handler[Any], Inbox[Any]]:
    inbox: Inbox[Any] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    return handler, inbox


class Routed:
    """A dispatcher wired as the client wires it: identifiers from a subscription table."""

    def __init__(self) -> None:
        self.table = SubscriptionTable()
        self.dispatcher = Dispatcher()
        self.started: list[Subscription] = []

    def add(self, sub: Subscription) -> int:
        sid, _ = self.table.add(sub.topic_filter, sub.qos)
        self.dispatcher.add(sub, sid)
        sub.start()
        self.started.append(sub)
        return sid

    async def close(self) -> None:
        for sub in self.started:
            await sub.stop()


async def test_routing_by_subscription_identifier_gives_each_subscription_one_copy() -> None:
    """Mosquitto sends one copy per matching subscription, each with its own identifier."""
    wide, wide_inbox = recorder()
    exact, exact_inbox = recorder()
    routed = Routed()
    wide_sub, exact_sub = subscription(wide, "a/#"), subscription(exact, "a/b")
    wide_id, exact_id = routed.add(wide_sub), routed.add(exact_sub)
    assert wide_id != exact_id
    on_packet = routed.dispatcher.on_packet
    on_packet(packet(b"m", "a/b", ids=[wide_id]))
    on_packet(packet(b"m", "a/b", ids=[exact_id]))
    on_packet(packet(b"both", "a/b", ids=[wide_id, exact_id]))  # one copy, two ids
    assert await wide_inbox.wait_for(2) == [b"m", b"both"]
    assert await exact_inbox.wait_for(2) == [b"m", b"both"]
    await wide_sub.join()
    await exact_sub.join()
    assert len(wide_inbox.items) == len(exact_inbox.items) == 2
    await routed.close()


async def test_an_identifier_routes_to_its_filter_even_if_the_topic_matches_others() -> None:
    # Identifiers are the broker's word on which subscription matched: no topic matching then.
    wide, wide_inbox = recorder()
    exact, exact_inbox = recorder()
    routed = Routed()
    wide_sub, exact_sub = subscription(wide, "a/#"), subscription(exact, "a/b")
    wide_id = routed.add(wide_sub)
    routed.add(exact_sub)
    routed.dispatcher.on_packet(packet(b"only-wide", "a/b", ids=[wide_id]))
    assert await wide_inbox.wait_for(1) == [b"only-wide"]
    await exact_sub.join()
    assert exact_inbox.items == []
    await routed.close()


async def test_an_unknown_identifier_is_counted_unmatched() -> None:
    handler, inbox = recorder()
    routed = Routed()
    sid = routed.add(subscription(handler, "a/#"))
    routed.dispatcher.on_packet(packet(b"stale", "a/b", ids=[sid + 1]))
    assert routed.dispatcher.unmatched == 1
    assert inbox.items == []
    await routed.close()


async def test_routing_by_topic_without_identifiers() -> None:
    wide, wide_inbox = recorder()
    exact, exact_inbox = recorder()
    routed = Routed()
    subs = [subscription(wide, "a/#"), subscription(exact, "a/b")]
    for sub in subs:
        routed.add(sub)
    dispatcher = routed.dispatcher
    dispatcher.on_packet(packet(b"1", "a/b"))
    dispatcher.on_packet(packet(b"2", "a/c"))
    dispatcher.on_packet(packet(b"3", "z"))
    assert await wide_inbox.wait_for(2) == [b"1", b"2"]
    assert await exact_inbox.wait_for(1) == [b"1"]
    for sub in subs:
        await sub.join()
    assert (len(wide_inbox.items), len(exact_inbox.items)) == (2, 1)
    assert dispatcher.unmatched == 1
    await routed.close()


async def test_shared_subscriptions_match_on_their_filter_without_the_share_prefix() -> None:
    handler, inbox = recorder()
    routed = Routed()
    routed.add(subscription(handler, "$share/workers/jobs/+"))
    routed.dispatcher.on_packet(packet(b"job", "jobs/1"))
    assert await inbox.wait_for(1) == [b"job"]
    await routed.close()


async def test_one_message_object_per_packet_parsed_once() -> None:
    """Every subscription sees the same Message, so the JSON is parsed once for all."""
    seen: Inbox[Message] = Inbox()

    async def handler(m: Message) -> None:
        seen.add(m)

    routed = Routed()
    for topic_filter in ("a/#", "a/+", "a/b", "a/b"):
        routed.add(subscription(handler, topic_filter))
    routed.dispatcher.on_packet(packet(event({"n": 1}), "a/b"))
    messages = await seen.wait_for(4)
    assert all(m is messages[0] for m in messages)
    assert all(m.envelope is messages[0].envelope for m in messages)
    await routed.close()


async def test_subscriptions_sharing_a_filter_each_get_the_message_once() -> None:
    first, first_inbox = recorder()
    second, second_inbox = recorder()
    routed = Routed()
    sid = routed.add(subscription(first, "a/b"))
    assert routed.add(subscription(second, "a/b")) == sid  # one MQTT subscription
    routed.dispatcher.on_packet(packet(b"m", "a/b", ids=[sid]))
    assert await first_inbox.wait_for(1) == [b"m"]
    assert await second_inbox.wait_for(1) == [b"m"]
    await routed.close()


async def test_remove_says_when_a_filter_has_no_subscription_left() -> None:
    first, first_inbox = recorder()
    second, second_inbox = recorder()
    routed = Routed()
    low, high = subscription(first, "a/b"), subscription(second, "a/b")
    sid = routed.add(low)
    routed.add(high)
    dispatcher = routed.dispatcher
    assert dispatcher.subscriptions("a/b") == [low, high]
    assert dispatcher.remove(high) is False  # a handler is left on the filter
    dispatcher.on_packet(packet(b"after", "a/b", ids=[sid]))
    assert await first_inbox.wait_for(1) == [b"after"]
    assert dispatcher.remove(low) is True  # the filter is empty: UNSUBSCRIBE it
    assert dispatcher.remove(low) is False
    assert dispatcher.subscriptions() == []
    dispatcher.on_packet(packet(b"gone", "a/b", ids=[sid]))
    dispatcher.on_packet(packet(b"gone", "a/b"))
    assert dispatcher.unmatched == 2
    assert second_inbox.items == []
    await routed.close()


async def test_internal_consumers_see_their_topic_synchronously() -> None:
    routed = Routed()
    sid, _ = routed.table.add_internal("system/keepalive/me")
    seen: list[str] = []
    routed.dispatcher.add_internal("system/keepalive/me", sid, lambda m: seen.append(m.topic))
    routed.dispatcher.on_packet(packet(b"beat", "system/keepalive/me", ids=[sid]))
    assert seen == ["system/keepalive/me"]  # at once: no queue, no worker
    routed.dispatcher.on_packet(packet(b"beat", "system/keepalive/me"))
    assert seen == ["system/keepalive/me"] * 2
    assert routed.dispatcher.unmatched == 0


async def test_a_message_for_an_internal_topic_and_a_subscription_reaches_both() -> None:
    handler, inbox = recorder()
    routed = Routed()
    user_sid = routed.add(subscription(handler, "system/#"))
    sid, _ = routed.table.add_internal("system/keepalive/me")
    seen: list[bytes] = []
    routed.dispatcher.add_internal("system/keepalive/me", sid, lambda m: seen.append(m.payload))
    routed.dispatcher.on_packet(packet(b"beat", "system/keepalive/me", ids=[sid, user_sid]))
    routed.dispatcher.on_packet(packet(b"beat2", "system/keepalive/me"))
    assert seen == [b"beat", b"beat2"]
    assert await inbox.wait_for(2) == [b"beat", b"beat2"]
    await routed.close()


async def test_a_slow_handler_fills_only_its_own_queue() -> None:
    fast, fast_inbox = recorder()
    gate = asyncio.Event()

    async def slow(payload: bytes) -> None:
        await gate.wait()

    routed = Routed()
    slow_sub = subscription(slow, queue_size=1, overflow="drop_newest")
    routed.add(slow_sub)
    routed.add(subscription(fast))
    for i in range(5):
        routed.dispatcher.on_packet(packet(b"%d" % i))
    assert await fast_inbox.wait_for(5) == [b"0", b"1", b"2", b"3", b"4"]
    assert slow_sub.stats.dropped == 4  # queue_size 1: all but the first were dropped
    gate.set()
    await routed.close()


# --- acknowledgement after handling, and the unrouted backlog (issue 18) -----------------------


class Acking:
    """A dispatcher wired to a pure session that acknowledges after handling, as the client
    wires it: each write of the acknowledgements the session queued is ``flush`` (here: noted),
    each subscription is given ``Acks.done``, and health changes are noted."""

    def __init__(self, **incoming: float | None) -> None:
        self.session = connected(ack_after_handling=True)
        for name, value in incoming.items():
            setattr(self.session.incoming, name, value)
        self.flushes: Inbox[None] = Inbox()
        self.health: Inbox[tuple[bool, str | None]] = Inbox()
        self.acks = Acks(
            self.session,
            self,  # the link holder: its current link's flush is noted
            on_health=lambda degraded, why: self.health.add((degraded, why)),
        )
        self.dispatcher = Dispatcher(self.acks)
        self.current = self
        self.table = SubscriptionTable()
        self.started: list[Subscription] = []

    def flush(self) -> None:
        """The current link writes what the session queued (here: noted)."""
        self.flushes.add(None)

    def sid(self, topic_filter: str) -> int:
        sid, _ = self.table.add(topic_filter, 1)
        return sid

    def add(self, sub: Subscription, sid: int | None = None) -> None:
        sub._done = self.acks.done  # as subscribe() gives it (done=)
        self.dispatcher.add(sub, self.sid(sub.topic_filter) if sid is None else sid)
        sub.start()
        self.started.append(sub)

    def arrive(self, packet_id: int, qos: QoS = QoS.AT_LEAST_ONCE, **options: Any) -> None:
        """The broker sends a PUBLISH; the session hands it to the dispatcher."""
        sent_by_broker = PublishPacket(
            "a/b", b"%d" % packet_id, qos=qos, packet_id=packet_id, **options
        )
        (publish,) = feed(self.session, sent_by_broker)
        assert isinstance(publish, PublishPacket)
        self.dispatcher.on_packet(publish)

    def acked(self) -> list[int]:
        """The packet ids PUBACK-ed since the last look."""
        packets = sent(self.session)
        assert all(isinstance(p, PubAckPacket) for p in packets), packets
        return [p.packet_id for p in packets if isinstance(p, PubAckPacket)]

    async def close(self) -> None:
        self.dispatcher.close()
        for sub in self.started:
            await sub.stop()


def gated() -> tuple[Handler[Any], asyncio.Event, Inbox[Any]]:
    gate, inbox = asyncio.Event(), Inbox[Any]()

    async def handler(payload: bytes) -> None:
        await gate.wait()
        inbox.add(payload)

    return handler, gate, inbox


async def test_a_message_is_acknowledged_once_every_subscription_it_reached_is_done() -> None:
    acking = Acking()
    first, first_gate, _ = gated()
    second, second_gate, _ = gated()
    one, two = subscription(first, "a/#"), subscription(second, "a/+")
    acking.add(one)
    acking.add(two)
    acking.arrive(1)  # no identifiers: both filters match
    first_gate.set()
    await one.join()
    assert acking.acked() == []  # the other handler still has it
    second_gate.set()
    await two.join()
    await acking.flushes.wait_for(1)
    assert acking.acked() == [1]
    await acking.close()


async def test_a_parked_message_goes_to_a_subscription_added_later_then_is_acknowledged() -> None:
    acking = Acking()
    handler, inbox = recorder()
    sid = acking.sid("a/#")
    acking.arrive(1, subscription_ids=[sid])  # a resumed session's backlog: no handler yet
    acking.arrive(2, subscription_ids=[sid])
    assert (acking.dispatcher.unmatched, acking.acked()) == (0, [])
    acking.add(subscription(handler, "a/#"), sid)
    assert await inbox.wait_for(2) == [b"1", b"2"]  # in arrival order
    await acking.flushes.wait_for(1)
    assert acking.acked() == [1, 2]
    assert acking.dispatcher.unmatched == 0
    await acking.close()


async def test_a_parked_message_nobody_subscribes_to_waits_unacknowledged_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Never acknowledged unhandled by default: it waits, logged, and health turns degraded;
    a subscription that comes at last gets it, and health recovers."""
    acking = Acking(warn_after=0.05)
    sid = acking.sid("a/#")
    acking.arrive(1, subscription_ids=[sid])  # an identifier of ours, no handler yet
    expected = (True, "1 received messages wait for a subscription")
    assert await acking.health.wait_for(1) == [expected]
    assert "wait for a subscription" in caplog.text
    incoming = acking.session.incoming
    assert (acking.dispatcher.unmatched, incoming.overdue, acking.acked()) == (0, 1, [])
    handler, inbox = recorder()
    acking.add(subscription(handler, "a/#"), sid)
    assert await inbox.wait_for(1) == [b"1"]
    assert (await acking.health.wait_for(2))[1] == (False, None)
    await acking.flushes.wait_for(1)
    assert acking.acked() == [1]
    await acking.close()


async def test_with_the_opt_in_timeout_a_parked_message_is_given_up_and_acknowledged() -> None:
    acking = Acking(unrouted_timeout=0.05)
    acking.arrive(1, subscription_ids=[4242])
    assert acking.acked() == []
    await acking.flushes.wait_for(1)  # unrouted_timeout passed
    assert (acking.session.incoming.discarded, acking.acked()) == (1, [1])
    await acking.close()


async def test_an_untagged_unmatched_qos1_message_is_acknowledged_at_once() -> None:
    """A raw subscription's message (no identifier of ours): its listeners got it already, and
    holding it would hold every later acknowledgement (they go in arrival order)."""
    acking = Acking()
    acking.arrive(1)
    assert (acking.dispatcher.unmatched, acking.acked()) == (1, [1])
    await acking.close()


async def test_an_unmatched_qos0_message_is_not_held() -> None:
    acking = Acking()
    handler, inbox = recorder()
    acking.dispatcher.on_packet(packet(b"q0", "a/b"))
    assert acking.dispatcher.unmatched == 1
    sub = subscription(handler, "a/#")
    acking.add(sub)
    await sub.join()
    assert inbox.items == []
    await acking.close()


async def test_a_parked_message_delays_the_acknowledgements_of_those_after_it() -> None:
    # Arrival order: message 2 is handled at once, but its PUBACK waits for message 1's.
    acking = Acking()
    handler, inbox = recorder()
    sid = acking.sid("a/#")
    other = acking.sid("z/#")
    acking.add(subscription(handler, "a/#"), sid)
    acking.arrive(1, subscription_ids=[other])  # for a filter with no handler yet
    acking.arrive(2, subscription_ids=[sid])
    assert await inbox.wait_for(1) == [b"2"]
    await acking.started[0].join()
    assert acking.acked() == []
    late, late_inbox = recorder()
    acking.add(subscription(late, "z/#"), other)
    assert await late_inbox.wait_for(1) == [b"1"]
    await acking.flushes.wait_for(1)
    assert acking.acked() == [1, 2]
    await acking.close()


async def test_close_leaves_parked_messages_unacknowledged() -> None:
    acking = Acking()
    acking.arrive(1, subscription_ids=[4242])
    acking.dispatcher.close()  # shutdown: the broker keeps them for the next session
    assert (acking.dispatcher.unmatched, acking.acked()) == (0, [])
    await acking.close()


async def test_qos0_messages_keep_their_overflow_policy_when_acknowledging_after_handling() -> None:
    # Only QoS 1/2 messages wait for their handlers; a QoS 0 stream stays bounded by its queue.
    acking = Acking()
    handler, gate, inbox = gated()
    sub = subscription(handler, "a/#", queue_size=1, overflow="drop_newest")
    acking.add(sub)
    for i in range(4):
        acking.dispatcher.on_packet(packet(b"%d" % i, "a/b"))  # before the worker ran once
    gate.set()
    await sub.join()
    assert (inbox.items, sub.stats.dropped) == ([b"0"], 3)
    await acking.close()


async def test_acknowledgements_released_in_one_loop_turn_leave_in_one_write() -> None:
    """The worker finishes 200 messages without yielding: their PUBACKs go out together, in
    one write at the end of the turn, not one write per message (nor per 64)."""
    acking = Acking()
    handler, inbox = recorder()
    sid = acking.sid("a/#")
    acking.add(subscription(handler, "a/#", queue_size=1000), sid)
    for packet_id in range(1, 201):
        acking.arrive(packet_id, subscription_ids=[sid])
    await inbox.wait_for(200)
    await acking.flushes.wait_for(1)
    await asyncio.sleep(0)  # one more turn: no second write comes
    assert len(acking.flushes.items) == 1
    assert acking.acked() == list(range(1, 201))
    await acking.close()


async def test_health_recovers_when_a_link_end_takes_the_backlog_away() -> None:
    acking = Acking(warn_after=0.01)
    acking.arrive(1, subscription_ids=[4242])
    assert (await acking.health.wait_for(1))[0][0] is True  # degraded
    acking.session.connection_lost(now=0.0)  # the parked message goes with its link
    acking.session.connection_made(1.0)
    feed(acking.session, ConnAckPacket(session_present=True), now=1.0)
    sent(acking.session)
    acking.arrive(1, subscription_ids=[4242])  # sent again on the new link
    assert (await acking.health.wait_for(3))[1:] == [
        (False, None),
        (True, "1 received messages wait for a subscription"),
    ]
    await acking.close()
