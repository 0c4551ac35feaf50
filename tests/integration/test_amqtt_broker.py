"""amqtt (PyPI), an MQTT 3.1.1-only broker with WebSockets, in its own process
(tests/support/amqtt.py): issue 22's "Done when" for amqtt.

Two tars-core services exchange envelopes (both ways), request/reply (both ways) and health
through it, over TCP and over WebSockets: one speaks ``protocol="3.1.1"``, the other
``"3.1.1"`` or ``"auto"``. amqtt never answers an MQTT 5 CONNECT, so ``auto`` falls back
after ``connect_timeout`` (5 s here) and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from support.amqtt import AmqttBroker
from support.exchange import exchange, service

# The first test may install amqtt in its venv (make amqtt does it beforehand).
pytestmark = [pytest.mark.amqtt, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def amqtt_broker() -> Iterator[AmqttBroker]:
    with AmqttBroker() as broker:
        yield broker


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("protocol", ["3.1.1", "auto"])
async def test_two_services_exchange_envelopes_requests_and_health(
    amqtt_broker: AmqttBroker, transport: str, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tars.mqtt")
    url = amqtt_broker.ws_url if transport == "ws" else amqtt_broker.url
    started = time.monotonic()
    done = await exchange(url, amqtt_broker.url, protocol_a=protocol, protocol_b="3.1.1")
    done.check()
    assert f"speaks MQTT 3.1.1 with {url}" in caplog.text
    if protocol == "auto":
        assert f"{url} did not take MQTT 5 (no CONNACK" in caplog.text
    print(f"\namqtt, {transport}, {protocol}: exchanged in {time.monotonic() - started:.1f} s")


async def test_a_5_only_client_gets_no_answer_and_a_clear_error(
    amqtt_broker: AmqttBroker,
) -> None:
    from tars.mqtt import ConnectError

    with pytest.raises(ConnectError, match="no CONNACK"):
        async with service(amqtt_broker.url, "v5", protocol="5", connect_timeout=2):
            pass
