"""When to speak up about failed connection attempts: loud once, then rarely, then "healed".

A client that waits for its broker (the default) retries for ever. Logging every attempt at
WARNING would flood a log while a broker is down for an hour; logging them all at INFO hides a
wrong port behind a ``connect()`` that never returns. :class:`ConnectTrouble` decides: the first
failure of a series at WARNING, then at most one WARNING per ``warn_every`` seconds (with the
count so far), the rest at INFO, and once the link is up, how long the series lasted.

A plain object that takes the time as an argument, so the schedule is tested without sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._errors import InvalidArgumentError

__all__ = ["ConnectTrouble", "Healed"]

WARN_EVERY: Final = 60.0


@dataclass(frozen=True, slots=True)
class Healed:
    """A series of failed attempts ended with a link: how many failed, over how long."""

    attempts: int
    seconds: float


class ConnectTrouble:
    """Counts the failed connection attempts in a row and says which deserve a WARNING."""

    def __init__(self, warn_every: float = WARN_EVERY) -> None:
        if warn_every <= 0:
            raise InvalidArgumentError(f"warn_every must be positive, not {warn_every!r}")
        self.warn_every = warn_every
        self.attempts = 0  # failed attempts in the current series
        self._since: float | None = None
        self._warned_at = 0.0

    def failed(self, now: float) -> bool:
        """Count one failed attempt at ``now``; True when this one is to be logged at WARNING."""
        self.attempts += 1
        if self._since is None:
            self._since = self._warned_at = now
            return True
        if now - self._warned_at >= self.warn_every:
            self._warned_at = now
            return True
        return False

    def seconds(self, now: float) -> float:
        """How long the current series has lasted (0 when there is none)."""
        return 0.0 if self._since is None else now - self._since

    def connected(self, now: float) -> Healed | None:
        """The link is up: end the series; returns what it was, or None if there was none."""
        if self._since is None:
            return None
        healed = Healed(self.attempts, now - self._since)
        self.attempts = 0
        self._since = None
        return healed
