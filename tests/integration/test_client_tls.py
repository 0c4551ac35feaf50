"""``mqtts://`` against a real Mosquitto TLS listener, with a throwaway CA made by openssl."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mosquitto_cli import Inbox, unique
from support.tls import make_certs, tls_mosquitto, tls_url
from tars.mqtt import ClientState, ConnectError, MQTTClient
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(certs: Path) -> Iterator[MosquittoBroker]:
    with tls_mosquitto(certs) as broker:
        yield broker


async def roundtrip(client: MQTTClient) -> bytes:
    got: Inbox[bytes] = Inbox()

    async def on_msg(payload: bytes) -> None:
        got.add(payload)

    topic = unique("tls/t")
    await client.subscribe(topic, on_msg, qos=1)
    await client.publish(topic, b"over tls", qos=1)
    [payload] = await got.wait_for(1)
    return payload


async def test_mqtts_with_the_brokers_ca_verifies_and_works(
    tls_broker: MosquittoBroker, certs: Path
) -> None:
    async with MQTTClient(
        tls_url(tls_broker), unique("tls"), tls_ca_file=str(certs / "ca.pem")
    ) as client:
        assert client.connected
        assert await roundtrip(client) == b"over tls"


async def test_mqtts_refuses_a_broker_it_cannot_verify(tls_broker: MosquittoBroker) -> None:
    # The system store does not know our throwaway CA: the handshake must fail, clearly.
    client = MQTTClient(tls_url(tls_broker), unique("tls-untrusted"), wait_for_broker=False)
    with pytest.raises(ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        await asyncio.wait_for(client.connect(), timeout=10)


async def test_mqtts_insecure_skips_verification(tls_broker: MosquittoBroker) -> None:
    async with MQTTClient(tls_url(tls_broker), unique("tls-insecure"), tls_insecure=True) as c:
        assert await roundtrip(c) == b"over tls"


async def test_a_callers_ssl_context_is_used(tls_broker: MosquittoBroker, certs: Path) -> None:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    async with MQTTClient(tls_url(tls_broker), unique("tls-ctx"), ssl_context=context) as c:
        assert await roundtrip(c) == b"over tls"


async def test_plain_mqtt_to_a_tls_port_fails_without_hanging(
    tls_broker: MosquittoBroker,
) -> None:
    client = MQTTClient(
        f"mqtt://127.0.0.1:{tls_broker.port}",
        unique("plain-to-tls"),
        wait_for_broker=False,
        connect_timeout=3,
    )
    with pytest.raises(ConnectError):
        await asyncio.wait_for(client.connect(), timeout=10)


# --- D4: a certificate that fails verification is final -------------------------------------


async def test_a_ca_that_does_not_match_fails_at_once_even_when_waiting_for_the_broker(
    tls_broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = make_certs(
        tmp_path_factory.mktemp("other-ca"), ca_name="another-ca"
    )  # a CA that did not sign the broker
    client = MQTTClient(
        tls_url(tls_broker), unique("tls-wrong-ca"), tls_ca_file=str(other / "ca.pem")
    )  # wait_for_broker=True by default: only a final failure may end connect()
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED") as info:
        await asyncio.wait_for(client.connect(), timeout=10)
    assert info.value.fatal
    assert asyncio.get_running_loop().time() - started < 5  # not retried with backoff
    assert client.state is ClientState.CLOSED


# --- mutual TLS: a listener that requires a client certificate ----------------------------------


@pytest.fixture(scope="module")
def mtls_broker(certs: Path) -> Iterator[MosquittoBroker]:
    with tls_mosquitto(certs, require_certificate=True) as broker:
        yield broker


async def test_a_client_certificate_from_the_options_is_presented(
    mtls_broker: MosquittoBroker, certs: Path
) -> None:
    async with MQTTClient(
        tls_url(mtls_broker),
        unique("mtls"),
        tls_ca_file=str(certs / "ca.pem"),
        tls_cert_file=str(certs / "client.pem"),
        tls_key_file=str(certs / "client.key"),
    ) as client:
        assert await roundtrip(client) == b"over tls"


async def test_a_client_certificate_from_the_environment_is_presented(
    mtls_broker: MosquittoBroker, certs: Path
) -> None:
    env = {
        "MQTT_URL": tls_url(mtls_broker),
        "MQTT_CLIENT_ID": unique("mtls-env"),
        "MQTT_TLS_CA_FILE": str(certs / "ca.pem"),
        "MQTT_TLS_CERT_FILE": str(certs / "client.pem"),
        "MQTT_TLS_KEY_FILE": str(certs / "client.key"),
    }
    async with MQTTClient.from_env(env) as client:
        assert await roundtrip(client) == b"over tls"


async def test_without_a_client_certificate_the_connect_fails_clearly_and_at_once(
    mtls_broker: MosquittoBroker, certs: Path
) -> None:
    # wait_for_broker=True (the default): the broker's refusal must still end connect().
    client = MQTTClient(
        tls_url(mtls_broker), unique("mtls-none"), tls_ca_file=str(certs / "ca.pem")
    )
    with pytest.raises(ConnectError, match="certificate required") as info:
        await asyncio.wait_for(client.connect(), timeout=10)
    assert info.value.fatal


async def test_a_client_certificate_of_another_ca_is_refused_at_once(
    mtls_broker: MosquittoBroker, certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = make_certs(tmp_path_factory.mktemp("other-client"), ca_name="another-ca")
    client = MQTTClient(
        tls_url(mtls_broker),
        unique("mtls-other"),
        tls_ca_file=str(certs / "ca.pem"),
        tls_cert_file=str(other / "client.pem"),
        tls_key_file=str(other / "client.key"),
    )
    with pytest.raises(ConnectError, match=r"(?i)unknown ca|bad certificate") as info:
        await asyncio.wait_for(client.connect(), timeout=10)
    assert info.value.fatal
