"""The events the bench sends: what a TARS speech service really publishes.

A small event is a ~200-byte JSON object (a transcript with per-word timings), the kind of
message the fleet exchanges most. A large event carries a text field sized so the JSON is
64 KiB. ``seq`` numbers each event so request/response can pair answers with questions.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["LARGE_BYTES", "large_event", "payload_size", "small_event"]

LARGE_BYTES = 64 * 1024

_SMALL: dict[str, Any] = {
    "text": "turn the kitchen lights to fifty percent",
    "confidence": 0.93,
    "lang": "en",
    "words": [
        {"w": "turn", "s": 0.12, "e": 0.31},
        {"w": "kitchen", "s": 0.4, "e": 0.78},
        {"w": "lights", "s": 0.8, "e": 1.1},
    ],
    "final": True,
}


def small_event(seq: int) -> dict[str, Any]:
    """A ~200-byte transcript event (a fresh dict, as a service would build one)."""
    return {"seq": seq, **_SMALL}


def _large_template() -> dict[str, Any]:
    probe = orjson.dumps({"seq": 0, "lang": "en", "text": ""})
    return {"lang": "en", "text": "x" * (LARGE_BYTES - len(probe) - 5)}


_LARGE = _large_template()


def large_event(seq: int) -> dict[str, Any]:
    """An event whose JSON is 64 KiB (give or take the digits of ``seq``)."""
    return {"seq": seq, **_LARGE}


def payload_size(event: dict[str, Any]) -> int:
    """Bytes of the raw JSON payload: the figure MB/s is computed from."""
    return len(orjson.dumps(event))
