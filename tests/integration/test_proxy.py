"""TcpFaultProxy in front of a real Mosquitto: forwarding, blackhole, reset, refusal, cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import mqtt5
import pytest

from support import RawMQTT, mqtt_session
from tars.mqtt.testing._mosquitto import MosquittoBroker
from tars.mqtt.testing._proxy import TcpFaultProxy
from tars.mqtt.testing.pytest_plugin import TcpProxyFactory

pytestmark = pytest.mark.mosquitto

SILENCE = 0.5  # how long "nothing comes back" is watched for


async def proxy_for(make_tcp_proxy: TcpProxyFactory, broker: MosquittoBroker) -> TcpFaultProxy:
    return await make_tcp_proxy(broker.host, broker.port)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def ping(peer: RawMQTT, timeout: float = 5.0) -> mqtt5.Packet:
    await peer.send(mqtt5.PingReqPacket())
    return await asyncio.wait_for(peer.receive(), timeout)


async def test_bytes_flow_both_ways(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await proxy_for(make_tcp_proxy, mosquitto_broker)
    assert proxy.url == f"mqtt://127.0.0.1:{proxy.port}"
    assert proxy.port != mosquitto_broker.port

    peer, connack = await mqtt_session("127.0.0.1", proxy.port, "proxy-1")
    subscribe = mqtt5.SubscribePacket(
        1, [mqtt5.TopicFilter("proxy/t", max_qos=mqtt5.QoS.AT_MOST_ONCE)]
    )
    await peer.send(subscribe)
    suback = await asyncio.wait_for(peer.receive(), 5)
    await peer.send(mqtt5.PublishPacket("proxy/t", b"x" * 100_000))
    echoed = await asyncio.wait_for(peer.receive(), 5)

    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    assert isinstance(suback, mqtt5.SubAckPacket)
    assert isinstance(echoed, mqtt5.PublishPacket)
    assert echoed.payload == b"x" * 100_000
    assert (proxy.active_connections, proxy.total_connections) == (1, 1)

    await peer.close()
    await asyncio.wait_for(until(lambda: proxy.active_connections == 0), 5)


async def test_blackhole_stalls_without_closing(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await proxy_for(make_tcp_proxy, mosquitto_broker)
    peer, _ = await mqtt_session("127.0.0.1", proxy.port, "proxy-2")
    assert isinstance(await ping(peer), mqtt5.PingRespPacket)

    proxy.blackhole()

    with pytest.raises(TimeoutError):
        await ping(peer, timeout=SILENCE)
    assert not peer.writer.is_closing()
    assert not peer.reader.at_eof()
    assert proxy.active_connections == 1
    # A new connection is accepted, but its CONNECT never reaches the broker.
    stale = await RawMQTT.open("127.0.0.1", proxy.port)
    await stale.send(mqtt5.ConnectPacket("proxy-2b", clean_start=True))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stale.receive(), SILENCE)
    assert "proxy-2b" not in mosquitto_broker.log_text()
    await stale.close()
    await peer.close()


async def test_restore_serves_new_connections_only(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await proxy_for(make_tcp_proxy, mosquitto_broker)
    old, _ = await mqtt_session("127.0.0.1", proxy.port, "proxy-3")
    proxy.blackhole()

    proxy.restore()

    new, connack = await mqtt_session("127.0.0.1", proxy.port, "proxy-3-new")
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    assert isinstance(await ping(new), mqtt5.PingRespPacket)
    with pytest.raises(TimeoutError):
        await ping(old, timeout=SILENCE)
    await old.close()
    await new.close()


async def test_drop_connections_resets_clients(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await proxy_for(make_tcp_proxy, mosquitto_broker)
    peers = [(await mqtt_session("127.0.0.1", proxy.port, f"proxy-4-{n}"))[0] for n in range(2)]

    await proxy.drop_connections()

    assert proxy.active_connections == 0
    for peer in peers:  # a reset, not a polite close
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(peer.receive(), 5)
        await peer.close()
    # The link is cut, not the proxy: the next connection goes through.
    again, connack = await mqtt_session("127.0.0.1", proxy.port, "proxy-4-again")
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    await again.close()


async def test_refuse_turns_connections_away_until_turned_off(
    mosquitto_broker: MosquittoBroker, make_tcp_proxy: TcpProxyFactory
) -> None:
    proxy = await proxy_for(make_tcp_proxy, mosquitto_broker)
    established, _ = await mqtt_session("127.0.0.1", proxy.port, "proxy-5")

    proxy.refuse()

    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    assert isinstance(await ping(established), mqtt5.PingRespPacket)

    proxy.refuse(False)

    again, connack = await mqtt_session("127.0.0.1", proxy.port, "proxy-5-again")
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    assert proxy.total_connections == 2
    await again.close()
    await established.close()


async def test_dead_target_resets_the_client(mosquitto_broker: MosquittoBroker) -> None:
    async with TcpFaultProxy(mosquitto_broker.host, mosquitto_broker.port) as proxy:
        await mosquitto_broker.astop()
        peer = await RawMQTT.open("127.0.0.1", proxy.port)

        with pytest.raises((EOFError, ConnectionError)):
            await peer.connect("proxy-6")
        await peer.close()


async def test_close_leaves_no_task_and_no_connection(mosquitto_broker: MosquittoBroker) -> None:
    proxy = TcpFaultProxy(mosquitto_broker.host, mosquitto_broker.port)
    await proxy.start()
    live, _ = await mqtt_session("127.0.0.1", proxy.port, "proxy-7")
    proxy.blackhole()
    stalled = await RawMQTT.open("127.0.0.1", proxy.port)
    proxy.refuse()
    proxy.refuse(False)  # leaves a listen task behind until the loop runs it

    await proxy.close()

    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert proxy.active_connections == 0
    for peer in (live, stalled):
        with pytest.raises((EOFError, ConnectionError)):
            await asyncio.wait_for(peer.receive(), 5)
        await peer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    await proxy.close()  # idempotent
