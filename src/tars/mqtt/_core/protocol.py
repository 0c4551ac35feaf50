"""Which MQTT version a client speaks to each broker: the ``protocol`` option as a pure policy.

``"5"`` and ``"3.1.1"`` are fixed. ``"auto"`` (the default) tries MQTT 5 first and falls back
to 3.1.1 when a broker refuses the protocol level (CONNACK 0x84, which is also what a 3.1.1
broker's return code 1 reads as), closes the link right after our CONNECT, or never answers it
within the connect timeout. The level that worked is remembered per broker for the client's
life, so a 3.1.1 broker costs one refused CONNECT per client, not one per reconnect.

A fallback that does not work is not remembered: a broker that merely went away during our
CONNECT is tried with MQTT 5 again next time. Nor is one that worked after a single unanswered
MQTT 5 CONNECT (an overloaded or restarting MQTT 5 broker drops CONNECTs too): the next link
tries MQTT 5 again, and a second unanswered one settles it. An explicit refusal (0x84) is
believed at once, even from a broker that spoke MQTT 5 before (it was replaced by a 3.1.1 one).
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["MQTT5", "MQTT311", "ProtocolChoice", "ProtocolOption", "level_name"]

ProtocolOption = Literal["5", "3.1.1", "auto"]

MQTT5: Final = 5  # the Protocol Level byte of each version's CONNECT
MQTT311: Final = 4
_UNSUPPORTED_PROTOCOL_VERSION: Final = 0x84


def level_name(level: int) -> str:
    """``"MQTT 5"`` or ``"MQTT 3.1.1"``, for log lines."""
    return "MQTT 3.1.1" if level == MQTT311 else "MQTT 5"


class ProtocolChoice:
    """The protocol level of the next attempt on each broker (keyed by the caller, e.g.
    ``host:port``), and what each attempt's outcome teaches."""

    def __init__(self, option: ProtocolOption = "auto") -> None:
        if option not in ("5", "3.1.1", "auto"):
            raise ValueError(f"protocol must be '5', '3.1.1' or 'auto', not {option!r}")
        self.option = option
        self._known: dict[str, int] = {}  # broker -> the level that worked
        self._trying: set[str] = set()  # brokers on a 3.1.1 attempt after MQTT 5 failed
        self._sure: set[str] = set()  # brokers whose refusal of MQTT 5 is beyond doubt
        self._silent: dict[str, int] = {}  # broker -> MQTT 5 CONNECTs it dropped, unanswered

    def level(self, broker: str, option: ProtocolOption | None = None) -> int:
        """The protocol level to speak on the next attempt to ``broker`` (``option``: that
        broker's own, from ``?protocol=`` in its URL, else the client's)."""
        option = option or self.option
        if option == "5":
            return MQTT5
        if option == "3.1.1":
            return MQTT311
        if broker in self._trying:
            return MQTT311
        return self._known.get(broker, MQTT5)

    def failed(
        self,
        broker: str,
        level: int,
        reason_code: int | None,
        connect_sent: bool,
        option: ProtocolOption | None = None,
    ) -> bool:
        """An attempt at ``level`` failed (``reason_code``: the CONNACK's refusal, None for a
        close or a timeout; ``connect_sent``: our CONNECT went out; ``option``: the broker's
        own, as for :meth:`level`). True when the next attempt should be made at once with
        MQTT 3.1.1."""
        if (option or self.option) != "auto":
            return False
        if level == MQTT311:
            self._trying.discard(broker)  # the fallback did not work either: not remembered
            return False
        refused = reason_code == _UNSUPPORTED_PROTOCOL_VERSION
        silent = reason_code is None and connect_sent and self._known.get(broker) != MQTT5
        if refused:
            self._sure.add(broker)
        elif silent:
            # One dropped CONNECT may be a broker in trouble (restarting, overloaded): the
            # second in a row, each time 3.1.1 being taken, settles it.
            count = self._silent[broker] = self._silent.get(broker, 0) + 1
            if count >= 2:
                self._sure.add(broker)
        else:
            return False
        self._known.pop(broker, None)
        self._trying.add(broker)
        return True

    def succeeded(self, broker: str, level: int) -> bool:
        """A link at ``level`` was accepted; True when that is news about ``broker``.

        A 3.1.1 link after a single unanswered MQTT 5 CONNECT is not remembered yet: the next
        link tries MQTT 5 again (see :meth:`failed`)."""
        self._trying.discard(broker)
        if level == MQTT5:
            self._silent.pop(broker, None)
        elif broker not in self._sure and self.option == "auto":
            return self._known.get(broker) != level
        news = self._known.get(broker) != level
        self._known[broker] = level
        return news
