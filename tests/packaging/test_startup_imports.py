"""What a service's start loads: the client and its configuration, never pydantic.

pydantic costs about 60 ms and 10 MB at import (bench/RESULTS.md, start-up rows), more than the
rest of the client; it is loaded only by what uses it (a model-typed handler, ``Envelope`` built
or validated as a model, ``HealthStatus``, the JSON schemas). Each case runs in a fresh
interpreter, as a service starts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

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
