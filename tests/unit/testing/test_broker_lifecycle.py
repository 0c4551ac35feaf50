"""InMemoryBroker's own lifecycle: start, close, what it leaves behind, and hostile input."""

from __future__ import annotations

import asyncio
from typing import Any

import mqtt5
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.codec import codec_utf8_reports
from tars.mqtt import ClientStateError
from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import RawPeer, connected


async def memory_peer(broker: InMemoryBroker) -> RawPeer:
    return await RawPeer.over_memory(broker)


async def test_close_leaves_no_task_and_disconnects_everyone() -> None:
    before = asyncio.all_tasks()
    broker = InMemoryBroker()
    await broker.start()
    port = await broker.serve_tcp()
    watcher = await connected(memory_peer, broker, "watcher", session_expiry_interval=60)
    await watcher.subscribe("t/#", qos=1)
    over_tcp = await RawPeer.over_tcp(port)
    await over_tcp.connect("tcp-client")
    # Leave every kind of timer armed: delayed delivery, will delay, session expiry, stall.
    broker.delay_delivery(30)
    await over_tcp.publish("t/x", b"delayed", qos=1)
    dying = await connected(
        memory_peer,
        broker,
        "dying",
        session_expiry_interval=60,
        will=mqtt5.Will("t/will", payload=b"w", will_delay_interval=30),
    )
    dying.abort()
    await dying.expect_closed()
    stalled = await connected(memory_peer, broker, "stalled", keep_alive=30)
    broker.stall("stalled")
    await broker.close()
    for peer in (watcher, over_tcp):
        disconnect = await peer.expect(mqtt5.DisconnectPacket)
        assert disconnect.reason_code == mqtt5.DisconnectReasonCode.SERVER_SHUTTING_DOWN
        await peer.expect_closed()
    await stalled.expect_closed()
    assert asyncio.all_tasks() == before
    await broker.close()  # idempotent


async def test_a_broker_runs_once() -> None:
    broker = InMemoryBroker()
    with pytest.raises(ConnectionRefusedError):
        await broker.connector(RawPeer)
    with pytest.raises(ClientStateError):
        await broker.serve_tcp()
    with pytest.raises(ClientStateError):
        await broker.restart()
    assert broker.sessions() == {}
    assert broker.connected_clients == []
    assert broker.subscriptions("x") == []
    assert broker.retained("x") is None
    async with broker:
        with pytest.raises(ClientStateError):
            await broker.start()
    with pytest.raises(ConnectionRefusedError):
        await broker.connector(RawPeer)
    with pytest.raises(ClientStateError):
        await broker.start()


async def test_close_before_start_is_allowed() -> None:
    broker = InMemoryBroker()
    await broker.close()
    with pytest.raises(ClientStateError):
        await broker.start()


async def test_urls() -> None:
    async with InMemoryBroker(name="unit") as broker:
        assert broker.url == "mqtt://unit"
        assert broker.tcp_url is None
        port = await broker.serve_tcp()
        assert broker.tcp_url == f"mqtt://127.0.0.1:{port}"
        assert "unit" in repr(broker)


@pytest.mark.parametrize(
    "options",
    [
        {"receive_maximum": 0},
        {"receive_maximum": 65536},
        {"max_packet_size": 1},
        {"max_queued_messages": -1},
    ],
)
def test_limits_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        InMemoryBroker(**options)


async def test_memory_connection_has_names(broker: InMemoryBroker) -> None:
    peer = await memory_peer(broker)
    assert peer.transport is not None
    assert peer.transport.get_extra_info("peername") == ("test", 0)
    assert peer.transport.get_extra_info("sockname")[0] == "memory-client"
    await peer.connect("named")
    await peer.disconnect()


async def test_faults_may_be_armed_before_start(broker: InMemoryBroker) -> None:
    fresh = InMemoryBroker()
    fresh.refuse_subscriptions("x")
    async with fresh:
        peer = await connected(memory_peer, fresh, "early")
        suback = await peer.subscribe("x")
        assert suback.reason_codes == [mqtt5.SubAckReasonCode.NOT_AUTHORIZED]


# -- hostile input ---------------------------------------------------------------------------

_VALID = [
    mqtt5.PublishPacket("a/b", b"payload", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1).write(),
    mqtt5.SubscribePacket(1, [mqtt5.TopicFilter("a/#")]).write(),
    mqtt5.UnsubscribePacket(2, ["a/#"]).write(),
    mqtt5.PubRelPacket(1).write(),
    mqtt5.DisconnectPacket().write(),
]


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid packet with a few bytes changed (reaches deeper code)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


async def test_invalid_utf8_topic_is_malformed(broker: InMemoryBroker) -> None:
    peer = await connected(memory_peer, broker, "bad-utf8")
    with codec_utf8_reports() as reported:
        peer.send_raw(b"\x30\x05\x00\x02\xff\xfe\x00")  # PUBLISH to a topic of 2 bad bytes
        disconnect = await peer.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == mqtt5.DisconnectReasonCode.MALFORMED_PACKET
    assert all(isinstance(exc, UnicodeDecodeError) for exc in reported)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=hostile_bytes())
async def test_garbage_never_breaks_the_broker(garbage: bytes) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        with codec_utf8_reports() as reported:
            async with InMemoryBroker() as broker:
                victim = await connected(memory_peer, broker, "victim")
                await victim.subscribe("#", qos=1)
                victim.send_raw(garbage)
                other = await connected(memory_peer, broker, "other")
                await other.publish("a/b", b"still alive", qos=1)
                await other.ping()
                assert "other" in broker.connected_clients
    finally:
        loop.set_exception_handler(None)
    assert errors == []
    assert all(isinstance(exc, UnicodeDecodeError) for exc in reported)
