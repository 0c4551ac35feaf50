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
    PayloadTooLarge,
)
from ._properties import malformed_property
from ._topics import validate_topic_name

__all__ = ["PublishCheck", "check_properties"]

_TOPIC_CACHE: Final = 4096


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
        InvalidArgumentTypeError: an unknown property, or one of the wrong type or shape.
        InvalidArgumentError: ``content_type`` or a user property's name or value holds a
            control character or a Unicode non-character (named, its value not shown).
    """
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
    reason = malformed_property(
        properties.get("content_type"), None, properties.get("user_properties")
    )
    if reason is not None:
        raise InvalidArgumentError(f"publish refused: {reason}")


def _remember(valid_topics: dict[str, None], topic: str) -> None:
    """Add a validated topic name to a bounded cache (emptied when full)."""
    if len(valid_topics) >= _TOPIC_CACHE:
        valid_topics.clear()
    valid_topics[topic] = None
