"""Connection trouble is never silent (issue 14, section 3).

A wrong port under the default ``wait_for_broker=True`` used to leave ``connect()`` waiting
with nothing above INFO in the log; an MQTT 3.1.1-only broker used to be retried for ever as a
"malformed packet". These tests use a real Mosquitto on a free port and a tiny TCP server that
answers like a 3.1.1 broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from support import LoopbackServer
from support.mosquitto_cli import Inbox, unique, wait_until
from support.tls import make_certs, tls_mosquitto
from tars.mqtt import ClientState, ConnectError, MQTTClient
from tars.mqtt.testing import MosquittoBroker


def _records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tars.mqtt" and r.levelno == level and text in r.getMessage()
    ]


@pytest.mark.mosquitto
async def test_a_broker_not_listening_is_a_warning_and_its_return_an_info(
    mosquitto_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tars.mqtt")
    await mosquitto_broker.astop()  # its port is free: nothing listens there now
    host, port = mosquitto_broker.host, mosquitto_broker.port
    url = f"mqtt://svc:s3cret@{host}:{port}"
    client = MQTTClient(url, unique("patient"))  # wait_for_broker=True, the default
    connecting = asyncio.create_task(client.connect())
    try:
        # Several attempts fail (each logged); only the first says WARNING.
        await wait_until(lambda: len(_records(caplog, logging.INFO, "retrying in")) >= 2)
        assert not connecting.done()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        warning = warnings[0].getMessage()
        assert f"mqtt://svc:***@{host}:{port}" in warning
        assert "s3cret" not in caplog.text
        assert "wait_for_broker=False" in warning
        assert "asyncio.timeout()" in warning
        await mosquitto_broker.astart()
        await asyncio.wait_for(connecting, timeout=5)
        [healed] = _records(caplog, logging.INFO, "after failed attempts:")
        assert healed.startswith(f"{client.client_id} connected to mqtt://svc:***@{host}:{port}")
    finally:
        await client.shutdown()


class Mqtt311Broker(LoopbackServer):
    """A TCP server that answers any CONNECT as an MQTT 3.1.1-only broker answers an MQTT 5
    one: CONNACK with return code 1 (unacceptable protocol version), then closes."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: Inbox[bytes] = Inbox()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(65536)  # the CONNECT (small: one read on loopback)
            self.attempts.add(first)
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
        finally:
            writer.close()


async def test_an_mqtt_311_broker_fails_the_first_connect_at_once_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Mqtt311Broker() as broker:
        client = MQTTClient(f"mqtt://127.0.0.1:{broker.port}", unique("v5only"), protocol="5")
        async with asyncio.timeout(5):
            with pytest.raises(ConnectError) as caught:
                await client.connect()  # wait_for_broker=True: still fatal, not retried
        assert "the broker speaks only MQTT 3.1.1 (or older): use protocol='3.1.1'" in str(
            caught.value
        )
        assert caught.value.reason_code == 0x84
        assert len(broker.attempts.items) == 1
        assert broker.attempts.items[0][0] == 0x10  # it was our CONNECT that got that answer
        assert "malformed" not in caplog.text


@pytest.mark.mosquitto
async def test_asyncio_timeout_bounds_the_wait_and_closes_the_client(
    mosquitto_broker: MosquittoBroker,
) -> None:
    # The recipe in docs/resilience.md: wait for the broker, but not for ever.
    await mosquitto_broker.astop()
    client = MQTTClient(mosquitto_broker.url, unique("bounded"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await client.connect()
    assert client.state is ClientState.CLOSED
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("tars-")] == []


# --- issue 19 §3: hints that say what to change --------------------------------------------------


class SilentBroker(LoopbackServer):
    """Accepts TCP, reads the CONNECT, never answers (as an MQTT 3.1.1-only broker such as
    amqtt does to an MQTT 5 CONNECT)."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()


async def _first_warning(caplog: pytest.LogCaptureFixture, client: MQTTClient) -> list[str]:
    """The WARNINGs of a client kept connecting until a few attempts failed."""
    caplog.set_level(logging.INFO, logger="tars.mqtt")
    connecting = asyncio.create_task(client.connect())
    try:
        await wait_until(lambda: len(_records(caplog, logging.INFO, "retrying in")) >= 2, 20)
    finally:
        await client.shutdown()
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectError):
            await connecting
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_no_connack_says_an_mqtt_311_only_broker_may_be_silent_and_how_to_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with SilentBroker() as broker:
        client = MQTTClient(broker.url, unique("silent"), connect_timeout=0.3)
        warnings = await _first_warning(caplog, client)
    assert len(warnings) == 1, warnings
    assert f"no CONNACK from {broker.url} within 0.3 s" in warnings[0]
    assert "MQTT 3.1.1" in warnings[0]
    assert "mosquitto_sub -V 311" in warnings[0]


@pytest.mark.mosquitto
async def test_mqtts_to_a_plain_port_hints_mqtt_once(
    mosquitto_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"mqtts://127.0.0.1:{mosquitto_broker.port}"
    client = MQTTClient(url, unique("tls-to-plain"), reconnect_min_delay=0.05)
    warnings = await _first_warning(caplog, client)
    hinted = [w for w in warnings if "use mqtt://" in w]
    assert len(hinted) == 1, warnings
    assert url in hinted[0]  # in the WARNING that names the URL


@pytest.mark.mosquitto
async def test_mqtt_to_a_tls_port_hints_mqtts_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tls_mosquitto(make_certs(tmp_path)) as tls_broker:
        url = f"mqtt://127.0.0.1:{tls_broker.port}"
        client = MQTTClient(url, unique("plain-to-tls"), reconnect_min_delay=0.05)
        warnings = await _first_warning(caplog, client)
    hinted = [w for w in warnings if "is this a TLS port? use mqtts://" in w]
    assert len(hinted) == 1, warnings
    assert url in hinted[0]


async def _raised(url: str) -> str:
    """The error ``connect()`` raises with ``wait_for_broker=False`` (the CLI's way)."""
    client = MQTTClient(url, unique("fail-fast"), wait_for_broker=False, connect_timeout=5)
    try:
        with pytest.raises(ConnectError) as caught:
            async with asyncio.timeout(10):
                await client.connect()
    finally:
        await client.shutdown()
    return str(caught.value)


@pytest.mark.mosquitto
async def test_mqtts_to_a_plain_port_raises_the_hint_once_to_a_caller_that_fails_fast(
    shared_mosquitto: MosquittoBroker,
) -> None:
    """No WARNING reaches a caller that does not wait for the broker: the error it gets says
    what to change itself."""
    url = f"mqtts://127.0.0.1:{shared_mosquitto.port}"
    text = await _raised(url)
    assert url in text
    assert text.count("use mqtt://") == 1, text


@pytest.mark.mosquitto
async def test_mqtt_to_a_tls_port_raises_the_hint_once_to_a_caller_that_fails_fast(
    tmp_path: Path,
) -> None:
    with tls_mosquitto(make_certs(tmp_path)) as tls_broker:
        text = await _raised(f"mqtt://127.0.0.1:{tls_broker.port}")
    assert text.count("is this a TLS port? use mqtts://") == 1, text
