"""The pydantic side of the wire payloads, imported only when something needs pydantic.

A service's start never imports this module: events are encoded and decoded by hand
(:mod:`tars.mqtt._envelope`) and health payloads are built as dicts (:mod:`tars.mqtt._health`).
It is loaded by what validates input or describes the wire: ``Envelope(...)`` and
``Envelope.model_validate``, :class:`HealthStatus` and :class:`HeartbeatPayload` (public, for
consumers that parse health topics), a pydantic model with an ``Envelope`` field, and the JSON
Schemas under ``schemas/`` (:mod:`tars.mqtt._schemas`).

The schemas describe exactly what the client writes: no keys beyond the declared ones
(``additionalProperties: false``), and an optional field that is absent rather than null on the
wire (``correlate``, a health status's ``event`` and ``err``) is described as absent-or-a-string,
not as nullable. Readers stay lenient (extra keys ignored, null read as absent); the schemas are
what a consumer in another language can rely on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from tars.mqtt._envelope_fields import ENVELOPE_FIELDS

__all__ = ["EnvelopeModel", "HealthStatus", "HeartbeatPayload", "exact_schema"]


def exact_schema(schema: dict[str, Any]) -> None:
    """Make a generated schema say what the wire carries (``json_schema_extra`` hook).

    No additional properties; an optional property whose default is None (left out of the wire
    when None) loses its null branch and its default.
    """
    schema["additionalProperties"] = False
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or prop.get("default", ...) is not None:
            continue
        del prop["default"]
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1:
            prop.update(branches[0])
        elif branches:
            prop["anyOf"] = branches


class _WireModel(BaseModel):
    """A frozen payload model that drops its None-valued optional fields when dumped."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, json_schema_extra=exact_schema
    )

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Absent fields are left out, not written as null: what the client sends."""
        dumped = handler(self)
        if isinstance(dumped, dict):
            for name, info in type(self).model_fields.items():
                key = info.alias or name
                if not info.is_required() and dumped.get(key, "") is None:
                    del dumped[key]
        return dumped


class EnvelopeModel(_WireModel):
    """One event as it travels on the wire: metadata with fixed names around a JSON object."""

    model_config = ConfigDict(title="Envelope")

    id: str = Field(description=ENVELOPE_FIELDS["id"].description)
    type: str = Field(description=ENVELOPE_FIELDS["type"].description)
    ts: float = Field(description=ENVELOPE_FIELDS["ts"].description)
    source: str = Field(description=ENVELOPE_FIELDS["source"].description)
    correlate: str | None = Field(None, description=ENVELOPE_FIELDS["correlate"].description)
    data: dict[str, Any] = Field(description=ENVELOPE_FIELDS["data"].description)


class HealthStatus(_WireModel):
    """The ``data`` of a ``health.status`` envelope: is the service healthy, and why not."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    ok: bool
    """True when the service considers itself healthy."""
    event: str | None = None
    """What changed, in a word or two (``"ready"``, ``"offline"``...); left out when None."""
    error: str | None = Field(None, alias="err")
    """Why the service is unhealthy, for humans; left out when healthy. On the wire it is ``err``,
    the name the fleet's original ``HealthPing`` (``extra="forbid"``) reads; ``error`` is
    accepted too."""
    timestamp: float
    """When the status was produced, in Unix seconds."""


class HeartbeatPayload(_WireModel):
    """A heartbeat a client sends to itself through the broker."""

    ok: bool
    """Always true for a heartbeat the client sends."""
    event: str
    """Always ``"heartbeat"``."""
    timestamp: float
    """When the heartbeat was sent (the sender's clock), in seconds."""
