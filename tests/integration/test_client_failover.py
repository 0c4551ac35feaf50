"""Several brokers in ``mqtt_url`` and MQTT 5 server redirection, on real brokers.

A client given a list connects to the first broker that answers, and when the broker it is on
dies (``kill -9``) it moves on to the next one; a broker that redirects it (CONNACK or
DISCONNECT with a Server Reference) sends it where it says. ``client.broker`` tells where it is.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from support.mosquitto_cli import Inbox, unique
from support.redirect import RedirectBroker
from tars.mqtt import ClientState, ConnectError, MQTTClient
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing._process import free_port

pytestmark = pytest.mark.mosquitto


def dead_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    return f"mqtt://127.0.0.1:{free_port('127.0.0.1')}"


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rsplit("@", 1)[-1]


async def test_connects_to_the_first_broker_that_answers(mosquitto_broker: MosquittoBroker) -> None:
    url = f"{dead_url()},{mosquitto_broker.url}"
    client = MQTTClient(url, unique("list"), wait_for_broker=False, connect_timeout=2)
    async with client:
        assert client.connected
        assert client.broker == mosquitto_broker.url
        assert mosquitto_broker.url in repr(client)


async def test_no_broker_of_the_list_answers_fails_fast_without_waiting() -> None:
    client = MQTTClient(f"{dead_url()},{dead_url()}", unique("none"), wait_for_broker=False)
    with pytest.raises(ConnectError, match="refused"):
        await client.connect()
    assert client.state is ClientState.CLOSED


async def test_moves_to_the_next_broker_when_its_broker_is_killed(
    mosquitto_broker: MosquittoBroker,
) -> None:
    second = MosquittoBroker()
    second.start()
    try:
        client = MQTTClient(f"{mosquitto_broker.url},{second.url}", unique("failover"))
        ups: Inbox[float] = Inbox()

        @client.on_connect
        async def connected() -> None:
            ups.add(time.monotonic())

        got: Inbox[bytes] = Inbox()

        async def on_message(payload: bytes) -> None:
            got.add(payload)

        topic = unique("failover/t")
        await client.subscribe(topic, on_message, qos=1)
        async with client:
            await ups.wait_for(1)
            assert client.broker == mosquitto_broker.url
            killed_at = time.monotonic()
            await mosquitto_broker.akill()
            [_, back] = await ups.wait_for(2, timeout=5)
            assert client.broker == second.url
            assert back - killed_at < 1.0  # default settings: back on the other node within 1 s
            # Subscriptions were restored on the new broker: its messages reach the handler.
            await client.publish(topic, b"on the second broker", qos=1)
            assert await got.wait_for(1) == [b"on the second broker"]
    finally:
        second.close()


async def test_a_refusing_redirect_sends_the_client_to_the_referenced_broker(
    mosquitto_broker: MosquittoBroker,
) -> None:
    async with RedirectBroker.refusing(host_port(mosquitto_broker.url)) as redirect:
        # Listed in mqtt_url (after the redirecting broker): redirects="listed" follows it.
        urls = f"{redirect.url},{mosquitto_broker.url}"
        client = MQTTClient(urls, unique("moved"), wait_for_broker=False)
        async with client:
            assert client.connected
            assert client.broker == mosquitto_broker.url
        assert len(redirect.connects) == 1


async def test_a_disconnect_with_a_server_reference_moves_the_client(
    mosquitto_broker: MosquittoBroker,
) -> None:
    reference = f"mqtt://{host_port(mosquitto_broker.url)}"
    async with RedirectBroker.accepting_then_disconnecting(
        reference, reason="use_another_server", delay=0.2
    ) as redirect:
        client = MQTTClient(redirect.url, unique("sent-on"), redirects="any")
        ups: Inbox[str] = Inbox()

        @client.on_connect
        async def connected() -> None:
            ups.add(client.broker)

        async with client:
            brokers = await ups.wait_for(2, timeout=5)
            assert brokers == [redirect.url, mosquitto_broker.url]
            assert client.connected


async def test_a_redirect_to_tls_from_plain_is_not_followed(
    mosquitto_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A redirection never changes the scheme: credentials must not move to another transport."""
    async with RedirectBroker.refusing(f"mqtts://{host_port(mosquitto_broker.url)}") as redirect:
        client = MQTTClient(
            redirect.url, unique("no-tls-hop"), wait_for_broker=False, redirects="any"
        )
        with pytest.raises(ConnectError, match="0x9d"):
            await client.connect()
    assert "not a usable broker address" in caplog.text


async def test_redirect_loops_end(caplog: pytest.LogCaptureFixture) -> None:
    """Two brokers referring to each other: followed a few times, then a plain failure."""
    first = RedirectBroker.refusing("placeholder")
    async with first, RedirectBroker.refusing(host_port(first.url)) as second:
        first.reference = host_port(second.url)
        client = MQTTClient(second.url, unique("loop"), wait_for_broker=False, redirects="any")
        with pytest.raises(ConnectError):
            await asyncio.wait_for(client.connect(), timeout=10)
    assert 3 <= len(first.connects) + len(second.connects) <= 12
