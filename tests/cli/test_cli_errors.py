"""Mistakes on the command line: one clear line on stderr, a non-zero status, no traceback."""

from __future__ import annotations

import socket
import time

import pytest

from support.cli_process import TARS_MQTT, Spawn
from tars.mqtt.testing import MosquittoBroker


def _closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _one_line_failure(spawn: Spawn, *argv: str, env: dict[str, str] | None = None) -> str:
    proc = await spawn(TARS_MQTT, *argv, env=env)
    status, out, err = await proc.finish()
    assert status == 1, (out, err)
    assert out == ""
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("tars-mqtt: ")
    return err.strip()


async def test_a_bad_url_names_the_option_to_fix(spawn: Spawn) -> None:
    err = await _one_line_failure(spawn, "sub", "#", "--url", "http://user:s3cret@host")
    assert err == (
        "tars-mqtt: bad --url / MQTT_URL: unknown scheme 'http': use mqtt://, mqtts:// (TLS), "
        "ws:// or wss:// (MQTT over WebSockets)"
    )


async def test_a_bad_url_from_the_environment_too(spawn: Spawn) -> None:
    err = await _one_line_failure(spawn, "fleet", "--once", env={"MQTT_URL": "mqtt://h:99999"})
    assert err.startswith("tars-mqtt: bad --url / MQTT_URL:")


async def test_bad_ws_headers_name_the_variable_never_the_token(spawn: Spawn) -> None:
    env = {"MQTT_WS_HEADERS": '{"X-Token": "s3cret\\r\\nX-Evil: 1"}'}
    err = await _one_line_failure(spawn, "fleet", "--once", "--url", "ws://h/mqtt", env=env)
    assert err.startswith("tars-mqtt: bad MQTT_WS_HEADERS: the value of 'X-Token'")
    assert "s3cret" not in err


async def test_an_unreachable_broker_fails_fast(spawn: Spawn) -> None:
    url = f"mqtt://127.0.0.1:{_closed_port()}"
    err = await _one_line_failure(spawn, "pub", "t", "--type", "x", "--url", url)
    assert err == f"tars-mqtt: connection to {url} refused"


async def test_a_broker_that_never_answers_is_given_up_after_the_connect_timeout(
    spawn: Spawn,
) -> None:
    with socket.socket() as silent:  # accepts TCP connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"mqtt://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        err = await _one_line_failure(spawn, "sub", "#", "--url", url, "--connect-timeout", "0.5")
        took = time.monotonic() - started
    assert err.startswith(f"tars-mqtt: no CONNACK from {url} within 0.5 s (")
    assert "mosquitto_sub -V 311" in err  # how to tell an MQTT 3.1.1-only broker
    assert took < 10  # bounded: the process start plus half a second, not a retry loop


@pytest.mark.mosquitto
async def test_mqtts_to_a_plain_port_says_what_to_change_in_its_one_line(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    url = f"mqtts://127.0.0.1:{shared_mosquitto.port}"
    err = await _one_line_failure(spawn, "pub", "t", "--type", "x", "--url", url)
    assert err.startswith(f"tars-mqtt: cannot connect to {url}: ")
    assert err.count("use mqtt://") == 1, err


async def test_a_bad_connect_timeout_names_the_flag(spawn: Spawn) -> None:
    err = await _one_line_failure(spawn, "sub", "#", "--connect-timeout", "0")
    assert err.startswith("tars-mqtt: bad --connect-timeout: ")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{oops", "tars-mqtt: --data is not valid JSON: "),
        ("[1, 2]", "tars-mqtt: --data must be a JSON object (the envelope's data), not an array"),
    ],
)
async def test_bad_json_is_reported_before_connecting(
    spawn: Spawn, data: str, expected: str
) -> None:
    # Port 9 (discard): nothing is contacted, the data is checked first.
    err = await _one_line_failure(
        spawn, "pub", "t", "--type", "x", "--data", data, "--url", "mqtt://127.0.0.1:9"
    )
    assert err.startswith(expected)


async def test_a_missing_data_file(spawn: Spawn, tmp_path: object) -> None:
    err = await _one_line_failure(
        spawn, "pub", "t", "--type", "x", "--data-file", f"{tmp_path}/nope.json"
    )
    assert err.startswith(f"tars-mqtt: cannot read --data-file {tmp_path}/nope.json")


@pytest.mark.mosquitto
async def test_a_password_never_shows_in_the_error(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    url = f"mqtt://alice:hunter2@127.0.0.1:{_closed_port()}"
    err = await _one_line_failure(spawn, "sub", "#", "--url", url)
    assert "hunter2" not in err


@pytest.mark.mosquitto
@pytest.mark.parametrize(
    "argv",
    [
        ("pub", "a/\x01", "--type", "x"),
        ("pub", "a/\x01", "--raw", "--data", "x", "--qos", "1"),
        ("sub", "x/\x02/#"),
        ("request", "a/\ufdd0", "--type", "x", "--response-topic", "r"),
    ],
    ids=["pub", "pub-raw", "sub", "request"],
)
async def test_a_topic_with_a_control_character_is_one_line_not_a_hang(
    spawn: Spawn, shared_mosquitto: MosquittoBroker, argv: tuple[str, ...]
) -> None:
    # A real broker is there to hang on, as the issue saw: the topic is refused before.
    err = await _one_line_failure(spawn, *argv, "--url", shared_mosquitto.url)
    assert err.startswith("tars-mqtt: invalid topic ")
    assert "MQTT 5 section 1.5.4" in err


async def test_version(spawn: Spawn) -> None:
    proc = await spawn(TARS_MQTT, "--version")
    status, out, _ = await proc.finish()
    assert status == 0
    assert out.strip() == "tars-mqtt (tars-core) 0.1.0"
