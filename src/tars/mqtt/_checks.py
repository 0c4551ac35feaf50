"""The checks every publish passes before anything is queued, so a bad call fails itself and
never a later flush of the outbox on some reconnect."""

from __future__ import annotations

from typing import Any, Final

from mqtt5 import PublishPacket

from ._argcheck import wrong_type
from ._errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidTopicError,
    MQTTError,
    PayloadTooLarge,
)
from ._properties import malformed_property
from ._topics import validate_topic_name

__all__ = ["PUBLISH_PROPERTIES", "PublishCheck", "check_properties", "unsendable"]

_TOPIC_CACHE: Final = 4096

PUBLISH_PROPERTIES: Final = frozenset(
    {
        "payload_format_indicator",
        "message_expiry_interval",
        "content_type",
        "response_topic",
        "correlation_data",
        "user_properties",
    }
)
"""The MQTT 5 PUBLISH properties a caller may set (MQTT 5 section 3.3.2.3).

The codec's ``mqtt5.PublishPacket`` takes more keywords, and passing them through would make
them ours to send or crash on: ``qos`` and ``retain`` are publish's own arguments (as
properties they reached the codec twice, a bare ``TypeError`` inside the link's callback when a
queued message was sent); ``packet_id``, ``duplicate`` and ``topic_alias`` belong to the
session; ``subscription_ids`` are the broker's alone (3.3.4 forbids them in a client's
PUBLISH)."""

# Why a key outside PUBLISH_PROPERTIES is not the caller's, for the message.
_WHOSE: Final = {
    "qos": "an argument of publish(), not a property",
    "retain": "an argument of publish(), not a property",
    "packet_id": "set by the session",
    "duplicate": "set by the session",
    "topic_alias": "set by the session",
    "subscription_ids": "the broker's alone: MQTT 5 section 3.3.4",
}


class PublishCheck:
    """Topic, payload type, QoS, size and MQTT 5 properties of one publish call."""

    __slots__ = ("_max_payload", "_valid_topics")

    def __init__(self, max_payload: int) -> None:
        self._max_payload = max_payload
        self._valid_topics: dict[str, None] = {}  # topics already validated (a bounded cache)

    def __call__(
        self,
        topic: str,
        payload: bytes | str,
        qos: int,
        properties: dict[str, Any] | None,
        retain: bool = False,
        wait: bool = True,
    ) -> bytes:
        """Return the payload as bytes, or raise :class:`~tars.mqtt.InvalidTopicError`,
        :class:`~tars.mqtt.PayloadTooLarge`, :class:`~tars.mqtt.InvalidArgumentTypeError` (an
        argument of the wrong type) or :class:`~tars.mqtt.InvalidArgumentError`."""
        # One check per argument, cheapest first; the messages are built only on failure.
        if type(topic) is not str and not isinstance(topic, str):
            raise wrong_type("topic", topic, "a str")
        if type(qos) is not int and not isinstance(qos, int):
            raise wrong_type("qos", qos, "an int (0, 1 or 2)")
        if retain is not False and retain is not True:
            raise wrong_type("retain", retain, "a bool")
        if wait is not True and wait is not False:
            raise wrong_type("wait", wait, "a bool")
        if topic not in self._valid_topics:
            validate_topic_name(topic)
            _remember(self._valid_topics, topic)
        if properties is not None:
            # A publish without properties pays this one comparison, nothing more.
            if not isinstance(properties, dict):
                raise wrong_type("properties", properties, "a dict or None")
            if properties:
                check_properties(topic, properties, self._valid_topics)
        if type(payload) is not bytes:
            if isinstance(payload, str):
                payload = payload.encode()
            elif isinstance(payload, bytearray | memoryview):
                payload = bytes(payload)
            else:
                raise InvalidArgumentTypeError(
                    f"payload must be bytes or str, not {type(payload).__name__}"
                )
        if qos != 0 and qos != 1 and qos != 2:
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, not {qos!r}")
        if len(payload) > self._max_payload:
            raise PayloadTooLarge(len(payload), self._max_payload)
        return payload


def check_properties(
    topic: str, properties: dict[str, Any], valid_topics: dict[str, None] | None = None
) -> None:
    """Refuse MQTT 5 PUBLISH properties (of a publish to the valid ``topic``) that the codec
    cannot write or that a broker may call a malformed packet (see :mod:`._properties`).

    ``valid_topics`` is the caller's cache of valid topic names: a response topic is one, and a
    service sends its requests with the same one again and again.

    Raises:
        InvalidTopicError: ``response_topic`` breaks the rules of a topic name.
        InvalidArgumentTypeError: a key outside :data:`PUBLISH_PROPERTIES` (named, its value
            not shown), or a property of the wrong type or shape.
        InvalidArgumentError: ``content_type`` or a user property's name or value holds a
            control character or a Unicode non-character (named, its value not shown), an
            int property is out of its range, or ``payload_format_indicator`` is not 0 or 1.
    """
    if not PUBLISH_PROPERTIES.issuperset(properties):
        raise _not_settable(properties)
    response_topic = properties.get("response_topic")
    # Another type: the codec says so below.
    if type(response_topic) is str and (valid_topics is None or response_topic not in valid_topics):
        try:
            validate_topic_name(response_topic)
        except InvalidTopicError as exc:
            raise InvalidTopicError(
                response_topic, f"(the response_topic property) {exc.reason}"
            ) from None
        if valid_topics is not None:
            _remember(valid_topics, response_topic)
    try:
        PublishPacket(topic, b"", **properties)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentTypeError(f"invalid MQTT 5 publish properties: {exc}") from None
    except OverflowError:  # the codec's words name no property
        raise InvalidArgumentError(
            "publish refused: an int property (message_expiry_interval, "
            "payload_format_indicator) is out of the range its MQTT 5 field can carry"
        ) from None
    if properties.get("payload_format_indicator", 0) not in (0, 1):
        # MQTT 5 3.3.2.3.2 defines 0 (bytes) and 1 (UTF-8) only; a broker may end the link.
        raise InvalidArgumentError(
            "publish refused: payload_format_indicator must be 0 (bytes) or 1 (UTF-8 text)"
        )
    reason = malformed_property(
        properties.get("content_type"), None, properties.get("user_properties")
    )
    if reason is not None:
        raise InvalidArgumentError(f"publish refused: {reason}")


def _not_settable(properties: dict[Any, Any]) -> InvalidArgumentTypeError:
    key = next(k for k in properties if k not in PUBLISH_PROPERTIES)
    name = repr(key) if type(key) is str else f"a key of type {type(key).__name__}"
    why = _WHOSE.get(key, "unknown")
    return InvalidArgumentTypeError(
        f"properties: {name} is not an MQTT 5 PUBLISH property a caller may set ({why}); "
        f"those are {', '.join(sorted(PUBLISH_PROPERTIES))}"
    )


def unsendable(
    topic: str, qos: int, properties: object, valid_topics: dict[str, None] | None = None
) -> str | None:
    """Why a publish read back from the durable outbox can no longer be sent (its topic, QoS
    and properties fail the checks of :class:`PublishCheck`: the message names which), or None.

    A record was checked when it was accepted, but maybe by an earlier version with looser
    rules: sent as it is, it would raise inside the link's callback, or make the broker end
    each link, on every start. ``valid_topics`` caches valid topic names across calls.
    """
    try:
        if valid_topics is None or topic not in valid_topics:
            validate_topic_name(topic)
            if valid_topics is not None:
                _remember(valid_topics, topic)
        if qos not in (0, 1, 2):
            return f"its qos is {qos!r}, not 0, 1 or 2"
        if properties is not None:
            if type(properties) is not dict:
                return f"its properties are a {type(properties).__name__}, not a dict"
            check_properties(topic, properties, valid_topics)
    except MQTTError as exc:
        return str(exc)
    return None


def _remember(valid_topics: dict[str, None], topic: str) -> None:
    """Add a validated topic name to a bounded cache (emptied when full)."""
    if len(valid_topics) >= _TOPIC_CACHE:
        valid_topics.clear()
    valid_topics[topic] = None
