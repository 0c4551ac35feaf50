"""What tars-core's own suite needs beyond the public pytest plugin (tars.mqtt.testing).

The plugin skips Mosquitto tests when Mosquitto is missing, which suits a service's suite.
Ours must not skip: a missing broker fails those tests with the command that fixes it.
"""

from __future__ import annotations

import shutil

import pytest

from tars.mqtt.testing._mosquitto import MosquittoBroker

_MOSQUITTO_FIXTURES = {"mosquitto_broker", "shared_mosquitto"}
_CLIENTS = ("mosquitto_pub", "mosquitto_sub")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, before the plugin's fixtures would skip, tests that need Mosquitto without it."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if not (fixtures & _MOSQUITTO_FIXTURES or item.get_closest_marker("mosquitto")):
        return
    missing = [] if MosquittoBroker.available() else ["mosquitto"]
    missing += [name for name in _CLIENTS if shutil.which(name) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: tars-core's tests need them "
            "(apt-get install mosquitto mosquitto-clients)",
            pytrace=False,
        )
