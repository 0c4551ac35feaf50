"""The MQTT 5 rule for the UTF-8 strings that are not topics: properties, client id, user name.

MQTT 5 section 1.5.4 lets a receiver treat a UTF-8 string holding a control character
(U+0001..U+001F, U+007F..U+009F), U+0000 or a Unicode non-character as a malformed packet, and
Mosquitto 2.0 does so for every string of a packet, not only topics: a ``content_type``, a
``response_topic``, a user property's name or value (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, CONNECT,
will), the client id and the user name each make it close the link on the spot, without even a
DISCONNECT (checked against Mosquitto 2.0.11). A QoS 1 message carrying such a property is
resent on every new link and takes each one down with it, so the client refuses it at the call,
and the testing kit's broker closes the link as Mosquitto does, so a test catches it first.

The messages name the property and where the character is, never the value: a user property
may carry a token. Binary data (``correlation_data``, the password) has no such rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._argcheck import wrong_type
from ._topics import forbidden_character

__all__ = ["check_user_properties", "malformed_property"]


def malformed_property(
    content_type: str | None,
    response_topic: str | None,
    user_properties: Sequence[tuple[str, str]] | None,
) -> str | None:
    """Say which of these UTF-8 string properties breaks MQTT 5 section 1.5.4, and why (a
    message naming the property, without its value), or None when none does.

    The arguments have been type-checked already (by the caller or the codec).
    """
    if content_type is not None and (reason := forbidden_character(content_type)) is not None:
        return f"the content_type property {reason}"
    if response_topic is not None and (reason := forbidden_character(response_topic)) is not None:
        return f"the response_topic property {reason}"
    if user_properties:
        # A screen with no call per string (every forbidden character is unprintable); the
        # pairs are described only when one string is not printable. One pass that names the
        # pair as it goes (enumerate, then a call) measured a third slower on three pairs.
        for name, value in user_properties:
            if not (name.isprintable() and value.isprintable()):
                return _bad_user_property(user_properties)
    return None


def _bad_user_property(user_properties: Sequence[tuple[str, str]]) -> str | None:
    for index, (name, value) in enumerate(user_properties):
        for part, text in (("name", name), ("value", value)):
            reason = forbidden_character(text)
            if reason is not None:
                return f"the {part} of user property {index} {reason}"
    return None  # not printable, yet allowed (a line or paragraph separator, a format char)


def check_user_properties(name: str, value: object) -> None:
    """Raise :class:`~tars.mqtt.InvalidArgumentTypeError` unless ``value`` is None or a list of
    ``(str, str)`` pairs (what the codec takes), naming the argument ``name``."""
    if value is None:
        return
    if not isinstance(value, list):
        raise wrong_type(name, value, "a list of (str, str) pairs or None")
    for pair in value:
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise wrong_type(f"each item of {name}", pair, "a (str, str) pair")
