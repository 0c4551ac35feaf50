"""The checks every publish passes before anything is queued, so a bad call fails itself and
never a later flush of the outbox on some reconnect."""

from __future__ import annotations

from typing import Any, Final

from mqtt5 import PublishPacket

from ._argcheck import wrong_type
from ._errors import InvalidArgumentError, InvalidArgumentTypeError, PayloadTooLarge
from ._topics import validate_topic_name

__all__ = ["PublishCheck"]

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
        if properties is not None and not isinstance(properties, dict):
            raise wrong_type("properties", properties, "a dict or None")
        if properties:
            try:
                PublishPacket(topic, b"", **properties)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentTypeError(
                    f"invalid MQTT 5 publish properties: {exc}"
                ) from None
        if topic not in self._valid_topics:
            validate_topic_name(topic)
            if len(self._valid_topics) >= _TOPIC_CACHE:
                self._valid_topics.clear()
            self._valid_topics[topic] = None
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
