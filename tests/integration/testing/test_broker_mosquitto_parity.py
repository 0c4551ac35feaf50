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


def _with_bad_property(kind: str, text: str) -> mqtt5.Packet:
    """A packet whose only fault is ``text`` in one of its UTF-8 string properties."""
    q1 = mqtt5.QoS.AT_LEAST_ONCE
    pair = [("k", text)]
    return {
        "publish content_type": lambda: mqtt5.PublishPacket(
            "t", b"x", qos=q1, packet_id=1, content_type=text
        ),
        "publish response_topic": lambda: mqtt5.PublishPacket(
            "t", b"x", qos=q1, packet_id=1, response_topic=text
        ),
        "publish user property name": lambda: mqtt5.PublishPacket(
            "t", b"x", qos=q1, packet_id=1, user_properties=[(text, "v")]
        ),
        "publish user property value": lambda: mqtt5.PublishPacket(
            "t", b"x", qos=q1, packet_id=1, user_properties=pair
        ),
        "subscribe user property": lambda: mqtt5.SubscribePacket(
            1, [mqtt5.TopicFilter("t")], user_properties=pair
        ),
        "unsubscribe user property": lambda: mqtt5.UnsubscribePacket(
            1, ["t"], user_properties=pair
        ),
    }[kind]()


BAD_TEXTS = ["a\x00b", "a\x01", "a\x7f", "a\x85", "a\ufdd0", "a\uffff", "a\U0010fffe"]


@pytest.mark.parametrize("text", BAD_TEXTS, ids=ascii)
@pytest.mark.parametrize(
    "kind",
    [
        "publish content_type",
        "publish response_topic",
        "publish user property name",
        "publish user property value",
        "subscribe user property",
        "unsubscribe user property",
    ],
)
async def test_a_bad_string_property_closes_the_link_without_a_word_like_mosquitto(
    shared_mosquitto: MosquittoBroker, kind: str, text: str
) -> None:
    # Not only topics: Mosquitto 2.0 reads every UTF-8 string of a packet with the same rule
    # and closes the connection, without even a DISCONNECT, on a string property that breaks
    # it. So the client refuses such properties at the call, and the kit's broker closes alike.
    packet = _with_bad_property(kind, text)
    mosquitto_port = int(shared_mosquitto.url.rsplit(":", 1)[1])
    async with InMemoryBroker(name="parity") as broker:
        ours = await answer_to(await broker.serve_tcp(), packet)
    theirs = await answer_to(mosquitto_port, packet)
    assert theirs == "closed"
    assert ours == theirs


async def answer_to_connect(port: int, packet: mqtt5.ConnectPacket) -> str:
    """What the broker answers a CONNECT with: "ConnAckPacket <reason>", or "closed"."""
    peer = await RawMQTT.open("127.0.0.1", port)
    try:
        await peer.send(packet)
        try:
            answer = await peer.receive()
        except EOFError:
            return "closed"
        return f"{type(answer).__name__} {int(getattr(answer, 'reason_code', 0)):#x}"
    finally:
        await peer.close()


@pytest.mark.parametrize("text", ["a\x01", "a\x9f", "a\uffff"], ids=ascii)
@pytest.mark.parametrize(
    "part",
    ["client id", "user name", "user property", "will topic", "will property", "good"],
)
async def test_a_bad_string_in_connect_closes_without_a_connack_like_mosquitto(
    shared_mosquitto: MosquittoBroker, part: str, text: str
) -> None:
    will = {
        "will topic": mqtt5.Will(f"w/{text}", payload=b""),
        "will property": mqtt5.Will("w", payload=b"", content_type=text),
    }.get(part)
    packet = mqtt5.ConnectPacket(
        f"parity-{text}" if part == "client id" else "parity-connect",
        clean_start=True,
        username=text if part == "user name" else None,
        user_properties=[("k", text)] if part == "user property" else None,
        will=will,
    )
    mosquitto_port = int(shared_mosquitto.url.rsplit(":", 1)[1])
    async with InMemoryBroker(name="parity") as broker:
        ours = await answer_to_connect(await broker.serve_tcp(), packet)
    theirs = await answer_to_connect(mosquitto_port, packet)
    assert theirs == ("ConnAckPacket 0x0" if part == "good" else "closed")
    assert ours == theirs
