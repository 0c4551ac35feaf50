"""Fault tests: the reconnect policy against a real Mosquitto (issue 4, test 4 and the policy).

The broker is down at start, comes up, goes away for good: the client waits and connects by
itself, fails fast when told to, and closes when its backoff policy gives up. The policy is
observed through a thin wrapper that records what the supervisor asked it (its answers are the
wrapped policy's own), so the tests see the real schedule with no sleeps of their own.
"""

from __future__ import annotations

import asyncio

import mqtt5
import pytest

from support import LoopbackServer
from support.mosquitto_cli import Inbox, unique
from tars.mqtt import (
    BackoffPolicy,
    ClientState,
    ClientStateError,
    ConnectError,
    ExponentialBackoff,
    MQTTClient,
    NoRetry,
)
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


class RecordingBackoff:
    """A :class:`BackoffPolicy` that answers like ``inner`` and remembers every question."""

    def __init__(self, inner: BackoffPolicy) -> None:
        self.inner = inner
        self.calls: Inbox[tuple[int, bool, float | None]] = Inbox()

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        delay = self.inner.next_delay(attempt, refused=refused)
        self.calls.add((attempt, refused, delay))
        return delay


def client_tasks() -> list[str]:
    """The client's own background tasks still alive."""
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("tars-"))


@pytest.mark.slow
async def test_connect_waits_for_a_broker_that_is_down_at_start(
    mosquitto_broker: MosquittoBroker,
) -> None:
    loop = asyncio.get_running_loop()
    await mosquitto_broker.astop()
    policy = RecordingBackoff(ExponentialBackoff())  # the default schedule
    client = MQTTClient(mosquitto_broker.url, unique("late"), backoff=policy)
    connecting = asyncio.create_task(client.connect())
    try:
        calls = await policy.calls.wait_for(3, timeout=5)
        assert not connecting.done()
        assert client.state is ClientState.CONNECTING
        # Nothing listens: every failure is "refused", retried within refused_delay (1 s).
        assert [(attempt, refused) for attempt, refused, _ in calls] == [
            (0, True),
            (1, True),
            (2, True),
        ]
        assert all(delay is not None and delay <= 1.0 for _, _, delay in calls)
        await mosquitto_broker.astart()
        up = loop.time()
        await asyncio.wait_for(connecting, timeout=5)
        waited = loop.time() - up
        print(f"\n[broker down at start] connected {waited:.3f} s after the broker came up")
        assert waited < 2.0
        assert client.connected
    finally:
        await client.shutdown()
    assert client_tasks() == []


async def test_connect_fails_fast_when_told_not_to_wait(
    mosquitto_broker: MosquittoBroker,
) -> None:
    loop = asyncio.get_running_loop()
    await mosquitto_broker.astop()
    client = MQTTClient(mosquitto_broker.url, unique("impatient"), wait_for_broker=False)
    started = loop.time()
    with pytest.raises(ConnectError) as caught:
        await client.connect()
    assert loop.time() - started < 1.0
    assert caught.value.refused
    assert client.state is ClientState.CLOSED
    assert client_tasks() == []


async def test_no_retry_fails_connect_at_once_even_when_waiting_is_allowed(
    mosquitto_broker: MosquittoBroker,
) -> None:
    await mosquitto_broker.astop()
    client = MQTTClient(mosquitto_broker.url, unique("no-retry"), backoff=NoRetry())
    with pytest.raises(ConnectError):
        await asyncio.wait_for(client.connect(), timeout=2)
    assert client.state is ClientState.CLOSED
    assert client_tasks() == []


@pytest.mark.parametrize(
    "policy",
    [ExponentialBackoff(min_delay=0.05, max_delay=0.1, max_attempts=3), NoRetry()],
    ids=["gives-up-after-3-tries", "no-retry"],
)
async def test_a_policy_that_gives_up_closes_the_client(
    mosquitto_broker: MosquittoBroker, policy: BackoffPolicy
) -> None:
    recording = RecordingBackoff(policy)
    client = MQTTClient(mosquitto_broker.url, unique("give-up"), backoff=recording)
    await client.connect()
    await mosquitto_broker.astop()
    if client.state is not ClientState.CLOSED:
        # run_forever returns when the client is shut down by anything but a signal.
        await asyncio.wait_for(client.run_forever(signals=()), timeout=5)
    assert client.state is ClientState.CLOSED
    attempts = [attempt for attempt, _, _ in recording.calls.items]
    answers = [delay is not None for _, _, delay in recording.calls.items]
    if isinstance(policy, NoRetry):
        assert (attempts, answers) == ([0], [False])
    else:  # asked after the loss and after each of the 3 refused retries
        assert (attempts, answers) == ([0, 1, 2, 3], [True, True, True, False])
    with pytest.raises(ClientStateError):
        await client.publish("resilience/after-give-up", b"x", qos=1)
    assert client_tasks() == []


class KickingBroker(LoopbackServer):
    """A fake broker that accepts every CONNECT, answers the first SUBSCRIBE with a SUBACK and,
    in the same write, a DISCONNECT "server shutting down": a link lost just as the client
    finishes restoring its subscriptions."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: Inbox[None] = Inbox()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.add(None)
        buffer = b""
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                while buffer:
                    try:
                        packet, size = mqtt5.read(memoryview(buffer))
                    except IndexError:
                        break
                    buffer = buffer[size:]
                    if isinstance(packet, mqtt5.ConnectPacket):
                        writer.write(mqtt5.ConnAckPacket().write())
                    elif isinstance(packet, mqtt5.SubscribePacket):
                        granted = [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_MOST_ONCE] * len(
                            packet.topic_filters
                        )
                        shutting_down = mqtt5.DisconnectReasonCode.SERVER_SHUTTING_DOWN
                        writer.write(
                            mqtt5.SubAckPacket(packet.packet_id, granted).write()
                            + mqtt5.DisconnectPacket(reason_code=shutting_down).write()
                        )
                        await writer.drain()
                        return
        finally:
            writer.close()


async def test_a_link_lost_while_restoring_subscriptions_is_retried_with_backoff() -> None:
    async with KickingBroker() as broker:
        recording = RecordingBackoff(ExponentialBackoff(min_delay=0.05, max_delay=0.2))
        client = MQTTClient(
            f"mqtt://127.0.0.1:{broker.port}",
            unique("kicked"),
            enable_health=True,  # a health "ready" is published on a link that is up
            backoff=recording,
        )

        async def handler(payload: bytes) -> None:
            pass

        await client.subscribe("resilience/kicked", handler)
        connecting = asyncio.create_task(client.connect())
        # The supervisor survives each lost link and backs off before trying again.
        await broker.attempts.wait_for(3, timeout=5)
        assert [attempt for attempt, _, _ in recording.calls.items[:2]] == [0, 1]
        assert not client.connected
        await client.shutdown()
        with pytest.raises(ClientStateError):
            await connecting
        assert client_tasks() == []


@pytest.mark.slow
async def test_every_outage_of_a_series_is_recovered_within_two_seconds(
    mosquitto_broker: MosquittoBroker,
) -> None:
    # A restart is a network loss, not a broker kicking us out: the backoff starts afresh each
    # time, so the third outage in a row is recovered as fast as the first.
    loop = asyncio.get_running_loop()
    recording = RecordingBackoff(ExponentialBackoff())  # the default schedule
    client = MQTTClient(mosquitto_broker.url, unique("series"), backoff=recording)
    back: Inbox[float] = Inbox()

    async def on_connect() -> None:
        back.add(loop.time())

    client.on_connect(on_connect)
    await client.connect()
    try:
        await back.wait_for(1, timeout=5)
        for outage in range(1, 4):
            await mosquitto_broker.akill()
            await mosquitto_broker.astart()
            up = loop.time()
            reconnected = (await back.wait_for(outage + 1, timeout=10))[outage]
            print(f"\n[outage {outage}] reconnected {reconnected - up:.3f} s after the broker")
            assert reconnected - up < 2.0
        # Asked only after a loss or a refused attempt, never with a growing count across
        # outages: each outage starts again from attempt 0.
        first_after_loss = [a for a, refused, _ in recording.calls.items if not refused]
        assert first_after_loss == [0, 0, 0]
    finally:
        await client.shutdown()
    assert client_tasks() == []
