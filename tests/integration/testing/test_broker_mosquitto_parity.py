"""Where MQTT 5 leaves the broker a choice, the development broker answers as Mosquitto 2.0.

Each case sends the same raw packets to a real Mosquitto and to the InMemoryBroker over TCP and
compares the answers, so the testing docs' "as Mosquitto does" is checked, not claimed.
"""

from __future__ import annotations

import mqtt5
import pytest

from support import RawMQTT
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker

pytestmark = pytest.mark.mosquitto


async def unmatched_publish_codes(port: int) -> tuple[int, int]:
    """(PUBACK reason of a QoS 1 publish, PUBREC reason of a QoS 2 one) nobody subscribed to."""
    peer = await RawMQTT.open("127.0.0.1", port)
    try:
        await peer.send(mqtt5.ConnectPacket("parity-probe"))
        assert isinstance(await peer.receive(), mqtt5.ConnAckPacket)
        await peer.send(
            mqtt5.PublishPacket("nobody/listens", b"x", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1)
        )
        ack = await peer.receive()
        await peer.send(
            mqtt5.PublishPacket("nobody/listens", b"x", qos=mqtt5.QoS.EXACTLY_ONCE, packet_id=2)
        )
        rec = await peer.receive()
        assert isinstance(ack, mqtt5.PubAckPacket)
        assert isinstance(rec, mqtt5.PubRecPacket)
        return int(ack.reason_code), int(rec.reason_code)
    finally:
        await peer.close()


async def test_unmatched_publishes_are_answered_like_mosquitto(
    shared_mosquitto: MosquittoBroker,
) -> None:
    mosquitto_port = int(shared_mosquitto.url.rsplit(":", 1)[1])
    async with InMemoryBroker(name="parity") as broker:
        ours = await unmatched_publish_codes(await broker.serve_tcp())
    theirs = await unmatched_publish_codes(mosquitto_port)
    assert theirs == (0x10, 0x00)  # Mosquitto 2.0: "no matching subscribers" on PUBACK only
    assert ours == theirs


async def answer_to(port: int, packet: mqtt5.Packet) -> str:
    """What the broker answers ``packet`` with: a packet's name and reason, or "closed"."""
    peer = await RawMQTT.open("127.0.0.1", port)
    try:
        await peer.send(mqtt5.ConnectPacket("parity-utf8"))
        assert isinstance(await peer.receive(), mqtt5.ConnAckPacket)
        await peer.send(packet)
        try:
            answer = await peer.receive()
        except EOFError:
            return "closed"
        return f"{type(answer).__name__} {int(getattr(answer, 'reason_code', 0)):#x}"
    finally:
        await peer.close()


@pytest.mark.parametrize("text", ["a\x00b", "a/\x01", "a/\x7f", "a/\x85", "a/\ufdd0", "a/\uffff"])
@pytest.mark.parametrize("kind", ["publish", "subscribe", "unsubscribe"])
async def test_control_and_non_characters_end_the_link_like_mosquitto(
    shared_mosquitto: MosquittoBroker, kind: str, text: str
) -> None:
    # MQTT 5 section 1.5.4: Mosquitto calls such a packet malformed; so must the kit's broker,
    # or a test suite on it would pass a topic that takes production offline.
    packet: mqtt5.Packet = {
        "publish": lambda: mqtt5.PublishPacket(
            text, b"x", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1
        ),
        "subscribe": lambda: mqtt5.SubscribePacket(1, [mqtt5.TopicFilter(text + "/#")]),
        "unsubscribe": lambda: mqtt5.UnsubscribePacket(1, [text]),
    }[kind]()
    mosquitto_port = int(shared_mosquitto.url.rsplit(":", 1)[1])
    async with InMemoryBroker(name="parity") as broker:
        ours = await answer_to(await broker.serve_tcp(), packet)
    theirs = await answer_to(mosquitto_port, packet)
    assert theirs == "DisconnectPacket 0x81"
    assert ours == theirs
