"""InMemoryBroker: CONNECT/CONNACK, takeover, keep-alive, and bad input from clients.

Transport-agnostic: ``open_peer`` connects over memory here and over TCP in the integration run.
"""

from __future__ import annotations

import asyncio
import logging
import time

import mqtt5
import pytest

from tars.mqtt.testing import InMemoryBroker
from unit.testing.raw_peer import PeerOpener, RawPeer

Reason = mqtt5.DisconnectReasonCode


async def test_connack_advertises_the_broker_limits(open_peer: PeerOpener) -> None:
    async with InMemoryBroker(max_packet_size=4096, receive_maximum=10) as broker:
        peer = await open_peer(broker)
        connack = await peer.connect("alice")
        assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        assert not connack.session_present
        assert connack.assigned_client_id is None
        assert connack.receive_max == 10
        assert connack.max_packet_size == 4096
        assert connack.topic_alias_max == 0
        assert broker.connected_clients == ["alice"]


async def test_empty_client_id_gets_an_assigned_one(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    first = await (await open_peer(broker)).connect("")
    second = await (await open_peer(broker)).connect("")
    assert first.assigned_client_id
    assert second.assigned_client_id
    assert first.assigned_client_id != second.assigned_client_id
    assert sorted(broker.connected_clients) == sorted(
        [first.assigned_client_id, second.assigned_client_id]
    )


async def test_auth_callback_sees_credentials_and_can_refuse(open_peer: PeerOpener) -> None:
    seen: list[tuple[str, str | None, bytes | None]] = []

    def auth(client_id: str, username: str | None, password: bytes | None) -> bool:
        seen.append((client_id, username, password))
        return password == b"secret"

    async with InMemoryBroker(auth=auth) as broker:
        good = await (await open_peer(broker)).connect("ok", username="u", password=b"secret")
        assert good.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        bad_peer = await open_peer(broker)
        bad = await bad_peer.connect("nope", username="u", password=b"wrong")
        assert bad.reason_code == mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
        await bad_peer.expect_closed()
        assert seen == [("ok", "u", b"secret"), ("nope", "u", b"wrong")]
        assert broker.connected_clients == ["ok"]


async def test_enhanced_authentication_is_refused(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    peer = await open_peer(broker)
    connack = await peer.connect("x", authentication_method="SCRAM-SHA-1")
    assert connack.reason_code == mqtt5.ConnAckReasonCode.BAD_AUTHENTICATION_METHOD
    await peer.expect_closed()


async def test_second_connection_with_same_id_takes_over(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    old = await open_peer(broker)
    await old.connect("dup", session_expiry_interval=60)
    await old.subscribe("t/#", qos=1)
    new = await open_peer(broker)
    connack = await new.connect("dup", clean_start=False)
    assert connack.session_present
    disconnect = await old.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == Reason.SESSION_TAKEN_OVER
    await old.expect_closed()
    assert broker.connected_clients == ["dup"]
    assert broker.subscriptions("dup") == ["t/#"]
    await new.ping()


async def test_keep_alive_timeout_after_one_and_a_half_intervals(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    watcher = await open_peer(broker)
    await watcher.connect("watcher")
    await watcher.subscribe("will/#")
    silent = await open_peer(broker)
    will = mqtt5.Will("will/silent", payload=b"gone")
    started = time.monotonic()
    await silent.connect("silent", keep_alive=1, will=will)
    disconnect = await silent.expect(mqtt5.DisconnectPacket, timeout=4)
    elapsed = time.monotonic() - started
    assert disconnect.reason_code == Reason.KEEP_ALIVE_TIMEOUT
    assert 1.4 <= elapsed < 3
    await silent.expect_closed()
    assert (await watcher.receive_publish()).payload == b"gone"


async def test_pings_keep_a_connection_alive(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    peer = await open_peer(broker)
    await peer.connect("pinger", keep_alive=1)
    deadline = time.monotonic() + 2.0  # past the 1.5 s a silent client would get
    while time.monotonic() < deadline:
        await asyncio.sleep(0.4)  # paces the client; nothing is awaited here
        await peer.ping()
    assert broker.connected_clients == ["pinger"]


async def test_first_packet_must_be_connect(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    peer = await open_peer(broker)
    peer.send(mqtt5.PingReqPacket())
    connack = await peer.expect(mqtt5.ConnAckPacket)
    assert connack.reason_code == mqtt5.ConnAckReasonCode.PROTOCOL_ERROR
    await peer.expect_closed()


async def test_second_connect_is_a_protocol_error(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    peer = await open_peer(broker)
    await peer.connect("twice")
    peer.send(mqtt5.ConnectPacket("twice"))
    disconnect = await peer.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == Reason.PROTOCOL_ERROR
    await peer.expect_closed()
    assert broker.connected_clients == []


async def test_mqtt_31_client_gets_unsupported_version(
    broker: InMemoryBroker, open_peer: PeerOpener, caplog: pytest.LogCaptureFixture
) -> None:
    peer = await open_peer(broker)
    # CONNECT, protocol "MQIsdp" level 3 (MQTT 3.1), clean session, keep-alive 60, id "old".
    peer.send_raw(bytes([0x10, 17, 0, 6]) + b"MQIsdp" + bytes([3, 2, 0, 60, 0, 3]) + b"old")
    await peer.expect_closed()
    assert bytes(peer.raw) == b"\x20\x02\x00\x01"  # 3.x CONNACK "unacceptable version"
    # The broker's side says why, and what to do, where a developer looks (default log level).
    [refusal] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "MQTT 3.x client refused" in refusal.getMessage()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\x00", id="reserved-packet-type"),
        # Refused from the first byte, without waiting for the body the length announces.
        pytest.param(b"\x00\xff\xff\x7f", id="reserved-packet-type-announcing-2mb"),
        pytest.param(b"\x60\xff\x7f", id="pubrel-with-bad-flags-announcing-16kb"),
        pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining-length-over-4-bytes"),
        pytest.param(b"\x30\x03\x00\x01t", id="fields-overrun-remaining-length"),
        pytest.param(b"\xc0\x02\x00\x00", id="pingreq-with-body"),
    ],
)
async def test_malformed_bytes_get_disconnect_0x81_and_broker_lives_on(
    broker: InMemoryBroker, open_peer: PeerOpener, garbage: bytes
) -> None:
    peer = await open_peer(broker)
    await peer.connect("bad", will=mqtt5.Will("will/bad", payload=b"x"))
    peer.send_raw(garbage)
    disconnect = await peer.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == Reason.MALFORMED_PACKET
    await peer.expect_closed()
    other = await open_peer(broker)
    await other.connect("good")
    await other.ping()
    assert broker.connected_clients == ["good"]


@pytest.mark.parametrize(
    ("client_id", "options"),
    [
        pytest.param("id\x01", {}, id="client-id"),
        pytest.param("c", {"username": "user\x9f"}, id="user-name"),
        pytest.param("c", {"user_properties": [("k", "v\ufdd0")]}, id="user-property"),
        pytest.param("c", {"will": mqtt5.Will("w/\x1f", payload=b"")}, id="will-topic"),
        pytest.param(
            "c", {"will": mqtt5.Will("w", payload=b"", content_type="\x7f")}, id="will-property"
        ),
    ],
)
async def test_a_malformed_string_in_connect_closes_without_connack_as_in_mosquitto(
    broker: InMemoryBroker, open_peer: PeerOpener, client_id: str, options: dict[str, object]
) -> None:
    peer = await open_peer(broker)
    options.setdefault("clean_start", True)
    peer.send(mqtt5.ConnectPacket(client_id, **options))  # type: ignore[arg-type]
    await peer.expect_closed()
    assert peer.pending() == []  # no CONNACK: Mosquitto 2.0 closes on the spot
    assert broker.connected_clients == []


async def test_malformed_connect_gets_connack_0x81(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    peer = await open_peer(broker)
    peer.send_raw(b"\x10\x03\x00\x04M")  # a CONNECT cut inside its protocol name
    connack = await peer.expect(mqtt5.ConnAckPacket)
    assert connack.reason_code == mqtt5.ConnAckReasonCode.MALFORMED_PACKET
    await peer.expect_closed()


async def test_http_request_instead_of_connect_is_refused_at_once(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    """'G' (0x47) reads as a PUBACK with bad flags: refused from its first byte."""
    peer = await open_peer(broker)
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: broker\r\n")
    connack = await peer.expect(mqtt5.ConnAckPacket)
    assert connack.reason_code == mqtt5.ConnAckReasonCode.MALFORMED_PACKET
    await peer.expect_closed()


async def test_packet_over_broker_maximum_gets_0x95(open_peer: PeerOpener) -> None:
    async with InMemoryBroker(max_packet_size=64) as broker:
        peer = await open_peer(broker)
        await peer.connect("big")
        # Only the fixed header is sent: the limit is enforced before buffering the packet.
        peer.send_raw(b"\x30\x80\x08")  # PUBLISH of 1024 bytes
        disconnect = await peer.expect(mqtt5.DisconnectPacket)
        assert disconnect.reason_code == Reason.PACKET_TOO_LARGE
        await peer.expect_closed()


async def test_topic_alias_is_refused(broker: InMemoryBroker, open_peer: PeerOpener) -> None:
    peer = await open_peer(broker)
    await peer.connect("alias")
    peer.send(mqtt5.PublishPacket("t", b"x", topic_alias=1))
    disconnect = await peer.expect(mqtt5.DisconnectPacket)
    assert disconnect.reason_code == Reason.TOPIC_ALIAS_INVALID


async def test_clean_disconnect_closes_and_forgets_the_client(
    broker: InMemoryBroker, open_peer: PeerOpener
) -> None:
    peer = await open_peer(broker)
    await peer.connect("bye")
    await peer.disconnect()
    assert broker.connected_clients == []
    assert broker.sessions() == {}


async def test_raw_peer_over_memory_sees_broker_names(broker: InMemoryBroker) -> None:
    peer = await RawPeer.over_memory(broker)
    assert peer.transport is not None
    assert peer.transport.get_extra_info("peername") == ("test", 0)
    await peer.connect("named")
    await peer.disconnect()
