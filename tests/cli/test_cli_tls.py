"""The commands take the TLS settings of the library: a CA file, or no checks (test brokers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli_process import TARS_MQTT, Spawn
from support.mosquitto_cli import unique
from support.tls import make_certs, tls_mosquitto, tls_url
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("cli-tls"))


@pytest.fixture(scope="module")
def tls_broker(certs: Path) -> Iterator[MosquittoBroker]:
    with tls_mosquitto(certs) as broker:
        yield broker


async def _pub(spawn: Spawn, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await spawn(TARS_MQTT, "pub", unique("cli-tls"), "--type", "t.x", *argv, env=env)
    status, _, err = await proc.finish()
    return status, err


async def test_the_ca_file_from_the_flag_or_the_environment(
    spawn: Spawn, tls_broker: MosquittoBroker, certs: Path
) -> None:
    url, ca = tls_url(tls_broker), str(certs / "ca.pem")
    assert await _pub(spawn, "--url", url, "--ca-file", ca) == (0, "")
    assert await _pub(spawn, env={"MQTT_URL": url, "MQTT_TLS_CA_FILE": ca}) == (0, "")


async def test_an_unknown_ca_is_one_line_and_insecure_skips_the_check(
    spawn: Spawn, tls_broker: MosquittoBroker
) -> None:
    url = tls_url(tls_broker)
    status, err = await _pub(spawn, "--url", url)  # the system store does not know our CA
    assert status == 1
    assert err.startswith("tars-mqtt: ")
    assert "certificate" in err.lower()
    assert err.count("\n") == 1
    assert await _pub(spawn, "--url", url, "--insecure") == (0, "")
    assert await _pub(spawn, "--url", url, env={"MQTT_TLS_INSECURE": "yes"}) == (0, "")
