"""The MQTT 5 reason codes the session and its parts use (MQTT 5, section 2.4), and the one
exception a part raises when the broker breaks the protocol.

A part never ends the link itself: it raises :class:`Violation`, and the session (which owns
the link's state) queues the DISCONNECT and reports it.
"""

from __future__ import annotations

from typing import Final

from mqtt5 import QoS

__all__ = ["Violation"]

QOS: Final = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)
MAX_PACKET_ID: Final = 65535

NO_SUBSCRIBERS: Final = 0x10
MALFORMED: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84
KEEP_ALIVE_TIMEOUT: Final = 0x8D
PACKET_ID_NOT_FOUND: Final = 0x92
RECEIVE_MAX_EXCEEDED: Final = 0x93
TOPIC_ALIAS_INVALID: Final = 0x94
PACKET_TOO_LARGE: Final = 0x95
RETAIN_NOT_SUPPORTED: Final = 0x9A
QOS_NOT_SUPPORTED: Final = 0x9B
SHARED_NOT_SUPPORTED: Final = 0x9E
WILDCARDS_NOT_SUPPORTED: Final = 0xA2


class Violation(Exception):
    """The broker sent something MQTT 5 does not allow: the session ends the link with
    ``reason`` (a DISCONNECT reason code) and reports ``message``."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
