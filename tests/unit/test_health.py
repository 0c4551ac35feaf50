"""Health payloads, heartbeats, the will, and their topics."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from tars.mqtt._envelope import decode_envelope
from tars.mqtt._health import (
    HEALTH_EVENT_TYPE,
    HealthStatus,
    HeartbeatPayload,
    encode_health,
    encode_heartbeat,
    health_topic,
    keepalive_topic,
    will_payload,
)


def test_topics_are_per_client() -> None:
    assert health_topic("stt-worker") == "system/health/stt-worker"
    assert keepalive_topic("stt-worker") == "system/keepalive/stt-worker"


def test_health_status_is_an_envelope_of_type_health_status() -> None:
    msg_id, payload = encode_health(True, "ready", None, source="stt-worker", timestamp=12.5)
    env = decode_envelope(payload)
    assert env.id == msg_id
    assert env.type == HEALTH_EVENT_TYPE == "health.status"
    assert env.source == "stt-worker"
    assert env.data == {"ok": True, "event": "ready", "timestamp": 12.5}  # no err: left out
    assert HealthStatus.model_validate(env.data) == HealthStatus(
        ok=True, event="ready", timestamp=12.5
    )


def test_unhealthy_status_carries_the_error() -> None:
    _, payload = encode_health(False, "degraded", "mic unplugged", source="s", timestamp=1)
    status = HealthStatus.model_validate(decode_envelope(payload).data)
    assert (status.ok, status.event, status.error) == (False, "degraded", "mic unplugged")
    assert isinstance(orjson.loads(payload)["data"]["timestamp"], float)


def test_heartbeat_payload_is_exactly_ok_event_timestamp() -> None:
    payload = encode_heartbeat(1718000000.5)
    assert orjson.loads(payload) == {"ok": True, "event": "heartbeat", "timestamp": 1718000000.5}
    assert HeartbeatPayload.model_validate_json(payload) == HeartbeatPayload(
        ok=True, event="heartbeat", timestamp=1718000000.5
    )


def test_heartbeat_timestamp_is_always_a_float() -> None:
    assert orjson.loads(encode_heartbeat(7)) == {"ok": True, "event": "heartbeat", "timestamp": 7.0}
    assert b'"timestamp":7.0' in encode_heartbeat(7)


def test_will_reports_the_client_offline() -> None:
    env = decode_envelope(will_payload(source="stt-worker", timestamp=99.0))
    assert env.type == "health.status"
    assert env.source == "stt-worker"
    assert HealthStatus.model_validate(env.data) == HealthStatus(
        ok=False, event="offline", error="connection lost unexpectedly", timestamp=99.0
    )


def test_health_models_are_frozen() -> None:
    status = HealthStatus(ok=True, timestamp=1.0)
    beat = HeartbeatPayload(ok=True, event="heartbeat", timestamp=1.0)
    with pytest.raises(ValidationError):
        status.ok = False
    with pytest.raises(ValidationError):
        beat.ok = False


def test_health_status_defaults_event_and_error_to_none() -> None:
    assert HealthStatus.model_validate({"ok": True, "timestamp": 3}) == HealthStatus(
        ok=True, event=None, error=None, timestamp=3.0
    )
