"""The envelope's fields and what each one means: shared by :class:`~tars.mqtt.Envelope` (its
``model_fields``) and its pydantic twin (:mod:`tars.mqtt._models`), which the JSON schema is
generated from, so the descriptions are written once."""

from __future__ import annotations

from typing import Any

__all__ = ["ENVELOPE_FIELDS", "FieldDoc"]


class FieldDoc:
    """What ``Envelope.model_fields[name]`` says of a field (pydantic's ``FieldInfo`` shape)."""

    __slots__ = ("annotation", "default", "description")

    def __init__(self, annotation: Any, description: str, default: Any = ...) -> None:
        self.annotation, self.description, self.default = annotation, description, default

    def is_required(self) -> bool:
        """True for every field but ``correlate``."""
        return self.default is ...


ENVELOPE_FIELDS: dict[str, FieldDoc] = {
    "id": FieldDoc(
        str,
        "Unique per message (see :func:`new_id`), except in the original fleet format, where an "
        "answer and the chunks of a stream reuse the id of the request they belong to.",
    ),
    "type": FieldDoc(
        str, 'What happened, as a dotted name (``"stt.final"``); consumers dispatch on it.'
    ),
    "ts": FieldDoc(float, "When the producer built the event, in Unix seconds."),
    "source": FieldDoc(str, "Who produced the event (the producing client's id or service name)."),
    "correlate": FieldDoc(
        str | None,
        "The ``id`` of the event this one answers; the key is left out on the wire when there "
        "is none (read as None). The original fleet format never writes it.",
        None,
    ),
    "data": FieldDoc(dict[str, Any], "The event's own payload, a JSON object."),
}
"""The envelope's fields in wire order, with their descriptions (the schema's too)."""
