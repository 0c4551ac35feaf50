"""Subscribing and dispatch (issue 3 §5), on the in-memory broker; the first test also on a
real Mosquitto (``support.brokers.BOTH``), and the resumed-session test on Mosquitto only.

Messages come from an independent peer (``broker.publish``: ``mosquitto_pub`` on Mosquitto, a
client of the broker's own in memory) or from the client under test; handlers record what they
get in an :class:`Inbox` the test waits on.
"""

from __future__ import annotations

import asyncio
import json
import logging

import mqtt5
import pytest
from pydantic import BaseModel

from support.brokers import BOTH, Broker
from support.mosquitto_cli import Inbox, mosquitto_pub, unique, wait_until
from tars.mqtt import ClientState, Envelope, Message, MQTTClient
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

# How long a test watches for a message that must NOT come, after a later message (sent after
# it on the same path) already arrived: only the handler's own queue could still be behind.
NOTHING_MORE = 0.1


def envelope_bytes(event_type: str, data: dict[str, object], msg_id: str = "id-1") -> bytes:
    """An envelope as another (non-tars) producer would write it: no ``correlate`` field."""
    return json.dumps(
        {"id": msg_id, "type": event_type, "ts": 1.5, "source": "other", "data": data}
    ).encode()


class Command(BaseModel):
    action: str
    speed: int


async def test_seed_handler_form_gets_bytes_from_another_client(
    broker: Broker,
) -> None:
    topic = unique("sub/seed")
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    async with broker.connected_client() as client:
        await client.subscribe(topic, handler)
        await broker.publish(topic, b"\x00raw\xffbytes")
        assert await inbox.wait_for(1) == [b"\x00raw\xffbytes"]


async def test_unannotated_handler_gets_bytes(broker: Broker) -> None:
    topic = unique("sub/plain")
    inbox: Inbox[object] = Inbox()

    async def handler(payload):  # type: ignore[no-untyped-def]  # the seed's services do this
        inbox.add(payload)

    async with broker.connected_client() as client:
        await client.subscribe(topic, handler)
        await broker.publish(topic, b"plain")
        assert await inbox.wait_for(1) == [b"plain"]


@pytest.mark.parametrize("broker", BOTH, indirect=True)
async def test_message_form_on_a_wildcard_learns_topic_qos_retain_and_envelope(
    broker: Broker,
) -> None:
    base = unique("sub/msg")
    inbox: Inbox[Message] = Inbox()

    async def handler(msg: Message) -> None:
        inbox.add(msg)

    await broker.publish(f"{base}/kitchen/temp", envelope_bytes("t", {"c": 21}), retain=True)
    async with broker.connected_client() as client:
        await client.subscribe(f"{base}/+/temp", handler, qos=1)
        [retained] = await inbox.wait_for(1)
        msg_id = await client.publish_event(f"{base}/hall/temp", "t", {"c": 19}, qos=1)
        live = (await inbox.wait_for(2))[1]
    await broker.publish(f"{base}/kitchen/temp", b"", retain=True)  # clean up
    assert (retained.topic, retained.retain, retained.qos) == (f"{base}/kitchen/temp", True, 0)
    assert retained.envelope.data == {"c": 21}
    assert retained.envelope.correlate is None  # an older producer's envelope is accepted
    assert (live.topic, live.retain, live.qos) == (f"{base}/hall/temp", False, 1)
    assert live.envelope.id == msg_id
    assert live.json()["data"] == {"c": 19}


async def test_envelope_and_model_forms(broker: Broker) -> None:
    topic = unique("sub/typed")
    envelopes: Inbox[Envelope] = Inbox()
    commands: Inbox[Command] = Inbox()

    async def on_envelope(env: Envelope) -> None:
        envelopes.add(env)

    async def on_command(cmd: Command) -> None:
        commands.add(cmd)

    async with broker.connected_client(source_name="ui") as client:
        await client.subscribe(topic, on_envelope)
        model_sub = await client.subscribe(topic, on_command)
        await client.publish_event(topic, "cmd", {"action": "go", "speed": "fast"})  # invalid
        msg_id = await client.publish_event(topic, "cmd", Command(action="go", speed=3))
        [bad, good] = await envelopes.wait_for(2)
        [cmd] = await commands.wait_for(1)
    assert isinstance(good, Envelope)
    assert (good.id, good.type, good.source) == (msg_id, "cmd", "ui")
    assert cmd == Command(action="go", speed=3)
    assert bad.data["speed"] == "fast"
    assert model_sub.stats.invalid == 1
    assert commands.items == [cmd]


async def test_several_handlers_on_one_filter_each_get_it_once(
    broker: Broker,
) -> None:
    topic = unique("sub/shared")
    first: Inbox[bytes] = Inbox()
    second: Inbox[bytes] = Inbox()

    async def one(payload: bytes) -> None:
        first.add(payload)

    async def two(payload: bytes) -> None:
        second.add(payload)

    async with broker.connected_client() as client:
        await client.subscribe(topic, one)
        await client.subscribe(topic, two)
        await broker.publish(topic, b"m1")
        await broker.publish(topic, b"sentinel")
        assert await first.wait_for(2) == [b"m1", b"sentinel"]
        assert await second.wait_for(2) == [b"m1", b"sentinel"]
        await asyncio.sleep(NOTHING_MORE)
    assert len(first.items) == len(second.items) == 2


async def test_overlapping_filters_each_handler_gets_a_message_once(
    broker: Broker,
) -> None:
    """Mosquitto sends one copy per matching subscription; each must reach only its own."""
    base = unique("sub/overlap")
    wide: Inbox[bytes] = Inbox()
    exact: Inbox[bytes] = Inbox()
    packets: list[mqtt5.PublishPacket] = []

    async def on_wide(payload: bytes) -> None:
        wide.add(payload)

    async def on_exact(payload: bytes) -> None:
        exact.add(payload)

    async with broker.connected_client() as client:
        client.add_message_listener(packets.append)
        await client.subscribe(f"{base}/#", on_wide)
        await client.subscribe(f"{base}/b", on_exact)
        await broker.publish(f"{base}/b", b"both", qos=1)
        await broker.publish(f"{base}/b", b"sentinel", qos=1)
        assert await wide.wait_for(2) == [b"both", b"sentinel"]
        assert await exact.wait_for(2) == [b"both", b"sentinel"]
        await asyncio.sleep(NOTHING_MORE)
    assert len(wide.items) == len(exact.items) == 2
    # The broker really did send duplicates: the client, not the broker, kept them apart.
    assert sum(p.payload == b"both" for p in packets) == 2


async def test_a_failing_handler_is_logged_and_dispatch_goes_on(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique("sub/fail")
    seen: Inbox[Envelope] = Inbox()

    async def flaky(env: Envelope) -> None:
        seen.add(env)
        if env.data["n"] == 1:
            raise RuntimeError("boom")

    caplog.set_level(logging.WARNING, logger="tars.mqtt")
    async with broker.connected_client() as client:
        sub = await client.subscribe(topic, flaky)
        bad_id = await client.publish_event(topic, "n", {"n": 1})
        await client.publish_event(topic, "n", {"n": 2})
        await seen.wait_for(2)
        await wait_until(lambda: sub.stats.handled == 1)
        stats = client.stats
    assert (sub.stats.failed, sub.stats.handled) == (1, 1)
    assert stats.failed == 1
    failures = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
    assert len(failures) == 1
    assert topic in failures[0].getMessage()
    assert bad_id in failures[0].getMessage()


async def test_non_coroutine_handlers_are_refused_at_subscribe(
    broker: Broker,
) -> None:
    topic = unique("sub/sync")
    packets: list[mqtt5.PublishPacket] = []

    def sync_handler(payload: bytes) -> None:
        pass

    async with broker.connected_client() as client:
        with pytest.raises(TypeError, match="async"):
            await client.subscribe(topic, sync_handler)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async"):
            await client.subscribe(topic, lambda payload: None)  # type: ignore[arg-type,return-value]
        # Nothing was subscribed: the broker sends this client nothing on the topic.
        client.add_message_listener(packets.append)
        await client.publish(topic, b"x", qos=1)
        await client.publish(topic, b"x", qos=1)
        unmatched = client.stats.unmatched
    assert packets == []
    assert unmatched == 0


async def test_subscriptions_made_before_connect_are_sent_on_connect(
    broker: Broker,
) -> None:
    topic = unique("sub/early")
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    client = broker.client(unique("early"))
    await client.subscribe(topic, handler, qos=1)
    await client.connect()
    try:
        await broker.publish(topic, b"hello", qos=1)
        assert await inbox.wait_for(1) == [b"hello"]
    finally:
        await client.shutdown()


_MALFORMED = [
    b"not json at all",
    b'{"hello": "world"}',  # JSON, not an envelope
    b"[1, 2, 3]",
    b'{"id": "\xff\xfe", "type": "t"}',  # bad UTF-8
]


async def test_malformed_payloads_never_stop_dispatch(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique("sub/malformed")
    raw: Inbox[bytes] = Inbox()
    envelopes: Inbox[Envelope] = Inbox()

    async def on_raw(payload: bytes) -> None:
        raw.add(payload)

    async def on_envelope(env: Envelope) -> None:
        envelopes.add(env)

    caplog.set_level(logging.WARNING, logger="tars.mqtt")
    async with broker.connected_client() as client:
        await client.subscribe(topic, on_raw, qos=1)
        env_sub = await client.subscribe(topic, on_envelope, qos=1)
        for payload in _MALFORMED:
            await broker.publish(topic, payload, qos=1)
        good = envelope_bytes("ok", {"fine": True})
        await broker.publish(topic, good, qos=1)
        assert await raw.wait_for(len(_MALFORMED) + 1) == [*_MALFORMED, good]
        [env] = await envelopes.wait_for(1)
        stats = client.stats
    assert env.data == {"fine": True}
    assert env_sub.stats.invalid == len(_MALFORMED)
    assert stats.invalid == len(_MALFORMED)
    assert envelopes.items == [env]
    logged = [r for r in caplog.records if "not valid" in r.getMessage()]
    assert len(logged) == len(_MALFORMED)
    assert all(topic in r.getMessage() for r in logged)


async def test_unsubscribe_all_one_handler_or_one_subscription(
    broker: Broker,
) -> None:
    topic = unique("sub/unsub")
    a: Inbox[bytes] = Inbox()
    b: Inbox[bytes] = Inbox()
    c: Inbox[bytes] = Inbox()
    packets: Inbox[mqtt5.PublishPacket] = Inbox()

    async def on_a(payload: bytes) -> None:
        a.add(payload)

    async def on_b(payload: bytes) -> None:
        b.add(payload)

    async def on_c(payload: bytes) -> None:
        c.add(payload)

    async with broker.connected_client() as client:
        client.add_message_listener(packets.add)
        await client.subscribe(topic, on_a)
        await client.subscribe(topic, on_b)
        sub_c = await client.subscribe(topic, on_c)
        await client.publish(topic, b"1")
        for inbox in (a, b, c):
            await inbox.wait_for(1)

        await client.unsubscribe(topic, on_a)  # only this handler
        await client.publish(topic, b"2")
        await b.wait_for(2)
        await c.wait_for(2)

        await client.unsubscribe(sub_c)  # only this subscription
        await client.publish(topic, b"3")
        await b.wait_for(3)
        await asyncio.sleep(NOTHING_MORE)
        assert a.items == [b"1"]
        assert c.items == [b"1", b"2"]

        await client.unsubscribe(topic)  # everything left: the broker is told
        await client.publish(topic, b"4")
        sentinel = unique("sub/unsub-sentinel")
        await client.subscribe(sentinel, on_c)
        await client.publish(sentinel, b"5")
        await packets.wait_for(4)
        unmatched = client.stats.unmatched
    assert [p.payload for p in packets.items] == [b"1", b"2", b"3", b"5"]
    assert b.items == [b"1", b"2", b"3"]
    assert unmatched == 0


async def test_dedup_within_the_ttl_and_not_after(broker: Broker) -> None:
    topic = unique("sub/dedup")
    ttl = 0.5
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    dup = envelope_bytes("e", {"n": 1}, msg_id="dup-1")
    async with broker.connected_client(dedupe_ttl=ttl, dedupe_max_entries=100) as client:
        sub = await client.subscribe(topic, handler, qos=1)
        await broker.publish(topic, dup, qos=1)
        await broker.publish(topic, dup, qos=1)  # same bytes, same id
        await broker.publish(topic, b"not an envelope", qos=1)
        await broker.publish(topic, b"not an envelope", qos=1)
        sentinel = envelope_bytes("e", {"n": 2}, msg_id="sentinel-1")
        await broker.publish(topic, sentinel, qos=1)
        assert await inbox.wait_for(4) == [dup, b"not an envelope", b"not an envelope", sentinel]
        assert sub.stats.deduplicated == 1
        assert client.stats.deduplicated == 1

        await asyncio.sleep(ttl * 1.2)  # let the TTL pass: then the same id is new again
        await broker.publish(topic, dup, qos=1)
        assert (await inbox.wait_for(5))[4] == dup
        assert sub.stats.deduplicated == 1


async def test_a_payload_that_only_starts_like_an_envelope_reaches_a_dedup_handler(
    broker: Broker,
) -> None:
    """``{"id":"abc" garbage``: its id is read from the bytes, then the JSON parse fails. That
    failure escaped the dedup check and the message was lost (and its QoS 1 acknowledgement
    withheld for good); it is delivered as any payload that is not an envelope."""
    topic = unique("sub/dedup-garbage")
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    garbage = b'{"id":"abc" garbage'
    async with broker.connected_client(dedupe_ttl=60, dedupe_max_entries=100) as client:
        sub = await client.subscribe(topic, handler, qos=1)
        await broker.publish(topic, garbage, qos=1)
        after = envelope_bytes("e", {"n": 1}, msg_id="after-garbage")
        await broker.publish(topic, after, qos=1)
        assert await inbox.wait_for(2) == [garbage, after]
        assert (sub.stats.handled, sub.stats.deduplicated) == (2, 0)


async def test_no_dedup_by_default(broker: Broker) -> None:
    topic = unique("sub/nodedup")
    inbox: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    dup = envelope_bytes("e", {"n": 1}, msg_id="dup-2")
    async with broker.connected_client() as client:
        await client.subscribe(topic, handler, qos=1)
        await broker.publish(topic, dup, qos=1)
        await broker.publish(topic, dup, qos=1)
        assert await inbox.wait_for(2) == [dup, dup]


async def test_unsubscribing_one_subscription_twice_leaves_the_others_subscribed(
    broker: Broker,
) -> None:
    """The second call finds nothing of it left: the broker is not told to drop a filter
    another handler still wants."""
    topic = unique("sub/twice")
    a: Inbox[bytes] = Inbox()
    b: Inbox[bytes] = Inbox()

    async def on_a(payload: bytes) -> None:
        a.add(payload)

    async def on_b(payload: bytes) -> None:
        b.add(payload)

    async with broker.connected_client() as client:
        sub_a = await client.subscribe(topic, on_a)
        await client.subscribe(topic, on_b)
        await client.unsubscribe(sub_a)
        await client.unsubscribe(sub_a)
        await client.publish(topic, b"1", qos=1)
        await b.wait_for(1)
    assert a.items == []


async def test_a_handler_may_unsubscribe_itself(broker: Broker) -> None:
    topic = unique("sub/once")
    sentinel = unique("sub/once-sentinel")
    got: Inbox[bytes] = Inbox()
    packets: Inbox[mqtt5.PublishPacket] = Inbox()

    async def once(payload: bytes) -> None:
        await client.unsubscribe(topic)
        got.add(payload)

    async def on_sentinel(payload: bytes) -> None:
        got.add(payload)

    async with broker.connected_client() as client:
        await client.subscribe(topic, once, qos=1)
        await client.subscribe(sentinel, on_sentinel, qos=1)
        client.add_message_listener(packets.add)
        await client.publish(topic, b"first", qos=1)
        assert await got.wait_for(1) == [b"first"]
        await client.publish(topic, b"second", qos=1)  # the broker was told: never sent
        await client.publish(sentinel, b"sentinel", qos=1)
        assert await got.wait_for(2) == [b"first", b"sentinel"]
        assert [p.payload for p in packets.items] == [b"first", b"sentinel"]


async def test_a_handler_may_shut_the_client_down(broker: Broker) -> None:
    """A service that stops on a command: shutdown() from a handler returns normally."""
    topic = unique("sub/stop")
    outcome: Inbox[str] = Inbox()
    before = asyncio.all_tasks()
    client = broker.client(unique("stopper"), enable_health=True)

    async def stop_command(payload: bytes) -> None:
        try:
            await client.shutdown()
        except BaseException as exc:
            outcome.add(f"raised {exc!r}")
            raise
        outcome.add("returned")

    async def bystander(payload: bytes) -> None:
        await asyncio.sleep(3600)  # still running when the client shuts down

    await client.connect()
    await client.subscribe(f"{topic}/other", bystander)
    await client.subscribe(topic, stop_command)
    await client.publish(f"{topic}/other", b"x", qos=1)
    await client.publish(topic, b"stop", qos=1)
    assert await outcome.wait_for(1) == ["returned"]
    assert client.state is ClientState.CLOSED
    await wait_until(lambda: all(t.done() for t in asyncio.all_tasks() - before))


async def test_a_filter_is_subscribed_at_the_highest_qos_its_handlers_ask(
    broker: Broker,
) -> None:
    topic = unique("sub/qos")
    low: Inbox[Message] = Inbox()
    high: Inbox[Message] = Inbox()

    async def on_low(msg: Message) -> None:
        low.add(msg)

    async def on_high(msg: Message) -> None:
        high.add(msg)

    async with broker.connected_client() as client:
        await client.subscribe(topic, on_low, qos=0)
        await broker.publish(topic, b"before", qos=2)
        await client.subscribe(topic, on_high, qos=2)  # upgrades the broker's subscription
        await broker.publish(topic, b"after", qos=2)
        [before, after] = await low.wait_for(2)
        [after_high] = await high.wait_for(1)
    assert (before.payload, before.qos) == (b"before", 0)
    assert (after.payload, after.qos) == (b"after", 2)
    assert after_high is after  # one copy, shared by the filter's handlers


@pytest.mark.mosquitto
async def test_a_subscription_made_while_reconnecting_is_sent_on_a_resumed_session(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    """The broker's resumed session holds the old subscriptions only: a filter added while
    the link was down must still be subscribed when it comes back."""
    proxy = await make_tcp_proxy(mosquitto_broker.host, mosquitto_broker.port)
    topic = unique("sub/late")
    links: Inbox[bool] = Inbox()
    got: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        got.add(payload)

    client = MQTTClient(
        proxy.url, unique("late"), session_expiry_interval=60, reconnect_min_delay=0.05
    )

    @client.on_connect
    async def on_connect() -> None:
        conn = client.client
        links.add(bool(conn is not None and conn.connack.session_present))

    await client.connect()
    try:
        await links.wait_for(1)
        proxy.refuse()
        await proxy.drop_connections()
        await wait_until(lambda: client.state is ClientState.RECONNECTING)
        await client.subscribe(topic, handler, qos=1)
        proxy.refuse(False)
        assert (await links.wait_for(2))[1] is True  # the session was resumed
        await mosquitto_pub(mosquitto_broker, topic, b"hello", qos=1)
        assert await got.wait_for(1) == [b"hello"]
    finally:
        await client.shutdown()
