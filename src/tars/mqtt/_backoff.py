"""Reconnection delays as a swappable policy.

The client's supervisor asks its policy how long to wait before connection attempt ``attempt``
(0 for the first retry after a loss) and gives up when the policy answers None. The default,
:class:`ExponentialBackoff`, spreads a fleet's reconnects out (jitter) so a restarted broker is
not hit by every client at once, yet keeps probing quickly while nothing listens at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._argcheck import check_int, check_number, wrong_type
from ._errors import InvalidArgumentError

if TYPE_CHECKING:
    import random

__all__ = ["BackoffPolicy", "ExponentialBackoff", "NoRetry"]


@runtime_checkable
class BackoffPolicy(Protocol):
    """Decides how long to wait before the next connection attempt, or that there is none."""

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        """Return the delay in seconds before attempt ``attempt`` (from 0), or None to give up.

        ``refused`` is True when the last attempt failed because nothing accepted the TCP
        connection (the broker is down, not overloaded).
        """
        ...


class ExponentialBackoff:
    """Exponential backoff with jitter, and a short cap while the broker is down.

    ``base = min(max_delay, min_delay * multiplier**attempt)`` and the delay is
    ``base * (1 - jitter * r)`` with ``r`` uniform in [0, 1). When the attempt was ``refused``
    the base is first capped at ``refused_delay``: a refused connection costs the broker nothing,
    and a returning broker should be found within about a second. The cap is applied before the
    jitter so clients that all saw "refused" still spread out when the broker comes back.

    ``rng`` makes the jitter reproducible in tests; by default the :mod:`random` module's shared
    generator is used, which Python reseeds in forked children so workers do not move in step.
    """

    __slots__ = (
        "_jitter",
        "_max_attempts",
        "_max_delay",
        "_min_delay",
        "_multiplier",
        "_random",
        "_refused_delay",
    )

    def __init__(
        self,
        min_delay: float = 0.5,
        max_delay: float = 5.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        max_attempts: int | None = None,
        refused_delay: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        """Check and store the schedule.

        Raises:
            InvalidArgumentTypeError: a number that is not an ``int`` or ``float``, a
                ``max_attempts`` that is not an ``int`` or None, an ``rng`` without ``random()``.
            InvalidArgumentError: a delay is not positive and finite, ``max_delay < min_delay``,
                ``multiplier < 1``, ``jitter`` outside [0, 1] or ``max_attempts < 0``.
        """
        check_number("min_delay", min_delay)
        check_number("max_delay", max_delay)
        check_number("multiplier", multiplier)
        check_number("jitter", jitter)
        check_int("max_attempts", max_attempts, optional=True)
        check_number("refused_delay", refused_delay)
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise wrong_type("rng", rng, "a random.Random (with random()) or None")
        for name, value in (
            ("min_delay", min_delay),
            ("max_delay", max_delay),
            ("refused_delay", refused_delay),
        ):
            # Zero would make a reconnect loop spin against a broker that is down.
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgumentError(f"{name} must be a finite number > 0, got {value!r}")
        if max_delay < min_delay:
            raise InvalidArgumentError(
                f"max_delay ({max_delay!r}) must be >= min_delay ({min_delay!r})"
            )
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise InvalidArgumentError(
                f"multiplier must be a finite number >= 1, got {multiplier!r}"
            )
        if not 0 <= jitter <= 1:
            raise InvalidArgumentError(f"jitter must be between 0 and 1, got {jitter!r}")
        if max_attempts is not None and max_attempts < 0:
            raise InvalidArgumentError(f"max_attempts must be >= 0 or None, got {max_attempts!r}")
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._multiplier = multiplier
        self._jitter = jitter
        self._max_attempts = max_attempts
        self._refused_delay = refused_delay
        # The random module is loaded at the first retry, not at every service start (issue 21).
        self._random: Callable[[], float] | None = rng.random if rng is not None else None

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        """Return the jittered delay before attempt ``attempt``, or None past ``max_attempts``.

        Raises:
            InvalidArgumentTypeError: ``attempt`` is not an ``int``.
            InvalidArgumentError: ``attempt`` is negative.
        """
        check_int("attempt", attempt)
        if attempt < 0:
            raise InvalidArgumentError(f"attempt must be >= 0, got {attempt!r}")
        if self._max_attempts is not None and attempt >= self._max_attempts:
            return None
        try:
            base = min(self._max_delay, self._min_delay * self._multiplier**attempt)
        except OverflowError:  # multiplier**attempt beyond float range: long past the cap
            base = self._max_delay
        if refused:
            base = min(base, self._refused_delay)
        if self._random is None:
            import random

            self._random = random.random
        return base * (1.0 - self._jitter * self._random())

    def __repr__(self) -> str:
        return (
            f"ExponentialBackoff(min_delay={self._min_delay!r}, max_delay={self._max_delay!r}, "
            f"multiplier={self._multiplier!r}, jitter={self._jitter!r}, "
            f"max_attempts={self._max_attempts!r}, refused_delay={self._refused_delay!r})"
        )


class NoRetry:
    """Never retry: for tools and tests that want a lost connection to fail at once."""

    __slots__ = ()

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        """Always None (give up)."""
        return None

    def __repr__(self) -> str:
        return "NoRetry()"
