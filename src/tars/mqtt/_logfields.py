"""The ``extra`` fields of the library's log lines, so a log pipeline can search by them.

A WARNING or ERROR about a message carries ``client_id``, ``topic``, ``envelope_id``,
``correlation_id`` and, from a subscription, ``topic_filter``; one about the link carries
``client_id`` and ``broker`` (a redacted URL: never a password). A JSON log formatter (or
``logging.Formatter("%(client_id)s ...")``) reads them as attributes of the record. Fields that
are unknown are None rather than absent, so a format string that names them never fails.

Built only when a line is logged: reading the correlation id may parse the payload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import EnvelopeError

if TYPE_CHECKING:
    from ._message import Message

__all__ = ["link_fields", "message_fields"]


def message_fields(client_id: str, msg: Message, topic_filter: str | None = None) -> dict[str, Any]:
    """Fields of a line about ``msg`` (received by ``client_id``, through ``topic_filter``)."""
    return {
        "client_id": client_id or None,
        "topic": msg.topic,
        "topic_filter": topic_filter,
        "envelope_id": msg.envelope_id,
        "correlation_id": _correlation_id(msg),
    }


def link_fields(client_id: str, broker: str) -> dict[str, Any]:
    """Fields of a line about the link of ``client_id`` to ``broker`` (a redacted URL)."""
    return {"client_id": client_id, "broker": broker}


def _correlation_id(msg: Message) -> str | None:
    """The envelope's ``correlate``, else the MQTT 5 correlation data (what request() sends)."""
    if msg.envelope_id is not None:
        try:
            correlate = msg.json().get("correlate")
        except EnvelopeError:  # starts like an envelope, is not JSON
            correlate = None
        if isinstance(correlate, str):
            return correlate
    data = msg.packet.correlation_data
    if data:
        try:
            return bytes(data).decode()
        except UnicodeDecodeError:
            return bytes(data).hex()
    return None
