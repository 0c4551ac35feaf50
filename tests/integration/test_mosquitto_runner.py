"""MosquittoBroker: a real broker process, started, stopped, killed and restarted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import mqtt5
import pytest

from support import RawMQTT, mqtt_session
from tars.mqtt import MQTTClient
from tars.mqtt.testing._mosquitto import MosquittoBroker

pytestmark = pytest.mark.mosquitto

SAVED = "Saving in-memory database"


async def run_client(*args: str, stdin: bytes | None = None) -> str:
    """Run mosquitto_pub or mosquitto_sub to completion; return its output."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(stdin), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output
    return output.decode()


async def publish(broker: MosquittoBroker, topic: str, message: str, *options: str) -> None:
    """Publish at QoS 1 (mosquitto_pub returns once the PUBACK is in)."""
    port = str(broker.port)
    await run_client(
        "mosquitto_pub",
        "-h",
        broker.host,
        "-p",
        port,
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        message,
        *options,
    )


async def retained(broker: MosquittoBroker, topic: str) -> str:
    """The retained message of a topic (waits up to 5 s for it)."""
    port = str(broker.port)
    output = await run_client(
        "mosquitto_sub", "-h", broker.host, "-p", port, "-t", topic, "-C", "1", "-W", "5"
    )
    return output.strip()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def assert_accepts_mqtt(broker: MosquittoBroker, client_id: str) -> None:
    peer, connack = await mqtt_session(broker.host, broker.port, client_id)
    await peer.close()
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS


def test_available_finds_the_installed_binary_only() -> None:
    assert MosquittoBroker.available()
    assert not MosquittoBroker.available("/nonexistent/mosquitto")


async def test_started_broker_answers_an_mqtt5_connect(mosquitto_broker: MosquittoBroker) -> None:
    assert mosquitto_broker.is_running
    assert mosquitto_broker.pid is not None
    assert mosquitto_broker.url == f"mqtt://127.0.0.1:{mosquitto_broker.port}"

    peer, connack = await mqtt_session(mosquitto_broker.host, mosquitto_broker.port, "runner-1")
    await peer.close()

    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    # max_inflight_messages 0: the broker does not cap our QoS 1/2 window at its default of 20.
    assert connack.receive_max == 65535


async def test_shared_broker_runs_without_persistence(shared_mosquitto: MosquittoBroker) -> None:
    await assert_accepts_mqtt(shared_mosquitto, "runner-shared")
    assert "persistence true" not in shared_mosquitto.config_path.read_text().splitlines()


def test_config_listens_on_its_own_port_without_nagle(mosquitto_broker: MosquittoBroker) -> None:
    lines = mosquitto_broker.config_path.read_text().splitlines()

    assert mosquitto_broker.port != 1883
    listeners = [
        line for line in lines if line.split(" ")[0] in {"listener", "port", "bind_address"}
    ]
    assert listeners == [f"listener {mosquitto_broker.port} 127.0.0.1"]
    assert "set_tcp_nodelay true" in lines
    assert "persistence true" in lines


def test_config_without_persistence_saves_nothing() -> None:
    broker = MosquittoBroker(persistence=False, extra_config="max_keepalive 30")
    try:
        lines = broker.config_text().splitlines()
    finally:
        broker.close()

    assert not [line for line in lines if line.startswith(("persistence", "autosave"))]
    assert lines[-1] == "max_keepalive 30"


async def test_a_websocket_listener_is_a_second_listener_that_survives_restarts() -> None:
    broker = MosquittoBroker(persistence=False, websockets=True)
    try:
        lines = broker.config_text().splitlines()
        assert broker.ws_port is not None
        assert broker.ws_port != broker.port
        at = lines.index(f"listener {broker.ws_port} 127.0.0.1")
        assert lines[at + 1] == "protocol websockets"
        assert broker.ws_url == f"ws://127.0.0.1:{broker.ws_port}/mqtt"
        await broker.astart()
        await broker.arestart(kill=True)
        async with MQTTClient(broker.ws_url, "runner-ws", wait_for_broker=False) as client:
            assert client.connected
    finally:
        broker.close()


async def test_mosquitto_clients_round_trip() -> None:
    # log_type subscribe: the broker logs each subscription, so we publish only once it exists.
    broker = MosquittoBroker(persistence=False, extra_config="log_type subscribe")
    try:
        await broker.astart()
        receive = asyncio.create_task(
            run_client(
                "mosquitto_sub",
                "-p",
                str(broker.port),
                "-i",
                "runner-sub",
                "-t",
                "runner/rt",
                "-q",
                "1",
                "-C",
                "1",
            ),
            name="test-mosquitto-sub",
        )
        try:
            await wait_until(lambda: "runner-sub 1 runner/rt" in broker.log_text())
            await publish(broker, "runner/rt", "hello through mosquitto")
            output = await asyncio.wait_for(receive, 10)
        finally:
            receive.cancel()
            await asyncio.wait([receive])
    finally:
        broker.close()

    assert output == "hello through mosquitto\n"


async def test_stop_then_start_on_the_same_port(mosquitto_broker: MosquittoBroker) -> None:
    port = mosquitto_broker.port

    await mosquitto_broker.astop()

    assert not mosquitto_broker.is_running
    assert mosquitto_broker.pid is None
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(mosquitto_broker.host, port)

    await mosquitto_broker.astart()

    assert mosquitto_broker.port == port
    await assert_accepts_mqtt(mosquitto_broker, "runner-2")


async def test_kill_drops_clients_and_restart_is_immediate(
    mosquitto_broker: MosquittoBroker,
) -> None:
    peer, _ = await mqtt_session(mosquitto_broker.host, mosquitto_broker.port, "runner-3")
    old_pid = mosquitto_broker.pid

    await mosquitto_broker.akill()

    assert not mosquitto_broker.is_running
    with pytest.raises((EOFError, ConnectionError)):
        await asyncio.wait_for(peer.receive(), 5)
    await peer.close()

    await mosquitto_broker.arestart(kill=True)

    assert mosquitto_broker.pid not in (None, old_pid)
    await assert_accepts_mqtt(mosquitto_broker, "runner-3")


async def test_graceful_restart_saves_then_comes_back(mosquitto_broker: MosquittoBroker) -> None:
    peer, _ = await mqtt_session(mosquitto_broker.host, mosquitto_broker.port, "runner-4")

    await mosquitto_broker.arestart()

    with pytest.raises((EOFError, ConnectionError)):
        await asyncio.wait_for(peer.receive(), 5)
    await peer.close()
    assert SAVED in mosquitto_broker.log_text()
    await assert_accepts_mqtt(mosquitto_broker, "runner-4")


async def test_retained_message_saved_at_stop_survives_a_kill(
    mosquitto_broker: MosquittoBroker,
) -> None:
    await publish(mosquitto_broker, "runner/kept", "saved at stop", "-r")

    await mosquitto_broker.arestart()  # graceful: saved on the way down
    await mosquitto_broker.arestart(kill=True)  # kill -9 keeps what was saved

    assert await retained(mosquitto_broker, "runner/kept") == "saved at stop"


async def test_autosave_keeps_a_retained_message_through_kill(
    mosquitto_broker: MosquittoBroker,
) -> None:
    database = mosquitto_broker.persistence_path
    before = database.stat().st_ino if database.exists() else None

    await publish(mosquitto_broker, "runner/autosaved", "saved on change", "-r")
    # autosave_on_changes: the change itself triggers a save (a new file renamed over the old
    # one), no graceful stop needed. Wait for the rename: the log line comes before the write.
    await wait_until(lambda: database.exists() and database.stat().st_ino != before)
    await mosquitto_broker.arestart(kill=True)

    assert await retained(mosquitto_broker, "runner/autosaved") == "saved on change"


async def test_away_subscriber_gets_2000_queued_qos1_messages() -> None:
    broker = MosquittoBroker(persistence=False)
    try:
        await broker.astart()
        peer = await RawMQTT.open(broker.host, broker.port)
        await peer.connect("runner-away", session_expiry_interval=3600)
        await peer.send(
            mqtt5.SubscribePacket(1, [mqtt5.TopicFilter("away/#", max_qos=mqtt5.QoS.AT_LEAST_ONCE)])
        )
        assert isinstance(await asyncio.wait_for(peer.receive(), 5), mqtt5.SubAckPacket)
        await peer.send(mqtt5.DisconnectPacket())
        await peer.close()

        lines = "".join(f"{n}\n" for n in range(2000)).encode()
        port = str(broker.port)
        await run_client("mosquitto_pub", "-p", port, "-q", "1", "-t", "away/x", "-l", stdin=lines)

        peer = await RawMQTT.open(broker.host, broker.port)
        connack = await peer.connect("runner-away", clean_start=False, session_expiry_interval=3600)
        assert connack.session_present
        payloads: list[bytes] = []
        while len(payloads) < 2000:
            packet = await asyncio.wait_for(peer.receive(), 10)
            assert isinstance(packet, mqtt5.PublishPacket)
            assert packet.packet_id is not None
            payloads.append(packet.payload)
            await peer.send(mqtt5.PubAckPacket(packet.packet_id))
        await peer.close()
    finally:
        broker.close()

    assert payloads == [str(n).encode() for n in range(2000)]


async def test_async_restart_leaves_the_event_loop_running(
    mosquitto_broker: MosquittoBroker,
) -> None:
    restart = asyncio.create_task(mosquitto_broker.arestart(kill=True), name="test-restart")

    await asyncio.sleep(0)  # one loop turn: the restart task has run its first step
    running_meanwhile = not restart.done()
    await restart

    assert running_meanwhile
    await assert_accepts_mqtt(mosquitto_broker, "runner-5")


def test_start_failure_raises_with_the_log_tail() -> None:
    broker = MosquittoBroker(extra_config="no_such_option 1")
    try:
        with pytest.raises(RuntimeError, match="no_such_option"):
            broker.start(timeout=5)
        assert not broker.is_running
    finally:
        broker.close()


def test_busy_port_fails_after_retrying(mosquitto_broker: MosquittoBroker) -> None:
    other = MosquittoBroker(port=mosquitto_broker.port)
    try:
        with pytest.raises(RuntimeError, match="Address already in use"):
            other.start(timeout=0.5)
    finally:
        other.close()
    assert mosquitto_broker.is_running


def test_context_manager_removes_its_own_workdir_only(tmp_path: Path) -> None:
    with MosquittoBroker() as temporary:
        workdir = temporary.workdir
        assert temporary.config_path.exists()
    with MosquittoBroker(workdir=tmp_path / "broker") as kept:
        assert kept.is_running

    assert not temporary.is_running
    assert not workdir.exists()
    assert not kept.is_running
    assert "mosquitto version" in (tmp_path / "broker" / "mosquitto.log").read_text()
