"""The message line and JSON line of ``tars-mqtt sub``: pure functions, no broker."""

from __future__ import annotations

import base64
import json
import time

import orjson
import pytest

from tars.mqtt._cli._render import (
    PLAIN,
    Style,
    classify,
    envelope_line,
    format_age,
    json_line,
    preview,
)

T = time.mktime((2026, 12, 2, 9, 30, 5, 0, 0, -1)) + 0.25


def envelope(**changes: object) -> bytes:
    doc = {"id": "e1", "type": "stt.final", "ts": 1.0, "source": "stt", "data": {"text": "hi"}}
    return orjson.dumps({**doc, **changes})


def test_an_envelope_line_has_time_topic_type_source_correlation_and_data() -> None:
    line = envelope_line(classify(T, "stt/out", envelope(correlate="req-7")))
    assert line == '09:30:05.250  stt/out  stt.final  stt  re:req-7  {"text":"hi"}'


def test_an_envelope_without_correlation_shows_a_dash() -> None:
    assert envelope_line(classify(T, "t", envelope())).split("  ")[4] == "-"


def test_a_retained_message_says_so() -> None:
    line = envelope_line(classify(T, "t", envelope(), retain=True))
    assert line.split("  ")[2] == "[retained]"


@pytest.mark.parametrize(
    ("payload", "kind", "shown"),
    [
        (b'{"id": 1}', "(json)", '{"id":1}'),  # JSON, but not an envelope
        (b'{"type":"x","source":"s","data":[]}', "(json)", '{"type":"x","source":"s","data":[]}'),
        (b"21.5", "(json)", "21.5"),
        (b"on", "(text)", "'on'"),
        (b"two\nlines\ttab", "(text)", "'two\\nlines\\ttab'"),
        (b"\x1b[2Jboom", "(binary 8 B)", "1b5b324a626f6f6d"),  # escapes never reach the tty
        (b"\xff\xfe", "(binary 2 B)", "fffe"),
        (b"", "(empty)", ""),  # what clears a retained message
    ],
)
def test_other_payloads_are_shown_by_kind_and_safely(payload: bytes, kind: str, shown: str) -> None:
    cells = envelope_line(classify(T, "t", payload)).split("  ")
    assert cells[2:] == [kind, "-", "-", shown]


def test_control_characters_inside_json_strings_are_escaped() -> None:
    line = envelope_line(classify(T, "a\x1bb", envelope(type="x\x1b[31m", data={"k": "\x07"})))
    assert "\x1b" not in line
    assert "\x07" not in line


def test_a_long_preview_is_cut_with_an_ellipsis() -> None:
    received = classify(T, "t", envelope(data={"text": "x" * 500}))
    shown = preview(received)
    assert len(shown) == 80
    assert shown.endswith("…")


def test_a_long_binary_preview_is_cut_too() -> None:
    assert preview(classify(T, "t", bytes(1000))) == "00" * 40 + "…"


def test_json_lines_keep_everything() -> None:
    doc = json.loads(json_line(classify(T, "stt/out", envelope(), qos=1)))
    assert doc == {
        "time": round(T, 6),
        "topic": "stt/out",
        "qos": 1,
        "retain": False,
        "kind": "envelope",
        "envelope": json.loads(envelope()),
    }
    assert json.loads(json_line(classify(T, "t", b"hi")))["text"] == "hi"
    assert json.loads(json_line(classify(T, "t", b"[1]")))["json"] == [1]
    assert json.loads(json_line(classify(T, "t", b"")))["kind"] == "empty"
    raw = json.loads(json_line(classify(T, "t", b"\xff\x00")))
    assert base64.b64decode(raw["base64"]) == b"\xff\x00"


def test_colour_only_when_asked() -> None:
    received = classify(T, "t", envelope())
    assert "\x1b[" not in envelope_line(received, PLAIN)
    coloured = envelope_line(received, Style(color=True))
    assert "\x1b[1mstt.final\x1b[0m" in coloured


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-1, "0.0s"), (0.42, "0.4s"), (9.96, "10.0s"), (12.7, "12s"),
     (185, "3m05s"), (7800, "2h10m")],
)  # fmt: skip
def test_ages_are_short(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text
