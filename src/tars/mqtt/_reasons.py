"""MQTT 5 reason codes by name: "0x87 Not authorized" says what "0x87" does not.

One table (MQTT 5.0, section 2.4 "Reason Code"), used by :mod:`._errors` so that every error
carrying a broker's reason code names it, whichever packet it came in. A code means different
things in different packets only below 0x80 (0x00 is Success, Normal disconnection or Granted
QoS 0; 0x01/0x02 are Granted QoS 1/2); the failure codes, the ones users read in an error, are
the same everywhere.
"""

from __future__ import annotations

from typing import Final

__all__ = ["describe", "name_in", "reason_name"]

REASON_NAMES: Final[dict[int, str]] = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with Will Message",
    0x10: "No matching subscribers",
    0x11: "No subscription existed",
    0x18: "Continue authentication",
    0x19: "Re-authenticate",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid",
    0x91: "Packet Identifier in use",
    0x92: "Packet Identifier not found",
    0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared Subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}


def reason_name(code: int) -> str | None:
    """The MQTT 5 name of ``code``, or None for a code the standard does not define."""
    return REASON_NAMES.get(code)


def describe(code: int) -> str:
    """``code`` as people read it: ``"0x87 Not authorized"`` (``"0x7f"`` when unnamed)."""
    name = REASON_NAMES.get(code)
    return f"{code:#04x} {name}" if name else f"{code:#04x}"


def name_in(message: str, code: int | None) -> str:
    """``message`` with the name of ``code`` shown once: after the code where the message
    already writes it in hex (``"reason code 0x87"``), else appended in parentheses."""
    if code is None:
        return message
    name = REASON_NAMES.get(code)
    if name is None or name in message:
        return message
    lowered = message.lower()
    for spelled in (f"{code:#04x}", f"{code:#x}"):
        at = lowered.find(spelled)
        end = at + len(spelled)
        if at >= 0 and (end == len(message) or message[end] not in _HEX_DIGITS):
            return f"{message[:end]} {name}{message[end:]}"
    return f"{message} ({describe(code)})"


_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
