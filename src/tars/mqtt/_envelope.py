"""The event envelope: its model, its ids, and the fast codec every event goes through.

An envelope is the JSON object every TARS service publishes::

    {"id": "...", "type": "stt.final", "ts": 1718000000.25, "source": "stt-worker",
     "data": {...}}

plus ``"correlate": "<id>"`` when the event answers another one. The key is left out, not
written as null, when there is nothing to correlate: the fleet's original client parses
envelopes with ``extra="forbid"`` over ``{id, type, ts, source, data}``, so an uncorrelated event
of tars-core is exactly an envelope of the original format. The original format carries
correlation in the id itself (an answer or a stream chunk reuses the request's id); see
:func:`encode_event`'s ``msg_id`` and docs/migration-original.md.

Every published and received event passes through :func:`encode_event` or
:func:`decode_envelope`, so both skip pydantic: encoding builds the wire dict and hands it to
orjson directly, decoding checks the shape by hand and builds the frozen :class:`Envelope`.

:class:`Envelope` is a plain frozen class, not a pydantic model: a service's start (and its first
received event) would otherwise pay for importing pydantic (about 60 ms and 10 MB, see the start-up
rows of bench/RESULTS.md). It keeps the model's surface (``model_dump``, ``model_dump_json``,
``model_validate``, ``model_copy``, ``model_fields``, ``model_json_schema``...) and is usable as a
field of a pydantic model; whatever validates input (the constructor, ``model_validate``) goes
through the pydantic twin in :mod:`tars.mqtt._models`, imported on that first use, so its errors
are pydantic's ``ValidationError`` as before.
"""

from __future__ import annotations

import itertools
import operator
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tars.mqtt._argcheck import wrong_type
from tars.mqtt._envelope_fields import ENVELOPE_FIELDS, FieldDoc
from tars.mqtt._errors import EnvelopeError, InvalidArgumentTypeError

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "ENVELOPE_FIELDS",
    "Envelope",
    "FieldDoc",
    "decode_envelope",
    "encode_event",
    "envelope_from_json",
    "new_id",
]


_ALL_FIELDS = frozenset(ENVELOPE_FIELDS)
_FIELDS_WITHOUT_CORRELATE = _ALL_FIELDS - {"correlate"}
_new_instance = object.__new__
_REQUIRED = operator.itemgetter("id", "type", "ts", "source", "data")
_USUAL_TYPES = (str, str, float, str, dict)
_set_attr = object.__setattr__


class Envelope:
    """One event as it travels on the wire: metadata with fixed names around a JSON object.

    Frozen, because a received event may be handed to several handlers and none of them may
    change what the others see. Build one with keywords (``Envelope(id=..., type=..., ts=...,
    source=..., data=...)``), validated as the pydantic model did (``pydantic.ValidationError``).

    Attributes: ``id``, ``type``, ``ts``, ``source``, ``correlate`` (None when absent),
    ``data`` (see :data:`ENVELOPE_FIELDS`).
    """

    __slots__ = ("__dict__", "_fields_set")

    model_fields: ClassVar[dict[str, FieldDoc]] = ENVELOPE_FIELDS

    if TYPE_CHECKING:
        id: str
        type: str
        ts: float
        source: str
        correlate: str | None
        data: dict[str, Any]
        _fields_set: frozenset[str]

    def __init__(
        self,
        *,
        id: str,
        type: str,
        ts: float,
        source: str,
        correlate: str | None = None,
        data: dict[str, Any],
    ) -> None:
        from tars.mqtt._models import EnvelopeModel

        given: dict[str, Any] = {"id": id, "type": type, "ts": ts, "source": source, "data": data}
        if correlate is not None:
            given["correlate"] = correlate
        model = EnvelopeModel(**given)
        _fill(self, dict(model), "correlate" in model.model_fields_set)

    @classmethod
    def model_construct(cls, **values: Any) -> Envelope:
        """An envelope from trusted values, unchecked (as pydantic's ``model_construct``)."""
        correlate_given = "correlate" in values
        values.setdefault("correlate", None)
        return _fill(_new_instance(cls), values, correlate_given)

    @classmethod
    def model_validate(cls, obj: Any) -> Envelope:
        """Validate a mapping (or an envelope) with pydantic; raises its ``ValidationError``."""
        if isinstance(obj, Envelope):
            return obj
        from tars.mqtt._models import EnvelopeModel

        model = EnvelopeModel.model_validate(obj)
        return _fill(_new_instance(cls), dict(model), "correlate" in model.model_fields_set)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray) -> Envelope:
        """Validate JSON text with pydantic; raises its ``ValidationError``."""
        from tars.mqtt._models import EnvelopeModel

        model = EnvelopeModel.model_validate_json(json_data)
        return _fill(_new_instance(cls), dict(model), "correlate" in model.model_fields_set)

    @classmethod
    def model_json_schema(cls, **kwargs: Any) -> dict[str, Any]:
        """The JSON Schema of the pydantic twin (what ``schemas/envelope.schema.json`` holds)."""
        from tars.mqtt._models import EnvelopeModel

        return EnvelopeModel.model_json_schema(**kwargs)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Let a pydantic model have an ``Envelope`` field: validated by the twin, dumped as the
        wire dict."""
        from pydantic_core import core_schema

        from tars.mqtt._models import EnvelopeModel

        from_model = core_schema.no_info_after_validator_function(
            lambda model: _fill(
                _new_instance(cls), dict(model), "correlate" in model.model_fields_set
            ),
            handler.generate_schema(EnvelopeModel),
        )
        return core_schema.union_schema(
            [core_schema.is_instance_schema(cls), from_model],
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda env: env.model_dump()
            ),
        )

    @property
    def model_fields_set(self) -> frozenset[str]:
        """The fields the envelope was given (``correlate`` only when its key was present)."""
        return self._fields_set

    def model_dump(self, *, mode: str = "python", **kwargs: Any) -> dict[str, Any]:
        """The wire dict: ``correlate`` left out when None. Other pydantic options (``include``,
        ``exclude``...) go through the pydantic twin."""
        if kwargs:
            return self._as_model().model_dump(mode=mode, **kwargs)
        dumped = dict(self.__dict__)
        if dumped["correlate"] is None:
            del dumped["correlate"]
        if mode == "json":
            return orjson.loads(orjson.dumps(dumped, default=_default))  # type: ignore[no-any-return]
        return dumped

    def model_dump_json(self, **kwargs: Any) -> str:
        """The wire JSON (compact, as sent), ``correlate`` left out when None."""
        if kwargs:
            return self._as_model().model_dump_json(**kwargs)
        return orjson.dumps(self.model_dump(), default=_default).decode()

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Envelope:
        """A copy with ``update`` applied, unchecked (as pydantic's ``model_copy``)."""
        values = {**self.__dict__, **(update or {})}
        given = "correlate" in self._fields_set or "correlate" in (update or {})
        return _fill(_new_instance(type(self)), values, given)

    def _as_model(self) -> BaseModel:
        from tars.mqtt._models import EnvelopeModel

        return EnvelopeModel.model_construct(_fields_set=set(self._fields_set), **self.__dict__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{name}: an Envelope is frozen; use model_copy(update={{...}})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{name}: an Envelope is frozen; use model_copy(update={{...}})")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"Envelope({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy through :func:`_fill` (the frozen ``__setattr__`` refuses state)."""
        return (_rebuild, (type(self), dict(self.__dict__), "correlate" in self._fields_set))


def _rebuild(cls: type[Envelope], values: dict[str, Any], correlate_given: bool) -> Envelope:
    return _fill(_new_instance(cls), values, correlate_given)


def _fill(envelope: Envelope, values: Mapping[str, Any], correlate_given: bool) -> Envelope:
    _set_attr(
        envelope,
        "__dict__",
        {
            "id": values["id"],
            "type": values["type"],
            "ts": values["ts"],
            "source": values["source"],
            "correlate": values["correlate"],
            "data": values["data"],
        },
    )
    _set_attr(
        envelope, "_fields_set", _ALL_FIELDS if correlate_given else _FIELDS_WITHOUT_CORRELATE
    )
    return envelope


def _pydantic_model(obj: object) -> bool:
    """Whether ``obj`` is a pydantic model, without importing pydantic: if nothing imported it,
    no object can be one."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(obj, pydantic.BaseModel)


# --- ids -----------------------------------------------------------------------------------------
#
# new_id() returns a UUIDv7 string (RFC 9562, "method 1": a dedicated counter): 48 bits of Unix
# milliseconds, a 26-bit counter split around the variant bits, and a 48-bit random node fixed per
# process. The counter makes ids unique within a process without drawing randomness per call; the
# node makes them unique across processes; the timestamp makes them sort by creation time and
# keeps them readable as UUIDs by consumers that parse the seed's uuid4 ids. Only the counter part
# is formatted per call: the millisecond prefix is cached and the node is preformatted.

_COUNTER_MASK = (1 << 26) - 1
# Built by concatenation, not formatting: the same strings (test_envelope pins them) at a fifth
# of the import cost (4,096 f-strings took ~4 ms of every service's start on a loaded machine).
_HEX = "0123456789abcdef"
_HEX2 = [high + low for high in _HEX for low in _HEX]
_HEX2_DASH = [pair + "-" for pair in _HEX2]
_HEX3_DASH = [digit + pair for digit in _HEX for pair in _HEX2_DASH]
_node_suffix = ""
_counter: itertools.count[int] = itertools.count()
# (millisecond, formatted prefix) as one tuple, so a thread never pairs one with the other's twin.
_ms_prefix: tuple[int, str] = (-1, "")


def _reseed() -> None:
    """Draw a fresh node and counter start; runs at import and in every forked child."""
    global _node_suffix, _counter
    rnd = int.from_bytes(os.urandom(10), "big")
    _node_suffix = f"-{rnd & 0xFFFF_FFFF_FFFF:012x}"
    _counter = itertools.count(rnd >> 54)


_reseed()
os.register_at_fork(after_in_child=_reseed)
_time_ns = time.time_ns


def new_id() -> str:
    """Return a new message id: a UUIDv7 string, unique across calls, processes and forks.

    About five times cheaper than ``str(uuid.uuid4())`` because it needs no system randomness
    per call. URL-safe (lowercase hex and dashes).
    """
    global _ms_prefix
    ms = _time_ns() // 1_000_000
    cached_ms, prefix = _ms_prefix
    if ms != cached_ms:
        prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
        _ms_prefix = (ms, prefix)
    count = next(_counter) & _COUNTER_MASK
    low = 0x8000 | (count & 0x3FFF)  # the variant bits, then 14 bits of the counter
    # Table lookups instead of two hex format specs: half the cost of the f-string, the same
    # text (test_envelope pins it to f"{count >> 14:03x}-{low:04x}").
    return prefix + _HEX3_DASH[count >> 14] + _HEX2[low >> 8] + _HEX2[low & 0xFF] + _node_suffix


# --- encoding ------------------------------------------------------------------------------------


def _default(obj: Any) -> Any:
    """Turn the values orjson does not know into JSON (orjson calls this only for those).

    Sets become lists (in iteration order); Decimals become strings, as pydantic's JSON mode does,
    so no precision is lost on the way; nested models and non-dict mappings are dumped like the
    top-level data.
    """
    if isinstance(obj, set | frozenset):
        return list(obj)
    decimal = sys.modules.get("decimal")  # not imported: ``obj`` cannot be a Decimal
    if decimal is not None and isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, Envelope):
        return obj.model_dump()
    if _pydantic_model(obj):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"type {type(obj).__name__} is not JSON serializable")


def _model_data(model: BaseModel) -> orjson.Fragment:
    """Serialize a model's data with pydantic's own JSON mode (ints as keys, sets, datetimes...).

    ``model_dump_json`` produces the same JSON as ``model_dump(mode="json")`` without building
    the intermediate dicts; orjson then embeds it as is.
    """
    from pydantic import BaseModel, RootModel  # loaded already: ``model`` is one

    if isinstance(model, RootModel) and not isinstance(model.root, Mapping | BaseModel):
        raise InvalidArgumentTypeError(
            f"event data must serialize to a JSON object, got a {type(model).__name__} "
            f"wrapping {type(model.root).__name__}"
        )
    return orjson.Fragment(model.model_dump_json())


def encode_event(
    event_type: str,
    data: Mapping[str, Any] | BaseModel,
    *,
    source: str,
    correlate: str | None = None,
    msg_id: str | None = None,
) -> tuple[str, bytes]:
    """Build the wire bytes of a new event and return ``(id, payload)``.

    ``data`` is a mapping (int keys, datetimes, UUIDs, sets, Decimals and nested models are
    accepted) or a pydantic model (serialized in pydantic's JSON mode). ``correlate`` is the id
    of the event this one answers; when None the ``correlate`` key is not written at all.
    ``msg_id`` replaces the fresh id: the original fleet format correlates by reusing the
    request's id (``msg_id=request_id`` and no ``correlate``). No :class:`Envelope` is built:
    this is the publish hot path.

    Raises:
        InvalidArgumentTypeError: ``event_type``, ``correlate`` or ``msg_id`` is not a ``str``
            (a receiver would refuse the envelope), or ``data`` is neither a mapping nor a
            model, or holds a value that cannot be written as JSON. Nothing is sent then.
    """
    # `type(x) is str` first: the common case costs one comparison on this hot path.
    if type(event_type) is not str and not isinstance(event_type, str):
        raise wrong_type("event_type", event_type, "a str")
    if correlate is not None and type(correlate) is not str and not isinstance(correlate, str):
        raise wrong_type("correlation_id", correlate, "a str")
    if msg_id is not None and type(msg_id) is not str and not isinstance(msg_id, str):
        # The original format sends the correlation id as the id.
        raise wrong_type("correlation_id", msg_id, "a str")
    if type(data) is dict:  # the common case first: isinstance(x, BaseModel) costs an ABC check
        body: Any = data
    elif _pydantic_model(data):
        body = _model_data(data)  # type: ignore[arg-type]
    elif isinstance(data, dict):
        body = data
    elif isinstance(data, Mapping):
        body = dict(data)
    else:
        raise wrong_type("data", data, "a Mapping or a pydantic BaseModel")
    if msg_id is None:
        msg_id = new_id()
    wire: dict[str, Any]
    if correlate is None:
        wire = {"id": msg_id, "type": event_type, "ts": time.time(), "source": source, "data": body}
    else:
        wire = {
            "id": msg_id,
            "type": event_type,
            "ts": time.time(),
            "source": source,
            "correlate": correlate,
            "data": body,
        }
    try:
        payload = orjson.dumps(wire, default=_default)
    except orjson.JSONEncodeError:
        # Most likely a non-str key; the option that allows those is measurably slower, so it is
        # only paid for the payloads that need it.
        try:
            payload = orjson.dumps(wire, default=_default, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError as exc:
            raise InvalidArgumentTypeError(
                f"cannot encode data of event {event_type!r} as JSON: {exc}"
            ) from exc
    return msg_id, payload


# --- decoding ------------------------------------------------------------------------------------
#
# envelope_from_json builds the Envelope directly (a bare instance and its attribute dict set at
# once), which measured faster than any constructor call; tests/unit/test_envelope.py checks it
# builds the same object as Envelope.model_construct.


def decode_envelope(payload: bytes | bytearray | memoryview | str) -> Envelope:
    """Parse wire bytes into a frozen :class:`Envelope`.

    orjson parses (strict JSON: no NaN, valid UTF-8 only), then :func:`envelope_from_json`
    checks the shape.

    Raises:
        EnvelopeError: the payload is not UTF-8 JSON or not an envelope; the message says which
            check failed, never the whole payload.
        InvalidArgumentTypeError: ``payload`` is not bytes, bytearray, memoryview or str (a
            bug of the caller, not bad data: checked only once orjson refused it).
    """
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if not isinstance(payload, bytes | bytearray | memoryview | str):
            raise wrong_type("payload", payload, "bytes, bytearray, memoryview or str") from None
        raise EnvelopeError(f"not a JSON envelope: {exc.msg} (at {exc.pos})") from exc
    return envelope_from_json(obj)


def envelope_from_json(obj: object) -> Envelope:
    """Build an :class:`Envelope` from an already-parsed JSON value (one parse per message).

    The shape is checked by hand (an object; ``id``, ``type``, ``source`` strings; ``ts`` a
    number, not a boolean; ``data`` an object; ``correlate`` a string, null or absent) instead
    of running pydantic validation, because every received event comes through here. An
    integer ``ts`` is stored as a float. Extra keys are ignored, so newer producers can add
    fields.

    Raises:
        EnvelopeError: ``obj`` does not have the envelope's shape.
    """
    if type(obj) is not dict:
        raise EnvelopeError(f"not a JSON envelope: expected an object, got {_json_type(obj)}")
    # Every received event comes here: the usual shape (the five fields, a float ts, no
    # correlate) is checked in a few C calls; anything else field by field, to say what is wrong.
    try:
        values = _REQUIRED(obj)
    except KeyError:
        values = None
    if values is not None and tuple(map(type, values)) == _USUAL_TYPES and "correlate" not in obj:
        msg_id, event_type, ts, source, data = values
        correlate = None
    else:
        msg_id = obj.get("id")
        event_type = obj.get("type")
        source = obj.get("source")
        ts = obj.get("ts")
        data = obj.get("data")
        correlate = obj.get("correlate")
        if type(msg_id) is not str:
            raise EnvelopeError(_field_problem("id", "a string", msg_id))
        if type(event_type) is not str:
            raise EnvelopeError(_field_problem("type", "a string", event_type))
        if type(source) is not str:
            raise EnvelopeError(_field_problem("source", "a string", source))
        if type(ts) is float:
            pass
        elif type(ts) is int:
            ts = float(ts)
        else:
            raise EnvelopeError(_field_problem("ts", "a number", ts))
        if type(data) is not dict:
            raise EnvelopeError(_field_problem("data", "an object", data))
        if correlate is not None and type(correlate) is not str:
            raise EnvelopeError(_field_problem("correlate", "a string or null", correlate))
    envelope = _new_instance(Envelope)
    _set_attr(
        envelope,
        "__dict__",
        {
            "id": msg_id,
            "type": event_type,
            "ts": ts,
            "source": source,
            "correlate": correlate,
            "data": data,
        },
    )
    _set_attr(
        envelope, "_fields_set", _ALL_FIELDS if "correlate" in obj else _FIELDS_WITHOUT_CORRELATE
    )
    return envelope


def _field_problem(field: str, expected: str, value: object) -> str:
    """Say what is wrong with one field, naming the JSON type found rather than the value."""
    found = "missing or null" if value is None else f"got {_json_type(value)}"
    return f"not a JSON envelope: {field!r} must be {expected} ({found})"


def _json_type(value: object) -> str:
    """Name the JSON type of a parsed value, for error messages that must not echo payloads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
