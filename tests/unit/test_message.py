"""Message: read-only, parsed lazily and at most once, never raising for a raw reader."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mqtt5 import PublishPacket, QoS

from tars.mqtt import Envelope, EnvelopeError, Message
from tars.mqtt._dedup import content_key
from tars.mqtt._envelope import encode_event


def message(payload: bytes, topic: str = "a/b", **options: object) -> Message:
    return Message(PublishPacket(topic, payload, **options))  # type: ignore[arg-type]


ENVELOPE = {"id": "m-1", "type": "t.x", "ts": 12.5, "source": "svc", "data": {"k": [1, 2]}}


def test_metadata_from_the_packet() -> None:
    packet = PublishPacket(
        "room/1/temp",
        b"21.5",
        qos=QoS.AT_LEAST_ONCE,
        retain=True,
        packet_id=7,
        user_properties=[("k", "v")],
    )
    msg = Message(packet)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("room/1/temp", b"21.5", 1, True)
    assert msg.packet is packet
    assert msg.packet.user_properties == [("k", "v")]


def test_read_only() -> None:
    msg = message(b"x")
    for name in ("topic", "payload", "qos", "retain", "envelope"):
        with pytest.raises(AttributeError):
            setattr(msg, name, None)
    with pytest.raises(AttributeError):
        msg.extra = 1  # type: ignore[attr-defined]


def test_json_and_envelope_are_parsed_once_and_shared() -> None:
    msg = message(orjson.dumps(ENVELOPE))
    first = msg.json()
    assert msg.json() is first
    env = msg.envelope
    assert msg.envelope is env
    assert isinstance(env, Envelope)
    assert (env.id, env.type, env.ts, env.source) == ("m-1", "t.x", 12.5, "svc")
    assert env.data == {"k": [1, 2]}
    assert env.correlate is None  # older producers leave it out
    assert msg.envelope_id == "m-1"


def test_envelope_with_correlate() -> None:
    msg = message(orjson.dumps({**ENVELOPE, "correlate": "req-9"}))
    assert msg.envelope.correlate == "req-9"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"",
        b"\xff\xfe\x00",
        b'{"id": "\xff"}',  # bad UTF-8 inside JSON
        b"[1, 2]",
        b'{"hello": "world"}',
        json.dumps({**ENVELOPE, "data": [1]}).encode(),  # data must be an object
        json.dumps({**ENVELOPE, "ts": "yesterday"}).encode(),
        json.dumps({k: v for k, v in ENVELOPE.items() if k != "type"}).encode(),
    ],
)
def test_not_an_envelope(payload: bytes) -> None:
    msg = message(payload)
    assert msg.payload == payload  # a raw reader is never bothered
    with pytest.raises(EnvelopeError) as first:
        _ = msg.envelope
    with pytest.raises(EnvelopeError) as second:
        _ = msg.envelope
    assert second.value is first.value  # the failure is cached too: parsed once


def test_json_error_is_an_envelope_error_and_cached() -> None:
    msg = message(b"{broken")
    with pytest.raises(EnvelopeError) as first:
        msg.json()
    with pytest.raises(EnvelopeError) as second:
        msg.json()
    assert second.value is first.value
    assert msg.envelope_id is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"id": "abc"}', "abc"),
        (b'{"id": 5}', None),
        (b'["id"]', None),
        (b"nope", None),
        (b'"id"', None),
    ],
)
def test_envelope_id_needs_only_a_string_id(payload: bytes, expected: str | None) -> None:
    assert message(payload).envelope_id == expected


def test_repr_does_not_show_the_payload() -> None:
    text = repr(message(b"secret-token-123", topic="t/x"))
    assert "secret-token-123" not in text
    assert "t/x" in text


@given(st.binary(max_size=200))
def test_any_payload_is_readable_without_surprises(payload: bytes) -> None:
    msg = message(payload)
    assert msg.payload == payload
    assert msg.envelope_id is None or isinstance(msg.envelope_id, str)
    try:
        env = msg.envelope
    except EnvelopeError:
        pass
    else:
        assert isinstance(env, Envelope)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(encode_event("t", {"k": 1}, source="s")[1], id="tars-core envelope"),
        pytest.param(json.dumps({"id": "abc", "type": "t"}).encode(), id="json.dumps spacing"),
        pytest.param(b'{"id":"caf\xc3\xa9","data":{}}', id="utf-8 id"),
        pytest.param(b'{"id":"a\\"b","data":{}}', id="escaped quote: full parse"),
        pytest.param(b'{"id":"a\\u00e9","data":{}}', id="unicode escape: full parse"),
        pytest.param(b'{"type":"t","id":"later"}', id="id not first: full parse"),
        pytest.param(b'{"id":7}', id="not a string"),
        pytest.param(b"not json", id="not json"),
    ],
)
def test_envelope_id_from_the_bytes_matches_the_full_parse(payload: bytes) -> None:
    fast = message(payload).envelope_id
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        parsed = None
    expected = parsed.get("id") if isinstance(parsed, dict) else None
    assert fast == (expected if isinstance(expected, str) else None)


def test_envelope_id_of_a_tars_envelope_parses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dedup asks for the id on arrival: a parse there would keep the parsed objects alive in
    # the queue until the handler runs (twice the garbage collector's work, measured).
    from tars.mqtt import _message

    calls: list[bytes] = []
    real = orjson.loads
    monkeypatch.setattr(_message.orjson, "loads", lambda b: calls.append(b) or real(b))
    msg_id, payload = encode_event("t", {"k": 1}, source="s")
    msg = message(payload)
    assert msg.envelope_id == msg_id
    assert calls == []
    assert msg.envelope.id == msg_id  # the handler's parse, once
    assert len(calls) == 1


# --- dedup_key: envelope_id's and content_key's fast paths in one ------------------------------


def _reference_key(payload: bytes) -> tuple[str, int] | None:
    """The key as envelope_id and content_key compute it, one after the other (the fused
    fast path must give the same, or redeliveries would be missed across versions)."""
    msg = message(payload)
    msg_id = msg.envelope_id
    return None if msg_id is None else content_key(payload, msg_id, msg.json)


_KEYED = [
    pytest.param(encode_event("t", {"k": 1}, source="s")[1], id="tars-core envelope"),
    pytest.param(encode_event("t", {"k": 1}, source="s", correlate="c-1")[1], id="with correlate"),
    pytest.param(b'{"id":"a","type":"t","ts":1,"source":"s","data":{}}', id="int ts"),
    pytest.param(b'{"id":"a","type":"t","ts":"x","source":"s","data":{}}', id="string ts"),
    pytest.param(b'{"id":"a","data":{"ts":1,"k":2},"ts":3}', id="ts inside data first"),
    pytest.param(b'{"id":"a","type":"t","ts":1.5}', id="ts last: no comma"),
    pytest.param(b'{"id":"a","type":"t"}', id="no ts"),
    pytest.param(b'{"id":"caf\xc3\xa9","ts":1,"data":{}}', id="utf-8 id"),
    pytest.param(b'{"id":"\xff\xfe","ts":1,"data":{}}', id="id not utf-8"),
    pytest.param(b'{"id":"a\\"b","ts":1,"data":{}}', id="escaped quote in the id"),
    pytest.param(b'{"id": "a", "ts": 1, "data": {}}', id="json.dumps spacing"),
    pytest.param(b'{"type":"t","id":"a","ts":1}', id="id not first"),
    pytest.param(b'{"id":"","ts":1}', id="empty id"),
    pytest.param(b'{"id":7,"ts":1}', id="id not a string"),
    pytest.param(b'{"id":"ts":1,"ts":2,"x":3}', id="an id that reads like the ts key"),
    pytest.param(b"not json", id="not json"),
]


@pytest.mark.parametrize("payload", _KEYED)
def test_dedup_key_is_the_key_envelope_id_and_content_key_give(payload: bytes) -> None:
    assert message(payload).dedup_key == _reference_key(payload)


_JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=4)  # no surrogates


@given(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\'), max_size=8),
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53), _JSON_TEXT
    ),
    st.dictionaries(_JSON_TEXT, st.integers(-(2**53), 2**53), max_size=3),
)
def test_dedup_key_agrees_on_generated_envelopes(
    msg_id: str, ts: float | int | str, data: dict[str, int]
) -> None:
    payload = orjson.dumps({"id": msg_id, "type": "t", "ts": ts, "source": "s", "data": data})
    assert message(payload).dedup_key == _reference_key(payload)


def test_a_retry_with_a_later_ts_has_the_same_key_and_other_content_does_not() -> None:
    def wire(ts: float, k: int) -> bytes:
        return orjson.dumps(
            {"id": "same-id", "type": "t", "ts": ts, "source": "s", "data": {"k": k}}
        )

    first, retry, other = wire(1.5, 1), wire(2.25, 1), wire(1.5, 2)
    assert message(first).dedup_key == message(retry).dedup_key
    assert message(first).dedup_key != message(other).dedup_key


@pytest.mark.parametrize(
    "payload", [b'{"id":"abc" garbage', b'{"id":"abc","ts":1 garbage', b'{"id":"abc",'], ids=str
)
def test_a_payload_that_starts_like_an_envelope_but_is_not_json_has_no_dedup_key(
    payload: bytes,
) -> None:
    """It used to raise EnvelopeError out of dedup_key (and so out of the subscription's
    offer(): the message was lost); it is simply not an envelope."""
    assert message(payload).dedup_key is None
