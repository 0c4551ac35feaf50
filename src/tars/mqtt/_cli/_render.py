"""Pure text rendering for the CLI: one received message as a line or a JSON line.

No I/O and no clock here: every function takes what it shows (the receive time included), so
the formats are unit-tested without a broker and a terminal. Colour is an ANSI escape added by a
:class:`Style` only when the output is a terminal; piped output stays plain text.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "PLAIN",
    "Received",
    "Style",
    "classify",
    "envelope_line",
    "format_age",
    "json_line",
    "preview",
]

PREVIEW_CHARS = 80
"""Longest data preview on an envelope line; longer ones end with an ellipsis."""

_ENVELOPE_KEYS = frozenset({"id", "type", "ts", "source", "data"})


@dataclass(frozen=True)
class Style:
    """Colours for a terminal, or none (``PLAIN``) when the output is piped."""

    color: bool = False

    def _sgr(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def dim(self, text: str) -> str:
        """Secondary information (time, correlation)."""
        return self._sgr("2", text)

    def bold(self, text: str) -> str:
        """Headings and the event type."""
        return self._sgr("1", text)

    def good(self, text: str) -> str:
        """A healthy state."""
        return self._sgr("32", text)

    def warn(self, text: str) -> str:
        """Something to look at (stale, not an envelope)."""
        return self._sgr("33", text)

    def bad(self, text: str) -> str:
        """Unhealthy or offline."""
        return self._sgr("31", text)

    def topic(self, text: str) -> str:
        """The topic of a message."""
        return self._sgr("36", text)


PLAIN = Style(color=False)


@dataclass(frozen=True)
class Received:
    """One message as the CLI saw it: what it shows, decoded once."""

    time: float
    """Receive time, Unix seconds."""
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    kind: str = "binary"
    """``envelope``, ``json`` (JSON but not an envelope), ``text`` (UTF-8), ``binary``, or
    ``empty`` (no payload: what clears a retained message)."""
    value: Any = None
    """The parsed JSON (for ``envelope`` and ``json``), the text (``text``), else None."""


def classify(
    time_s: float, topic: str, payload: bytes, qos: int = 0, retain: bool = False
) -> Received:
    """Decode a payload as safely as possible: envelope, other JSON, text, or binary."""
    kind, value = "binary", None
    if not payload:  # e.g. clearing a retained message
        return Received(time_s, topic, payload, qos, retain, "empty", None)
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            value = payload.decode("utf-8")
        except UnicodeDecodeError:
            value = None
        else:
            kind = "text" if value.isprintable() or _mostly_printable(value) else "binary"
            if kind == "binary":
                value = None
    else:
        kind = "envelope" if _looks_like_envelope(value) else "json"
    return Received(time_s, topic, payload, qos, retain, kind, value)


def _looks_like_envelope(value: Any) -> bool:
    return (
        type(value) is dict
        and value.keys() >= _ENVELOPE_KEYS
        and isinstance(value["type"], str)
        and isinstance(value["source"], str)
        and isinstance(value["data"], dict)
    )


def _mostly_printable(text: str) -> bool:
    """Text with line breaks and tabs is still text; control bytes make it binary."""
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def _clock(time_s: float) -> str:
    """``HH:MM:SS.mmm`` in local time."""
    local = time.localtime(time_s)
    return time.strftime("%H:%M:%S", local) + f".{int(time_s * 1000) % 1000:03d}"


def _shorten(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _safe(text: str) -> str:
    """Escape control characters so a payload can never move the cursor or clear the screen."""
    if _mostly_printable(text) and "\x1b" not in text:
        return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text.encode("unicode_escape").decode("ascii")


def preview(received: Received, limit: int = PREVIEW_CHARS) -> str:
    """A one-line, terminal-safe view of the payload (of the data, for an envelope)."""
    if received.kind == "envelope":
        return _shorten(_safe(orjson.dumps(received.value["data"]).decode()), limit)
    if received.kind == "json":
        return _shorten(_safe(orjson.dumps(received.value).decode()), limit)
    if received.kind == "text":
        return _shorten(_safe(repr(received.value)), limit)
    if received.kind == "empty":
        return ""
    head = received.payload[: limit // 2].hex()
    more = "…" if len(received.payload) > limit // 2 else ""
    return f"{head}{more}"


def envelope_line(received: Received, style: Style = PLAIN) -> str:
    """One message on one line: time, topic, type, source, correlation, data preview.

    Non-envelopes show their kind in place of the type (``(json)``, ``(text)``,
    ``(binary 12 B)``) and ``-`` for source and correlation.
    """
    parts = [style.dim(_clock(received.time)), style.topic(_safe(received.topic))]
    if received.retain:
        parts.append(style.dim("[retained]"))
    if received.kind == "envelope":
        env = received.value
        correlate = env.get("correlate")
        parts += [
            style.bold(_safe(env["type"])),
            _safe(env["source"]),
            style.dim(f"re:{_safe(str(correlate))}" if correlate else "-"),
        ]
    else:
        label = f"({received.kind})"
        if received.kind == "binary":
            label = f"(binary {len(received.payload)} B)"
        parts += [style.warn(label), "-", "-"]
    parts.append(preview(received))
    return "  ".join(parts)


def json_line(received: Received) -> str:
    """One message as one JSON object (``--json``): envelopes whole, others by kind.

    Keys: ``time``, ``topic``, ``qos``, ``retain``, ``kind`` and then ``envelope`` (the decoded
    envelope), ``json`` (other JSON), ``text`` (UTF-8 text) or ``base64`` (binary); nothing
    more for ``empty``.
    """
    doc: dict[str, Any] = {
        "time": round(received.time, 6),
        "topic": received.topic,
        "qos": received.qos,
        "retain": received.retain,
        "kind": received.kind,
    }
    if received.kind == "envelope":
        doc["envelope"] = received.value
    elif received.kind == "json":
        doc["json"] = received.value
    elif received.kind == "text":
        doc["text"] = received.value
    elif received.kind == "binary":
        doc["base64"] = base64.b64encode(received.payload).decode("ascii")
    return orjson.dumps(doc).decode()


def format_age(seconds: float | None) -> str:
    """A short age: ``0.4s``, ``12s``, ``3m05s``, ``2h10m``; ``-`` for never."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
