"""What a service's start loads: the client and its configuration, never pydantic.

pydantic costs about 60 ms and 10 MB at import (bench/RESULTS.md, start-up rows), more than the
rest of the client; it is loaded only by what uses it (a model-typed handler, ``Envelope`` built
or validated as a model, ``HealthStatus``, the JSON schemas). Each case runs in a fresh
interpreter, as a service starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tars.mqtt

START = """
import sys
from tars.mqtt import MQTTClient, Message, Envelope, ConfigError
client = MQTTClient.from_env({"MQTT_URL": "mqtt://localhost:1", "MQTT_CLIENT_ID": "svc",
                              "MQTT_ENABLE_HEALTH": "true", "MQTT_KEEPALIVE": "30"})
from tars.mqtt._envelope import decode_envelope, encode_event
from tars.mqtt._health import encode_health
env = decode_envelope(encode_event("a.b", {"x": 1}, source="s")[1])
assert env.model_dump()["data"] == {"x": 1} and env.model_dump_json()
encode_health(True, "ready", None, source="s", timestamp=1.0)
try:
    MQTTClient("mqtt://h", "c", keepalive=0)
except ConfigError:
    pass
print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core")))
"""


def _loaded(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_a_service_start_does_not_import_pydantic() -> None:
    assert _loaded(START) == "[]"


SERVICE = (
    "import sys\nfrom tars.mqtt import MQTTClient\n"
    "client = MQTTClient.from_env({'MQTT_URL': 'mqtt://localhost:1', 'MQTT_CLIENT_ID': 'svc'})\n"
)
LATER = ("tars.mqtt._instrument", "tars.mqtt._options", "random")
"""Loaded by what uses them, not at a service's start (issue 21): the instruments' dataclasses
(when one is added), the ``ClientOptions`` TypedDict (type checkers only), :mod:`random` (the
first retry's jitter, a shuffled broker order)."""


def test_a_service_start_does_not_load_what_only_some_use() -> None:
    assert _loaded(f"{SERVICE}print([m for m in {LATER!r} if m in sys.modules])") == "[]"


@pytest.mark.parametrize(
    ("use", "module"),
    [
        ("from tars.mqtt import Instrument; client.add_instrument(Instrument())", LATER[0]),
        ("from tars.mqtt import ClientOptions", LATER[1]),
        (
            "client.config.model_copy(update={'broker_order': 'shuffle'}).ordered_endpoints()",
            LATER[2],
        ),
        (
            "from tars.mqtt import ExponentialBackoff\n"
            "ExponentialBackoff().next_delay(0, refused=False)",
            LATER[2],
        ),
    ],
)
def test_what_uses_them_loads_them(use: str, module: str) -> None:
    assert _loaded(f"{SERVICE}{use}\nprint({module!r} in sys.modules)") == "True"


@pytest.mark.parametrize(
    "use",
    [
        "from tars.mqtt import HealthStatus",
        "from tars.mqtt import Envelope; Envelope(id='i', type='t', ts=1, source='s', data={})",
        "from tars.mqtt import Envelope; Envelope.model_json_schema()",
        "import tars.mqtt._schemas",
    ],
)
def test_what_uses_pydantic_loads_it(use: str) -> None:
    assert "'pydantic'" in _loaded(f"{use}\nimport sys\nprint(sorted(sys.modules))")


def test_the_pytest_plugin_loads_nothing_of_tars_core_until_a_fixture_is_used() -> None:
    """It is loaded by every pytest run where tars-core is installed (the pytest11 entry point):
    the broker, the proxy and the client wait for a test that asks for them."""
    loaded = _loaded(
        "import sys, pytest, tars.mqtt.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('tars')))"
    )
    assert loaded == "['tars', 'tars.mqtt', 'tars.mqtt.testing', 'tars.mqtt.testing.pytest_plugin']"


WITHOUT_PYTEST_ASYNCIO = """
import os, sys

class NotInstalled:  # pytest_asyncio cannot be imported, as if it were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pytest_asyncio":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no entry points: only the kit's plugin
import pytest
args = ["-q", "-p", "tars.mqtt.testing.pytest_plugin", "-p", "no:cacheprovider", sys.argv[1]]
sys.exit(pytest.main(args))
"""


def test_without_pytest_asyncio_a_kit_fixture_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "test_service.py").write_text(
        "def test_uses_the_client(mqtt_client):\n    pass\n"
        "def test_uses_mosquitto_only(request):\n    pass\n"
    )
    src = str(Path(tars.mqtt.__file__).resolve().parents[2])  # these sources, from any cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST_ASYNCIO, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "install tars-core[testing]" in result.stdout
    assert "fixture 'mqtt_client' not found" not in result.stdout
    assert "1 passed, 1 error" in result.stdout  # the other fixtures work


def test_printable_topics_and_properties_compile_no_pattern() -> None:
    """The forbidden-character patterns (about 1 ms to compile) wait for a string that is not
    printable: a service's start and its ordinary publishes never pay for them."""
    checks = (
        "from tars.mqtt._checks import PublishCheck\n"
        "from tars.mqtt import _topics\n"
        "check = PublishCheck(1 << 20)\n"
        "check('robot/état', b'x', 1, {'content_type': 'text/plain', 'response_topic': 'r/1'})\n"
        "print(_topics._searches.cache_info().currsize, end=' ')\n"
        "try:\n"
        "    check('robot/\\x01', b'x', 1, None)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, _topics._searches.cache_info().currsize)\n"
    )
    assert _loaded(SERVICE + checks) == "0 InvalidTopicError 1"
