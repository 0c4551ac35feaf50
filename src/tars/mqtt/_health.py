"""Health reporting: the payloads a client publishes about itself, and where.

Each client with health enabled publishes, under its own ``client_id``:

* ``system/health/{client_id}``: a retained envelope of type ``health.status`` whose data is a
  :class:`HealthStatus`. The broker holds the latest one, and the connection's will replaces it
  with an "offline" status (:func:`will_payload`) when the process dies without disconnecting,
  so a dashboard shows a crashed service as unhealthy instead of as its last good state.
* ``system/keepalive/{client_id}``: bare :class:`HeartbeatPayload` objects (no envelope, they are
  frequent and only ever read by the client itself) that prove the publish/subscribe round trip.

The payload models (:class:`HealthStatus`, :class:`HeartbeatPayload`) are pydantic models in
:mod:`tars.mqtt._models`, loaded on first use: publishing health needs none of them.
"""

from __future__ import annotations

from typing import Any

import orjson

from tars.mqtt._argcheck import check_str
from tars.mqtt._envelope import encode_event

__all__ = [
    "HEALTH_EVENT_TYPE",
    "WILL_ERROR",
    "WILL_EVENT",
    "encode_health",
    "encode_heartbeat",
    "health_topic",
    "keepalive_topic",
    "will_payload",
]

HEALTH_EVENT_TYPE = "health.status"
"""The envelope ``type`` of health status events."""

WILL_EVENT = "offline"
"""The ``event`` of the will's health status."""
WILL_ERROR = "connection lost unexpectedly"
"""The ``error`` of the will's health status."""


def health_topic(client_id: str) -> str:
    """Return the topic a client's health status is published (retained) on.

    Raises :class:`~tars.mqtt.InvalidArgumentTypeError` unless ``client_id`` is a ``str`` (an
    int would make a topic that no client of that name ever uses).
    """
    check_str("client_id", client_id)
    return f"system/health/{client_id}"


def keepalive_topic(client_id: str) -> str:
    """Return the topic a client sends its heartbeats to (and subscribes to).

    Raises :class:`~tars.mqtt.InvalidArgumentTypeError` unless ``client_id`` is a ``str``.
    """
    check_str("client_id", client_id)
    return f"system/keepalive/{client_id}"


def encode_health(
    ok: bool, event: str | None, error: str | None, *, source: str, timestamp: float
) -> tuple[str, bytes]:
    """Build a ``health.status`` envelope and return ``(id, payload)``.

    Its data is the wire fields of :class:`HealthStatus` (``ok``, ``event``, ``err``,
    ``timestamp``), which the original client's ``HealthPing`` also accepts; as everywhere on
    the wire, an absent field (no ``event``, no ``err`` when healthy) is left out, not null.
    """
    data: dict[str, Any] = {"ok": ok}
    if event is not None:
        data["event"] = event
    if error is not None:
        data["err"] = error
    data["timestamp"] = float(timestamp)
    return encode_event(HEALTH_EVENT_TYPE, data, source=source)


def encode_heartbeat(timestamp: float) -> bytes:
    """Build a heartbeat payload: ``{"ok": true, "event": "heartbeat", "timestamp": ...}``."""
    return orjson.dumps({"ok": True, "event": "heartbeat", "timestamp": float(timestamp)})


def will_payload(*, source: str, timestamp: float) -> bytes:
    """Build the will: the health status the broker publishes if the connection dies uncleanly.

    It reads ``ok: false``, event ``"offline"``, error ``"connection lost unexpectedly"``. Its
    ``timestamp`` (and envelope ``ts``) is when the will was built, i.e. when the connection was
    opened: the broker only publishes it later, unchanged.
    """
    return encode_health(False, WILL_EVENT, WILL_ERROR, source=source, timestamp=timestamp)[1]


def __getattr__(name: str) -> Any:
    """``HealthStatus`` and ``HeartbeatPayload`` from :mod:`tars.mqtt._models`, on first use."""
    if name in ("HealthStatus", "HeartbeatPayload"):
        from tars.mqtt import _models

        return getattr(_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
