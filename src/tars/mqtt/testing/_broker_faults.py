"""The fault-injection switches of the in-memory broker, as plain data. Pure, no I/O.

The broker consults these at fixed points (routing, writing a PUBLISH, answering a SUBSCRIBE);
the switches themselves only count and match. Link-level faults (drop, stall, restart) act on
connections and live in the broker itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import mqtt5

from .._errors import InvalidArgumentError
from .._topics import split_shared, topic_matches, validate_topic_filter

__all__ = ["Faults"]


@dataclass(slots=True)
class _Countdown:
    topic_filter: str
    remaining: int


class Faults:
    """Armed faults: duplicates, delivery delay, reordering, refused subscriptions."""

    def __init__(self) -> None:
        self.delay = 0.0
        self._duplicates: list[_Countdown] = []
        self._reorder: tuple[str | None, int] | None = None
        self._refusals: dict[str, int] = {}

    def clear(self) -> None:
        self.delay = 0.0
        self._duplicates.clear()
        self._reorder = None
        self._refusals.clear()

    # -- duplicates ----------------------------------------------------------------------------

    def duplicate_next(self, topic_filter: str, count: int) -> None:
        validate_topic_filter(topic_filter)
        if count < 1:
            raise InvalidArgumentError(f"count must be >= 1, not {count}")
        self._duplicates.append(_Countdown(topic_filter, count))

    def take_duplicate(self, topic: str) -> bool:
        """True (and one use spent) when a delivery on ``topic`` must be sent twice."""
        for rule in self._duplicates:
            if topic_matches(rule.topic_filter, topic):
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._duplicates.remove(rule)
                return True
        return False

    # -- reordering ----------------------------------------------------------------------------

    def reorder_next(self, n: int, client_id: str | None) -> None:
        if n < 2:
            raise InvalidArgumentError(f"n must be >= 2 to reorder anything, not {n}")
        self._reorder = (client_id, n)

    def claim_reorder(self, client_id: str) -> int:
        """How many deliveries to ``client_id`` to hold and reverse (0 = none); disarms."""
        armed = self._reorder
        if armed is None or armed[0] not in (None, client_id):
            return 0
        self._reorder = None
        return armed[1]

    # -- refused subscriptions -----------------------------------------------------------------

    def refuse(self, topic_filter: str, reason_code: int) -> None:
        validate_topic_filter(topic_filter)
        try:
            mqtt5.SubAckReasonCode(reason_code)
            valid = reason_code >= 0x80
        except ValueError:
            valid = False
        if not valid:
            raise InvalidArgumentError(f"{reason_code:#x} is not a SUBACK failure reason code")
        self._refusals[topic_filter] = reason_code

    def refusal_for(self, requested: str) -> int | None:
        """The reason code to refuse ``requested`` with: a refused filter equal to it, or
        covering its (non-shared part) level by level, with ``+``/``#`` as wildcards."""
        inner = split_shared(requested)[1]
        for refused, reason_code in self._refusals.items():
            if refused == requested or topic_matches(refused, inner):
                return reason_code
        return None
