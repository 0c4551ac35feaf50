"""The message a handler receives: topic, payload, QoS, retain flag, and a lazily parsed envelope.

One :class:`Message` is built per received PUBLISH and shared by every subscription it matches,
so the JSON is parsed at most once however many handlers (and the dedup window) look at it, and
the payload bytes are never copied after the codec produced them.

It is plain read-only data: whether its acknowledgement still waits for handlers is the
session's incoming part's business (:mod:`tars.mqtt._core.incoming`), not the message's.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from mqtt5 import PublishPacket, QoS

from ._argcheck import wrong_type
from ._dedup import content_key
from ._envelope import Envelope, envelope_from_json
from ._errors import EnvelopeError

__all__ = ["Message"]

_UNSET: Final[Any] = object()
# The codec's QoS members are singletons: `is` against them costs a third of int(packet.qos).
_AT_MOST_ONCE: Final = QoS.AT_MOST_ONCE
_AT_LEAST_ONCE: Final = QoS.AT_LEAST_ONCE


class Message:
    """A received MQTT message. Read-only.

    ``payload`` is the raw bytes; :meth:`json` and :attr:`envelope` parse them on first use and
    cache the result. ``packet`` is the codec's ``mqtt5.PublishPacket`` for the MQTT 5
    properties (``user_properties``, ``response_topic``, ``correlation_data``, ``content_type``,
    ``message_expiry_interval``...).
    """

    __slots__ = (
        "_envelope",
        "_json",
        "_packet",
        "_payload",
        "_qos",
        "_retain",
        "_topic",
    )

    def __init__(self, packet: PublishPacket) -> None:
        """Wrap a received ``mqtt5.PublishPacket`` (built by the client; by hand in tests).

        Raises :class:`~tars.mqtt.InvalidArgumentTypeError` when ``packet`` is not one.
        """
        self._packet = packet
        try:  # free on the receive path; only a wrong argument pays for the message
            self._topic: str = packet.topic
            self._payload: bytes = packet.payload
            qos = packet.qos
            self._qos = 0 if qos is _AT_MOST_ONCE else 1 if qos is _AT_LEAST_ONCE else int(qos)
            self._retain: bool = packet.retain
        except AttributeError:
            raise wrong_type("packet", packet, "an mqtt5.PublishPacket") from None
        self._json: Any = _UNSET
        self._envelope: Envelope | EnvelopeError | None = None

    @property
    def topic(self) -> str:
        """The topic the message was published on (not the filter it matched)."""
        return self._topic

    @property
    def payload(self) -> bytes:
        """The payload as received."""
        return self._payload

    @property
    def qos(self) -> int:
        """The QoS it was delivered with (the lower of publish and subscription QoS)."""
        return self._qos

    @property
    def retain(self) -> bool:
        """True when the broker sent a retained message (e.g. the last health status)."""
        return self._retain

    @property
    def packet(self) -> PublishPacket:
        """The underlying ``mqtt5.PublishPacket`` (MQTT 5 properties)."""
        return self._packet

    def json(self) -> Any:
        """The payload parsed as JSON (cached). Raises :class:`~tars.mqtt.EnvelopeError`."""
        value = self._json
        if value is _UNSET:
            value = self._json = _parse(self._payload)
        if isinstance(value, EnvelopeError):
            raise value
        return value

    @property
    def envelope(self) -> Envelope:
        """The payload as an :class:`~tars.mqtt.Envelope` (cached).

        Raises :class:`~tars.mqtt.EnvelopeError` when the payload is not JSON or not an envelope.
        """
        env = self._envelope
        if env is None:
            value = self._json
            if value is _UNSET:  # json()'s parse without json()'s raise and catch
                value = self._json = _parse(self._payload)
            if isinstance(value, EnvelopeError):
                env = value
            else:
                try:
                    env = envelope_from_json(value)
                except EnvelopeError as exc:
                    env = exc
            self._envelope = env
        if isinstance(env, EnvelopeError):
            raise env
        return env

    @property
    def envelope_id(self) -> str | None:
        """The envelope id when the payload is a JSON object with a string ``id``, else None.

        Dedup asks this of every message as it arrives. Envelopes written by tars-core (and by
        orjson or ``json.dumps`` from a dict with ``id`` first) start with ``{"id":"``: the id
        is then read from the bytes, with no parse and no object but the string, so the JSON is
        parsed later, by the handler, and its objects die young (a parse on arrival keeps them
        alive in the queue, which doubled the garbage collector's work). Anything else (other
        key order, escapes in the id) takes the full parse.
        """
        if self._json is _UNSET:
            payload = self._payload
            start = 7 if payload.startswith(b'{"id":"') else 0
            if not start and payload.startswith(b'{"id": "'):
                start = 8
            if start:
                end = payload.find(b'"', start)
                if end > start and payload.find(b"\\", start, end) < 0:
                    try:
                        return payload[start:end].decode()
                    except UnicodeDecodeError:
                        pass  # the full parse below says what it is
        try:
            value = self.json()
        except EnvelopeError:
            return None
        if type(value) is dict:
            eid = value.get("id")
            if type(eid) is str:
                return eid
        return None

    @property
    def dedup_key(self) -> tuple[str, int] | None:
        """What dedup remembers of this message: its envelope id plus a hash of all but ``ts``
        (see :func:`~tars.mqtt._dedup.content_key`), or None when it is not an envelope.

        The id alone would merge distinct messages of the original fleet format, which reuses
        one id for an answer, for the chunks of a stream and for a re-published state.
        """
        payload = self._payload
        if self._json is _UNSET and payload.startswith(b'{"id":"'):
            # envelope_id's and content_key's fast paths in one (every received event comes
            # here): the same checks, the same key, no call and no parse.
            end = payload.find(b'"', 7)
            if end > 7 and payload.find(b"\\", 7, end) < 0:
                at = payload.find(b'"ts":', 6)  # content_key's find: never before 6 here
                if at > 0:
                    start = at + 5
                    stop = payload.find(b",", start)
                    if (
                        stop > start
                        and payload.find(b'"', start, stop) < 0
                        and payload.find(b'"data":', 0, at) < 0
                    ):
                        try:
                            msg_id = payload[7:end].decode()
                        except UnicodeDecodeError:
                            pass  # the slow path says what it is
                        else:
                            return msg_id, hash(payload[:start] + payload[stop:])
        return self._slow_key()

    def _slow_key(self) -> tuple[str, int] | None:
        msg_id = self.envelope_id
        if msg_id is None:
            return None
        try:
            return content_key(self._payload, msg_id, self.json)
        except EnvelopeError:
            # It starts like an envelope (its id read from the bytes) but is not JSON: not an
            # envelope, nothing to remember. Raised, it escaped offer() and cost the message.
            return None

    def __repr__(self) -> str:
        return (
            f"<Message topic={self._topic!r} qos={self._qos} retain={self._retain} "
            f"payload={len(self._payload)} bytes>"
        )


def _parse(payload: bytes) -> Any:
    """The payload parsed, or the EnvelopeError to raise for it (cached as it is by the caller:
    a payload that is not JSON is parsed once, however often it is asked for)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return EnvelopeError(f"payload is not JSON: {exc}")
