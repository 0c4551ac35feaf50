"""The committed JSON Schemas match the models, and real payloads validate against them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from pydantic import BaseModel

from tars.mqtt._envelope import encode_event
from tars.mqtt._health import encode_health, encode_heartbeat, will_payload
from tars.mqtt._schemas import SCHEMA_MODELS, check_schemas, main, render_schemas

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = REPO_ROOT / "schemas"


def _validator(name: str) -> Any:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


ENVELOPE = _validator("envelope.schema.json")
HEALTH = _validator("health_status.schema.json")
HEARTBEAT = _validator("heartbeat.schema.json")


class Reading(BaseModel):
    values_by_channel: dict[int, float]
    tags: set[str]
    taken_at: dt.datetime


# --- the files ---------------------------------------------------------------------------------


def test_committed_files_equal_the_generated_ones() -> None:
    rendered = render_schemas()
    assert sorted(rendered) == sorted(SCHEMA_MODELS)
    for name, text in rendered.items():
        assert (SCHEMAS / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python -m tars.mqtt._schemas"
        )
    assert check_schemas(SCHEMAS) == []


def test_generation_is_stable() -> None:
    assert render_schemas() == render_schemas()


def test_check_fails_on_a_missing_or_stale_file_and_passes_after_writing(tmp_path: Path) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    stale = tmp_path / "heartbeat.schema.json"
    stale.write_text(stale.read_text(encoding="utf-8").replace('"number"', '"string"'))
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert check_schemas(tmp_path) == ["heartbeat.schema.json"]


def test_module_runs_as_a_script_from_the_repo_root() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tars.mqtt._schemas", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- payloads against the schemas ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"text": "hi", "n": 1, "nested": {"list": [1, None, 2.5]}},
        {1: "int key", "s": {3}},
        Reading(values_by_channel={0: 1.5}, tags={"x"}, taken_at=dt.datetime(2024, 1, 1)),
    ],
    ids=["empty", "nested", "int keys and sets", "model"],
)
def test_encoded_events_validate(data: Any) -> None:
    _, payload = encode_event("a.b", data, source="svc", correlate="c-1")
    ENVELOPE.validate(orjson.loads(payload))
    _, payload = encode_event("a.b", data, source="svc")
    ENVELOPE.validate(orjson.loads(payload))


def test_health_status_validates_as_envelope_and_data() -> None:
    for ok, event, error in [(True, "ready", None), (False, None, "boom"), (True, None, None)]:
        _, payload = encode_health(ok, event, error, source="svc", timestamp=5.0)
        wire = orjson.loads(payload)
        ENVELOPE.validate(wire)
        HEALTH.validate(wire["data"])


def test_will_validates_as_envelope_and_data() -> None:
    wire = orjson.loads(will_payload(source="svc", timestamp=5.0))
    ENVELOPE.validate(wire)
    HEALTH.validate(wire["data"])


def test_heartbeat_validates() -> None:
    HEARTBEAT.validate(orjson.loads(encode_heartbeat(5.0)))


@pytest.mark.parametrize(
    ("validator", "instance"),
    [
        (ENVELOPE, {"type": "t", "ts": 1.0, "source": "s", "data": {}}),
        (ENVELOPE, {"id": "i", "type": "t", "ts": "now", "source": "s", "data": {}}),
        (ENVELOPE, {"id": "i", "type": "t", "ts": 1.0, "source": "s", "data": []}),
        (ENVELOPE, {"id": "i", "type": "t", "ts": 1.0, "source": "s", "data": {}, "correlate": 3}),
        (HEALTH, {"ok": "yes", "timestamp": 1.0}),
        (HEALTH, {"ok": True}),
        (HEARTBEAT, {"ok": True, "timestamp": 1.0}),
    ],
    ids=[
        "envelope without id",
        "envelope with string ts",
        "envelope with array data",
        "envelope with int correlate",
        "health with string ok",
        "health without timestamp",
        "heartbeat without event",
    ],
)
def test_schemas_reject_malformed_payloads(validator: Any, instance: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(instance)


def test_the_check_finds_the_schemas_from_any_directory(tmp_path: Path) -> None:
    # An installed package has no repository around it: the check must not need one.
    result = subprocess.run(
        [sys.executable, "-m", "tars.mqtt._schemas", "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
