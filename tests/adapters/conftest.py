"""The drop-in's tests run twice: on Mosquitto (MQTT 5), and on a 3.1.1-only broker, as the
fleet's original client did (asyncio-mqtt's default was 3.1.1). The drop-in keeps
``protocol="auto"``: on the second run it is refused MQTT 5 and falls back to 3.1.1.

The 3.1.1-only broker is the testing kit's, in its own process (``--protocol 3.1.1``): Mosquitto
cannot refuse MQTT 5 on a listener. The tests only use the broker's ``url``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.dev_broker import DevBroker
from tars.mqtt.testing import MosquittoBroker


@pytest.fixture(scope="session")
def broker_311_only() -> Iterator[DevBroker]:
    with DevBroker("3.1.1") as broker:
        yield broker


@pytest.fixture(params=["mqtt5", "mqtt311-only"])
def shared_mosquitto(
    request: pytest.FixtureRequest, shared_mosquitto: MosquittoBroker
) -> MosquittoBroker | DevBroker:
    """The session's Mosquitto, or the 3.1.1-only broker (same ``url`` attribute)."""
    if request.param == "mqtt5":
        return shared_mosquitto
    broker: DevBroker = request.getfixturevalue("broker_311_only")
    return broker
