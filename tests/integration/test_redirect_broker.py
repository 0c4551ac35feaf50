"""The redirecting test broker (tests/support/redirect.py) says what MQTT 5 says, as ``mqtt5``
parses it on the client side: the reason code and the Server Reference."""

from __future__ import annotations

import mqtt5
import pytest

from support import RawMQTT
from support.redirect import RedirectBroker
from tars.mqtt import parse_mqtt_url
from tars.mqtt.testing import MosquittoBroker

TARGET = "mqtt://127.0.0.1:18830"


async def connect(broker: RedirectBroker, client_id: str = "c1") -> tuple[RawMQTT, mqtt5.Packet]:
    peer = await RawMQTT.open(broker.host, broker.port)
    await peer.send(mqtt5.ConnectPacket(client_id, clean_start=True))
    return peer, await peer.receive()


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("server_moved", mqtt5.ConnAckReasonCode.SERVER_MOVED),
        ("use_another_server", mqtt5.ConnAckReasonCode.USE_ANOTHER_SERVER),
    ],
)
async def test_connack_carries_the_reason_and_the_server_reference(
    reason: str, code: mqtt5.ConnAckReasonCode
) -> None:
    async with RedirectBroker.refusing(TARGET, reason=reason) as broker:  # type: ignore[arg-type]
        peer, connack = await connect(broker, "redirected-1")
        try:
            assert isinstance(connack, mqtt5.ConnAckPacket)
            assert connack.reason_code == code
            assert int(code.value) == {"server_moved": 0x9D, "use_another_server": 0x9C}[reason]
            assert connack.server_reference == TARGET
            with pytest.raises(EOFError):  # and the broker hangs up
                await peer.receive()
        finally:
            await peer.close()
        assert [c.client_id for c in broker.connects] == ["redirected-1"]


async def test_disconnect_after_connack_carries_the_server_reference() -> None:
    async with RedirectBroker.accepting_then_disconnecting("127.0.0.1:18831 127.0.0.1:18832") as b:
        peer, connack = await connect(b)
        try:
            assert isinstance(connack, mqtt5.ConnAckPacket)
            assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
            disconnect = await peer.receive()
            assert isinstance(disconnect, mqtt5.DisconnectPacket)
            assert disconnect.reason_code == mqtt5.DisconnectReasonCode.SERVER_MOVED
            assert disconnect.server_reference == "127.0.0.1:18831 127.0.0.1:18832"
        finally:
            await peer.close()


@pytest.mark.mosquitto
async def test_the_reference_leads_to_a_broker_that_accepts(
    shared_mosquitto: MosquittoBroker,
) -> None:
    """Following the reference by hand: what the client's redirection will do on its own."""
    async with RedirectBroker.refusing(shared_mosquitto.url) as broker:
        peer, connack = await connect(broker)
        await peer.close()
        assert isinstance(connack, mqtt5.ConnAckPacket)
        assert connack.server_reference is not None
        target = parse_mqtt_url(connack.server_reference)
        moved = await RawMQTT.open(target.host, target.port)
        try:
            accepted = await moved.connect("redirected-2")
            assert accepted.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        finally:
            await moved.close()


async def test_close_ends_connections_still_open() -> None:
    broker = RedirectBroker.accepting_then_disconnecting(TARGET, delay=60)
    await broker.start()
    peer, connack = await connect(broker)
    assert isinstance(connack, mqtt5.ConnAckPacket)
    await broker.close()
    with pytest.raises(EOFError):
        await peer.receive()
    await peer.close()
