"""The envelope codec: what goes on the wire, what comes back, and what is refused."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, RootModel, ValidationError

from tars.mqtt._envelope import (
    Envelope,
    decode_envelope,
    encode_event,
    envelope_from_json,
    new_id,
)
from tars.mqtt._errors import EnvelopeError


class Reading(BaseModel):
    sensor: str
    values_by_channel: dict[int, float]
    tags: set[str]
    taken_at: dt.datetime


class Wrapper(BaseModel):
    reading: Reading
    note: str | None = None


READING = Reading(
    sensor="mic-1",
    values_by_channel={0: 0.5, 1: -1.25},
    tags={"a"},
    taken_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
)


def _valid(**overrides: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": "id-1",
        "type": "stt.final",
        "ts": 1718000000.25,
        "source": "stt-worker",
        "correlate": None,
        "data": {"text": "hi"},
    }
    wire.update(overrides)
    return wire


# --- Envelope model ----------------------------------------------------------------------------


def test_envelope_fields_are_in_wire_order() -> None:
    assert list(Envelope.model_fields) == ["id", "type", "ts", "source", "correlate", "data"]


def test_envelope_is_frozen() -> None:
    env = decode_envelope(encode_event("a.b", {"x": 1}, source="s")[1])
    with pytest.raises(AttributeError, match="frozen"):
        env.type = "other"  # type: ignore[misc]


def test_an_envelope_copies_and_pickles() -> None:
    import copy
    import pickle

    env = decode_envelope(encode_event("a.b", {"x": [1]}, source="s", correlate="c")[1])
    for other in (copy.copy(env), copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        assert other == env
        assert other.model_fields_set == env.model_fields_set


def test_the_constructor_validates_with_pydantic() -> None:
    """Built by hand, an envelope is checked by its pydantic twin (loaded on that first use)."""
    assert Envelope(id="i", type="t", ts=1, source="s", data={}).ts == 1.0
    with pytest.raises(ValidationError, match="Envelope"):
        Envelope(id="i", type="t", ts="soon", source="s", data={})


def test_an_envelope_is_usable_as_a_field_of_a_pydantic_model() -> None:
    class Log(BaseModel):
        events: list[Envelope]

    env = decode_envelope(encode_event("a.b", {"x": 1}, source="s")[1])
    log = Log.model_validate({"events": [env, env.model_dump()]})
    assert log.events == [env, env]
    assert all(type(e) is Envelope for e in log.events)
    assert orjson.loads(log.model_dump_json())["events"][0] == env.model_dump()
    assert "Envelope" in str(Log.model_json_schema())


def test_every_field_is_documented() -> None:
    assert all(field.description for field in Envelope.model_fields.values())


# --- encode -> decode ----------------------------------------------------------------------------


def test_round_trip_of_a_flat_dict() -> None:
    before = time.time()
    msg_id, payload = encode_event("stt.final", {"text": "hi", "n": 3}, source="stt-worker")
    env = decode_envelope(payload)
    assert env.id == msg_id
    assert env.type == "stt.final"
    assert env.source == "stt-worker"
    assert env.correlate is None
    assert env.data == {"text": "hi", "n": 3}
    assert before <= env.ts <= time.time()


def test_an_uncorrelated_event_is_written_without_the_correlate_key() -> None:
    """Exactly the original fleet format, which its ``extra="forbid"`` parser accepts."""
    _, payload = encode_event("a.b", {}, source="s")
    assert list(orjson.loads(payload)) == ["id", "type", "ts", "source", "data"]


def test_a_correlated_event_has_correlate_before_data() -> None:
    _, payload = encode_event("a.b", {}, source="s", correlate="r-1")
    wire = orjson.loads(payload)
    assert list(wire) == ["id", "type", "ts", "source", "correlate", "data"]
    assert wire["correlate"] == "r-1"


def test_msg_id_reuses_a_given_id_as_the_original_format_correlates() -> None:
    msg_id, payload = encode_event("llm.stream", {"seq": 1}, source="s", msg_id="req-7")
    assert msg_id == "req-7"
    assert orjson.loads(payload)["id"] == "req-7"


def test_a_dumped_envelope_leaves_out_an_absent_correlate_only() -> None:
    plain = Envelope(id="i", type="t", ts=1.0, source="s", data={})
    answer = Envelope(id="i", type="t", ts=1.0, source="s", correlate="c", data={})
    assert "correlate" not in orjson.loads(plain.model_dump_json())
    assert "correlate" not in plain.model_dump()
    assert answer.model_dump()["correlate"] == "c"


def test_round_trip_of_nested_data_and_correlate() -> None:
    data = {"a": {"b": [1, 2.5, None, True, {"c": "d"}]}, "e": []}
    request_id, _ = encode_event("req", {}, source="s")
    msg_id, payload = encode_event("resp", data, source="s", correlate=request_id)
    env = decode_envelope(payload)
    assert env.data == data
    assert env.correlate == request_id
    assert msg_id != request_id


def test_model_data_uses_pydantic_json_mode() -> None:
    _, payload = encode_event("sensor.reading", READING, source="s")
    env = decode_envelope(payload)
    assert env.data == READING.model_dump(mode="json")
    assert Reading.model_validate(env.data) == READING


def test_mapping_data_with_int_keys_sets_datetimes_uuids_decimals_and_models() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    ident = uuid.UUID(int=7)
    data = {
        "by_id": {1: "one", 2: "two"},
        "flags": frozenset({"x"}),
        "ids": {3},
        "when": when,
        "who": ident,
        "price": Decimal("0.10"),
        "model": Wrapper(reading=READING),
        "view": MappingProxyType({"k": "v"}),
    }
    env = decode_envelope(encode_event("mixed", data, source="s")[1])
    assert env.data == {
        "by_id": {"1": "one", "2": "two"},
        "flags": ["x"],
        "ids": [3],
        "when": "2024-05-01T12:30:00+00:00",
        "who": str(ident),
        "price": "0.10",
        "model": Wrapper(reading=READING).model_dump(mode="json"),
        "view": {"k": "v"},
    }


def test_a_non_dict_mapping_is_accepted_as_data() -> None:
    data: Mapping[str, Any] = MappingProxyType({"k": 1})
    assert decode_envelope(encode_event("a", data, source="s")[1]).data == {"k": 1}


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None, (("k", "v"),)])
def test_data_that_is_not_a_mapping_or_model_is_a_type_error(data: Any) -> None:
    with pytest.raises(TypeError, match="Mapping or a pydantic BaseModel"):
        encode_event("a", data, source="s")


def test_a_root_model_that_is_not_an_object_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="JSON object"):
        encode_event("a", RootModel[list[int]]([1, 2]), source="s")


def test_unserializable_value_is_a_type_error_naming_the_event_and_the_type() -> None:
    with pytest.raises(TypeError, match=r"'a\.b'.*not JSON serializable: object"):
        encode_event("a.b", {"x": object()}, source="s")


def test_unserializable_value_under_an_int_key_is_still_a_type_error() -> None:
    data: dict[Any, Any] = {1: object()}
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_event("a.b", data, source="s")


def test_int_keys_at_the_top_level_become_strings() -> None:
    data: dict[Any, Any] = {1: "one", "two": 2}
    assert decode_envelope(encode_event("a", data, source="s")[1]).data == {"1": "one", "two": 2}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"i","type":"t","ts":1,"source":"s","correlate":null,"data":{}}',
        bytearray(b'{"id":"i","type":"t","ts":1,"source":"s","correlate":null,"data":{}}'),
        memoryview(b'{"id":"i","type":"t","ts":1,"source":"s","correlate":null,"data":{}}'),
        '{"id":"i","type":"t","ts":1,"source":"s","correlate":null,"data":{}}',
    ],
)
def test_decode_accepts_bytes_bytearray_memoryview_and_str(payload: Any) -> None:
    env = decode_envelope(payload)
    assert (env.id, env.type, env.source, env.data) == ("i", "t", "s", {})


def test_integer_ts_becomes_a_float() -> None:
    env = decode_envelope(orjson.dumps(_valid(ts=1718000000)))
    assert env.ts == 1718000000.0
    assert type(env.ts) is float


def test_older_envelope_without_correlate_is_accepted() -> None:
    wire = _valid()
    del wire["correlate"]
    env = decode_envelope(orjson.dumps(wire))
    assert env.correlate is None
    assert "correlate" not in env.model_fields_set


def test_extra_keys_are_ignored() -> None:
    env = decode_envelope(orjson.dumps(_valid(version=2, trace={"span": "x"})))
    assert env.model_dump() == {
        "id": "id-1",
        "type": "stt.final",
        "ts": 1718000000.25,
        "source": "stt-worker",
        "data": {"text": "hi"},
    }


def test_decoded_envelope_is_the_same_object_model_construct_builds() -> None:
    """Guards the hand-built instance against a pydantic upgrade that changes the recipe."""
    wire = _valid(correlate="c-1")
    fast = decode_envelope(orjson.dumps(wire))
    slow = Envelope.model_construct(**wire)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow)
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_copy(update={"type": "other"}).type == "other"
    assert Envelope.model_validate(fast.model_dump()) == fast


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param({k: v for k, v in _valid().items() if k != "correlate"}, id="usual: fast"),
        pytest.param(_valid(), id="correlate null"),
        pytest.param(_valid(correlate="c-1"), id="correlate set"),
        pytest.param({**_valid(ts=1718000000), "correlate": "c"}, id="int ts"),
        pytest.param(
            {"data": {"a": 1}, "source": "s", "ts": 2.5, "type": "t", "id": "x"}, id="key order"
        ),
        pytest.param({**_valid(), "extra": [1], "version": 2}, id="extra keys"),
    ],
)
def test_every_path_of_envelope_from_json_builds_what_model_construct_builds(
    wire: dict[str, Any],
) -> None:
    """The usual shape takes a shortcut: it must build the very object the checked path and
    model_construct build (fields, the fields given, repr, dump)."""
    fast = envelope_from_json(orjson.loads(orjson.dumps(wire)))
    known = {k: v for k, v in wire.items() if k in Envelope.model_fields}
    slow = Envelope.model_construct(**{**known, "ts": float(known["ts"])})
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow)
    assert fast.model_dump_json() == slow.model_dump_json()
    assert type(fast.ts) is float


def test_envelope_from_json_takes_an_already_parsed_object() -> None:
    env = envelope_from_json(_valid())
    assert (env.id, env.data) == ("id-1", {"text": "hi"})


# --- malformed payloads ------------------------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    wire = _valid()
    del wire[key]
    return wire


MALFORMED_SHAPES = {
    "array": [1, 2],
    "string": "hello",
    "number": 3,
    "null": None,
    "missing id": _without("id"),
    "missing type": _without("type"),
    "missing ts": _without("ts"),
    "missing source": _without("source"),
    "missing data": _without("data"),
    "int id": _valid(id=5),
    "null id": _valid(id=None),
    "list type": _valid(type=["a"]),
    "object source": _valid(source={"a": 1}),
    "string ts": _valid(ts="1718000000"),
    "bool ts": _valid(ts=True),
    "null ts": _valid(ts=None),
    "list data": _valid(data=[1]),
    "string data": _valid(data="x"),
    "null data": _valid(data=None),
    "int correlate": _valid(correlate=7),
    "object correlate": _valid(correlate={}),
}


@pytest.mark.parametrize("shape", list(MALFORMED_SHAPES.values()), ids=list(MALFORMED_SHAPES))
def test_malformed_shape_is_an_envelope_error(shape: Any) -> None:
    with pytest.raises(EnvelopeError, match="not a JSON envelope"):
        decode_envelope(orjson.dumps(shape))


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"not json", b'{"id": "a",}', b"\xff\xfe", b'{"id": "\xff"}', "\ud800", b"NaN"],
    ids=["empty", "truncated", "text", "trailing comma", "bad utf-8", "bad utf-8 in string",
         "lone surrogate", "NaN"],
)  # fmt: skip
def test_non_json_is_an_envelope_error(payload: Any) -> None:
    with pytest.raises(EnvelopeError, match="not a JSON envelope"):
        decode_envelope(payload)


def test_error_names_the_field_but_not_the_payload() -> None:
    payload = orjson.dumps(_valid(ts="2024", data={"password": "hunter2"}))
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(payload)
    assert "'ts'" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_envelope_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a JSON envelope"):
        decode_envelope(b"[]")


# --- hypothesis round trip -----------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@settings(deadline=None)
@given(
    data=st.dictionaries(st.text(), json_values, max_size=8),
    event_type=st.text(),
    source=st.text(),
    correlate=st.none() | st.text(),
)
def test_encode_then_decode_round_trips_any_json_object(
    data: dict[str, Any], event_type: str, source: str, correlate: str | None
) -> None:
    msg_id, payload = encode_event(event_type, data, source=source, correlate=correlate)
    env = decode_envelope(payload)
    assert env.data == data
    assert (env.id, env.type, env.source, env.correlate) == (msg_id, event_type, source, correlate)


# --- ids ---------------------------------------------------------------------------------------


def test_ids_are_unique_over_100k_calls() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)


def test_event_id_is_never_the_correlate() -> None:
    request_id, _ = encode_event("req", {}, source="s")
    reply_id, payload = encode_event("resp", {}, source="s", correlate=request_id)
    env = decode_envelope(payload)
    assert env.correlate == request_id
    assert env.id == reply_id != request_id


def test_id_is_a_url_safe_uuid7_carrying_the_creation_millisecond() -> None:
    before_ms = time.time_ns() // 1_000_000
    value = new_id()
    after_ms = time.time_ns() // 1_000_000
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before_ms <= parsed.int >> 80 <= after_ms


def test_ids_of_later_milliseconds_sort_later() -> None:
    first = new_id()
    start = time.monotonic()
    while time.monotonic() - start < 0.003:  # cross at least one millisecond boundary
        pass
    assert new_id()[:13] > first[:13]


def test_a_forked_child_draws_different_ids() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write_fd, "\n".join(new_id() for _ in range(1000)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child_ids = pipe.read().decode().split("\n")
    os.waitpid(pid, 0)
    parent_ids = [new_id() for _ in range(1000)]
    assert len(child_ids) == 1000
    assert not set(child_ids) & set(parent_ids)
    # The per-process part was redrawn, not inherited from the parent.
    assert {i[-12:] for i in child_ids}.isdisjoint({i[-12:] for i in parent_ids})


def test_the_counter_part_counts_up_by_one_across_formatted_blocks() -> None:
    """Ids are formatted a block at a time: consecutive ids still carry consecutive counts,
    the variant bits and the one node of this process, over several blocks."""
    ids = [uuid.UUID(new_id()) for _ in range(300)]
    counts = [(((u.int >> 64) & 0xFFF) << 14) | ((u.int >> 48) & 0x3FFF) for u in ids]
    assert all(b == (a + 1) % (1 << 26) for a, b in itertools.pairwise(counts))
    assert {(u.version, u.variant) for u in ids} == {(7, uuid.RFC_4122)}
    assert len({u.node for u in ids}) == 1


def test_new_id_tables_spell_the_counter_like_the_format_spec() -> None:
    from tars.mqtt import _envelope

    for count in (0, 1, 0x3FFF, 0x4000, 0x12345, (1 << 26) - 1):
        low = 0x8000 | (count & 0x3FFF)
        table = _envelope._HEX3_DASH[count >> 14] + _envelope._HEX2[low >> 8]
        table += _envelope._HEX2[low & 0xFF]
        assert table == f"{count >> 14:03x}-{low:04x}"
    uid = uuid.UUID(new_id())
    assert (uid.version, uid.variant) == (7, uuid.RFC_4122)
