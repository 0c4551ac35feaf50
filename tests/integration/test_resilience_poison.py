"""Issue 19 §1, the poison-message breaker, against the real Mosquitto.

A packet Mosquitto answers by ending the link (here a control character in a topic, which the
call checks normally refuse: they are bypassed in these tests only, as a packet no check knows
about would be) is resent or restored on every new link, which it ends too. The breaker gives
it up after a bounded number of links (a typed error, counted, logged, out of the resend set and
the durable outbox); the link then comes back for everything else.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import mqtt5
import pytest

from support import LoopbackServer, RawMQTT
from support.mosquitto_cli import MosquittoSub, connected_client, unique, wait_until
from tars.mqtt import (
    Message,
    MQTTClient,
    MQTTClientConfig,
    PoisonMessageError,
    PublishError,
    SubscribeError,
)
from tars.mqtt._core.durable import DurableOutbox
from tars.mqtt._core.poison import POISON_LINKS
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

FAST = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2}


@pytest.fixture
def no_topic_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call checks out of the way, so the poison reaches the broker (this test only)."""
    monkeypatch.setattr("tars.mqtt._topics.forbidden_character", lambda text: None)


@pytest.mark.usefixtures("no_topic_rules")
async def test_a_poisoned_publish_fails_within_bounded_links_and_the_rest_flows(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    good = unique("poison/good")
    async with (
        connected_client(shared_mosquitto, "poison-pub", **FAST) as client,
        MosquittoSub(shared_mosquitto, good, qos=1, count=2) as sub,
    ):
        before = client.stats
        await client.publish(good, b"before", qos=1)
        with pytest.raises(PoisonMessageError) as info:
            async with asyncio.timeout(20):  # bounded: POISON_LINKS links, not for ever
                await client.publish("poison/\x01b", b"x", qos=1)
        error = info.value
        assert isinstance(error, PublishError)
        assert error.reason_code == 0x81  # Mosquitto's DISCONNECT: Malformed Packet
        assert error.broker_reason == 0x81
        assert "0x81" in str(error)
        assert error.links == POISON_LINKS
        await client.publish(good, b"after", qos=1)  # the link is back, for everything else
        captured = await sub.wait_for(2)
        assert [c.payload for c in captured] == [b"before", b"after"]
        stats = client.stats
        assert stats.poisoned == before.poisoned + 1
        assert stats.connects <= before.connects + POISON_LINKS  # one link per strike, no more
        assert stats.inflight == 0  # not in the resend set any more
    lines = [r for r in caplog.records if "poison-message breaker" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.ERROR


@pytest.mark.usefixtures("no_topic_rules")
async def test_a_poisoned_wait_false_publish_is_given_up_too(
    shared_mosquitto: MosquittoBroker,
) -> None:
    good = unique("poison/nowait")
    async with (
        connected_client(shared_mosquitto, "poison-nowait", **FAST) as client,
        MosquittoSub(shared_mosquitto, good, qos=1, count=1) as sub,
    ):
        await client.publish("poison/\x7f", b"x", qos=2, wait=False)
        await wait_until(lambda: client.stats.poisoned == 1, timeout=20)
        await client.publish(good, b"after", qos=1)
        [captured] = await sub.wait_for(1)
        assert captured.payload == b"after"
        await client.flush(timeout=5)  # nothing left owed


@pytest.mark.usefixtures("no_topic_rules")
async def test_a_poisoned_subscription_is_given_up_and_later_ones_work(
    shared_mosquitto: MosquittoBroker,
) -> None:
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def on_good(message: Message) -> None:
        got.append(message.payload)
        arrived.set()

    poison = "x/\x02/#"
    good = unique("poison/sub")
    async with connected_client(shared_mosquitto, "poison-sub", **FAST) as client:
        async with asyncio.timeout(20):
            sub = await client.subscribe(poison, on_good, qos=1)  # the link drops under it
            assert sub.error is None  # a link lost under a SUBSCRIBE is no verdict yet
            await wait_until(lambda: sub.error is not None, timeout=20)
            await wait_until(lambda: client.connected, timeout=10)  # back, for everything else
            await client.subscribe(good, on_good, qos=1)
            await client.publish(good, b"hello", qos=1)
            await arrived.wait()
        assert got == [b"hello"]
        # The subscription says why it ended: a typed error with the broker's reason.
        error = sub.error
        assert isinstance(error, PoisonMessageError)
        assert isinstance(error, SubscribeError)  # what subscribe()'s callers already catch
        assert error.subscription
        assert error.topic == poison
        assert error.reason_code == 0x81  # Mosquitto's DISCONNECT: Malformed Packet
        assert error.broker_reason == 0x81
        assert "0x81 Malformed Packet" in str(error)
        assert error.links == POISON_LINKS
        assert client.stats.poisoned == 1
        # Its worker is stopped (no task of it left), and unsubscribing it is a no-op.
        assert not [t for t in asyncio.all_tasks() if t.get_name() == f"tars-mqtt-sub:{poison}"]
        await client.unsubscribe(sub)
        assert sub.error is error


class ChokingBroker(LoopbackServer):
    """Ends the link with DISCONNECT 0x81 on a SUBSCRIBE to ``poison``, as Mosquitto does on a
    filter it calls malformed; on the third link only once a second SUBSCRIBE to it came (the
    restore's is held unanswered meanwhile, :attr:`restoring` set), so that a ``subscribe()``
    call is awaiting its SUBACK when the breaker's verdict comes."""

    def __init__(self, poison: str) -> None:
        super().__init__()
        self.poison = poison
        self.links = 0
        self.restoring = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links += 1
        link, peer, seen = self.links, RawMQTT(reader, writer), 0
        try:
            assert isinstance(await peer.receive(), mqtt5.ConnectPacket)
            await peer.send(mqtt5.ConnAckPacket())
            while True:
                packet = await peer.receive()
                if not isinstance(packet, mqtt5.SubscribePacket):
                    continue  # (heartbeat and health are off: nothing else needs an answer)
                if packet.topic_filters[0].pattern != self.poison:
                    granted = [mqtt5.SubAckReasonCode(int(f.max_qos)) for f in packet.topic_filters]
                    await peer.send(mqtt5.SubAckPacket(packet.packet_id, granted))
                    continue
                seen += 1
                if link == POISON_LINKS and seen == 1:
                    self.restoring.set()
                    continue
                reason = mqtt5.DisconnectReasonCode.MALFORMED_PACKET
                await peer.send(mqtt5.DisconnectPacket(reason_code=reason))
                return
        except EOFError:
            pass
        finally:
            await peer.close()


async def test_a_subscribe_awaiting_its_suback_when_the_filter_is_given_up_raises() -> None:
    async def handler(payload: bytes) -> None:
        """Never called."""

    async def other(payload: bytes) -> None:
        """Never called."""

    async with ChokingBroker("bad/#") as broker:
        client = MQTTClient(
            broker.url, unique("poison-wait"), enable_heartbeat=False, enable_health=False, **FAST
        )
        async with client:
            async with asyncio.timeout(20):
                first = await client.subscribe("bad/#", handler, qos=1)  # the link drops
                await broker.restoring.wait()  # two strikes; the third link's restore waits
                with pytest.raises(PoisonMessageError) as info:
                    await client.subscribe("bad/#", other, qos=2)
                ended_when_raised = first.error  # the caller looks at once
        error = info.value
        assert ended_when_raised is error
        assert isinstance(error, SubscribeError)
        assert (error.topic, error.reason_code, error.links) == ("bad/#", 0x81, POISON_LINKS)
        assert first.error is error  # the subscription returned earlier ended with it too
        assert client.stats.poisoned == 1


@pytest.mark.usefixtures("no_topic_rules")
async def test_a_poisoned_message_leaves_the_durable_outbox(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    good = unique("poison/durable")
    config = MQTTClientConfig(
        mqtt_url=broker.url,
        client_id=unique("poison-durable"),
        outbox_path=tmp_path / "outbox",
        **FAST,
    )
    assert config.outbox_file is not None
    async with MQTTClient(config=config) as client:
        await broker.astop()
        await wait_until(lambda: not client.connected)
        # Queued offline: on disk (fsynced) when this returns, sent first when the link is back.
        await client.publish("poison/\x1f", b"x", qos=1, wait=False)
        await client.publish(good, b"queued", qos=1, wait=False)
        await broker.astart()
        async with MosquittoSub(broker, good, qos=1, count=2) as sub:
            await wait_until(lambda: client.stats.poisoned == 1, timeout=20)
            await client.flush(timeout=10)
            await client.publish(good, b"after", qos=1)
            captured = await sub.wait_for(2)
    assert [c.payload for c in captured] == [b"queued", b"after"] or [
        c.payload for c in captured
    ] == [b"after", b"queued"]
    with DurableOutbox(config.outbox_file, max_messages=10, max_bytes=1 << 20) as box:
        assert box.count == 0  # the poison is out of the journal, not resent by a next start
