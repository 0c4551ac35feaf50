"""Fault tests: Mosquitto killed with ``kill -9`` and restarted under traffic (issue 4, tests 1-2).

A persistent-session subscriber (clean_start=False, a session expiry, a stable client id)
receives 2,000 QoS 1 events from a publisher while the broker, persistence on, is killed and
started again on the same port. Every id must arrive at least once, and with de-duplication on
each must be handled exactly once. The figures (messages lost and duplicated, time from the
broker's return to the subscriber's reconnection) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

import pytest

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ClientState, Envelope, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

TOTAL = 2000
END = -1  # the id of the marker published after everything else
HELD = 200  # events published only after the last kill


@dataclass
class KillRun:
    """What one traffic-with-kills run observed."""

    handled: list[int] = field(default_factory=list)
    arrivals: int = 0  # PUBLISH packets of the test topic that reached the subscriber
    deduplicated: int = 0
    published_at_kill: list[int] = field(default_factory=list)
    reconnect_after_up: list[float] = field(default_factory=list)  # seconds, one per kill
    session_resumed: list[bool] = field(default_factory=list)

    @property
    def lost(self) -> set[int]:
        return set(range(TOTAL)) - set(self.handled)

    @property
    def duplicated(self) -> int:
        """Arrivals beyond one per id (the subscriber's dedup removed them)."""
        return self.arrivals - TOTAL


async def traffic_with_kills(broker: MosquittoBroker, kills: int) -> KillRun:
    """Publish TOTAL QoS 1 events at a steady pace; kill -9 and restart the broker ``kills``
    times, evenly spread over what the subscriber has handled; return what was seen.

    The publisher holds its last HELD events until the kills are over, so that however slow
    the machine, every kill happens while it is still publishing.
    """
    loop = asyncio.get_running_loop()
    run = KillRun()
    base = unique("resilience/kill")
    topic, end_topic = f"{base}/tick", f"{base}/end"
    handled: Inbox[int] = Inbox()
    end = asyncio.Event()
    sub = MQTTClient(
        broker.url,
        unique("kill-sub"),
        clean_start=False,
        session_expiry_interval=600,
        dedupe_ttl=600,
        dedupe_max_entries=4 * TOTAL,
    )
    pub = MQTTClient(broker.url, unique("kill-pub"))

    async def on_event(envelope: Envelope) -> None:
        n = envelope.data["n"]
        if n == END:
            end.set()
        else:
            handled.add(n)

    def count_arrival(packet: object) -> None:
        if getattr(packet, "topic", None) == topic:
            run.arrivals += 1

    reconnected: Inbox[float] = Inbox()

    async def on_connect() -> None:
        reconnected.add(loop.time())

    published = 0
    kills_done = asyncio.Event()

    async def produce() -> None:
        nonlocal published
        for n in range(TOTAL):
            if n == TOTAL - HELD:
                await kills_done.wait()
            await pub.publish_event(topic, "resilience.tick", {"n": n}, qos=1, wait=False)
            published += 1
            if n % 5 == 4:
                await asyncio.sleep(0.008)  # pace: steady traffic over a few seconds
        await pub.flush(timeout=30)
        await pub.publish_event(end_topic, "resilience.end", {"n": END}, qos=1)

    await sub.subscribe(f"{base}/+", on_event, qos=1)
    sub.add_message_listener(count_arrival)
    sub.on_connect(on_connect)
    await sub.connect()
    await pub.connect()
    await reconnected.wait_for(1)
    producer = asyncio.create_task(produce(), name="test-producer")
    try:
        for k in range(1, kills + 1):
            await handled.wait_for(k * TOTAL // (kills + 2), timeout=30)
            run.published_at_kill.append(published)
            await broker.arestart(kill=True)
            up = loop.time()
            times = await reconnected.wait_for(k + 1, timeout=15)
            run.reconnect_after_up.append(times[k] - up)
            conn = sub.client
            run.session_resumed.append(bool(conn and conn.connack.session_present))
        kills_done.set()
        await producer
        await asyncio.wait_for(end.wait(), timeout=30)
    finally:
        producer.cancel()
        await pub.shutdown()
        await sub.shutdown()
    run.handled = handled.items
    run.deduplicated = sub.stats.deduplicated
    return run


def check(run: KillRun, kills: int) -> None:
    counts = collections.Counter(run.handled)
    print(
        f"\n[kill -9 x{kills}] lost={len(run.lost)} duplicated={run.duplicated} "
        f"(removed by dedup: {run.deduplicated}) published before each kill="
        f"{run.published_at_kill} broker up -> reconnected="
        f"{[round(t, 3) for t in run.reconnect_after_up]} s"
    )
    assert run.lost == set(), f"{len(run.lost)} ids never arrived, e.g. {sorted(run.lost)[:10]}"
    assert [n for n, c in counts.items() if c > 1] == [], "dedup let a duplicate through"
    assert run.deduplicated == run.duplicated
    # Mosquitto's persistence kept the subscriber's session across every kill -9.
    assert run.session_resumed == [True] * kills


async def test_kill_9_under_load_loses_no_qos1_message(mosquitto_broker: MosquittoBroker) -> None:
    run = await traffic_with_kills(mosquitto_broker, kills=1)
    check(run, kills=1)
    # The first loss after a stable link: back within 2 s of the broker (issue 4).
    assert run.reconnect_after_up[0] < 2.0


async def test_three_kills_in_a_row_lose_no_qos1_message(
    mosquitto_broker: MosquittoBroker,
) -> None:
    run = await traffic_with_kills(mosquitto_broker, kills=3)
    check(run, kills=3)
    # Losses seconds apart make the backoff grow (flap damping, see docs/resilience.md), but
    # never beyond reconnect_max_delay (5 s by default) plus the connection itself.
    assert max(run.reconnect_after_up) < 5.0 + 1.0


async def test_a_client_with_a_clean_session_resubscribes_after_a_restart(
    mosquitto_broker: MosquittoBroker,
) -> None:
    topic = unique("resilience/clean")
    got: Inbox[bytes] = Inbox()
    ups: Inbox[str] = Inbox()
    client = MQTTClient(mosquitto_broker.url, unique("clean"), enable_health=True)

    async def on_message(payload: bytes) -> None:
        got.add(payload)

    client.on_connect(lambda: _note(ups, "up"))
    client.on_disconnect(lambda: _note(ups, "down"))
    await client.subscribe(topic, on_message, qos=1)
    await client.subscribe(f"{topic}/+/status", on_message, qos=0)
    await client.connect()
    try:
        await mosquitto_broker.arestart(kill=True)
        await ups.wait_for(3, timeout=10)
        assert ups.items == ["up", "down", "up"]
        assert client.connected
        assert client.state is ClientState.CONNECTED
        conn = client.client
        assert conn is not None
        assert not conn.connack.session_present
        # The broker forgot the subscriptions with the session: they work only if restored.
        pub = MQTTClient(mosquitto_broker.url, unique("clean-pub"))
        async with pub:
            await pub.publish(topic, b"after the restart", qos=1)
            await pub.publish(f"{topic}/lamp/status", b"on", qos=1)
        assert sorted(await got.wait_for(2)) == [b"after the restart", b"on"]
        health = await _retained_health(mosquitto_broker, client.client_id)
        assert (health.data["ok"], health.data["event"]) == (True, "reconnected")
        assert client.stats.connects == 2
    finally:
        await client.shutdown()


async def _note(inbox: Inbox[str], what: str) -> None:
    inbox.add(what)


async def _retained_health(broker: MosquittoBroker, client_id: str) -> Envelope:
    """The retained health status of ``client_id``, read by a fresh client."""
    seen: Inbox[Envelope] = Inbox()

    async def on_status(envelope: Envelope) -> None:
        seen.add(envelope)

    async with MQTTClient(broker.url, unique("health-reader")) as reader:
        await reader.subscribe(f"system/health/{client_id}", on_status, qos=1)
        return (await seen.wait_for(1))[0]
