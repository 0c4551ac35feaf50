"""When to speak up about failed connection attempts: loud once, then rarely, then "healed".

A client that waits for its broker (the default) retries for ever. Logging every attempt at
WARNING would flood a log while a broker is down for an hour; logging them all at INFO hides a
wrong port behind a ``connect()`` that never returns. :class:`ConnectTrouble` decides: the first
failure of a series at WARNING, then at most one WARNING per ``warn_every`` seconds (with the
count so far), the rest at INFO, and once the link is up, how long the series lasted.

A plain object that takes the time as an argument, so the schedule is tested without sleeps.
"""

from __future__ import annotations

from typing import Final

from ._errors import ConnectError, InvalidArgumentError
from ._record import Frozen, _set

__all__ = [
    "MQTT311_CLOSE_HINT",
    "MQTT311_HINT",
    "ConnectTrouble",
    "Healed",
    "describe_invalid",
    "scheme_hint",
    "with_scheme_hint",
]

WARN_EVERY: Final = 60.0

MQTT311_HINT: Final = (
    " (TCP is up but the broker never answered our MQTT 5 CONNECT: a broker that speaks only "
    "MQTT 3.1.1 may stay silent; check with: mosquitto_sub -V 311 -h HOST -p PORT -t '$SYS/#' "
    "-C 1 -d, which gets a CONNACK from such a broker)"
)
MQTT311_CLOSE_HINT: Final = (
    " (a broker that speaks only MQTT 3.1.1, such as RabbitMQ's MQTT plugin, closes the link on "
    "an MQTT 5 CONNECT: try protocol='3.1.1', or 'auto', the default)"
)
_USE_MQTTS: Final = "is this a TLS port? use mqtts://"
_USE_MQTT: Final = "is this a plain (not TLS) port? use mqtt://, or the broker's TLS port (8883)"
# What a TLS/plain mismatch looks like: the other side resets or closes at the first bytes, or
# the TLS layer cannot read the answer as a handshake.
_MISMATCH_WORDS: Final = (
    "reset by peer",
    "wrong_version_number",
    "wrong version number",
    "record layer failure",
    "eof occurred",
    "unexpected eof",
    "the broker closed the link",
    "malformed packet",
    "unexpected",
)


def _chain(error: BaseException) -> str:
    """The messages of ``error`` and its causes, lower-cased, in one string."""
    texts = []
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            break
        texts.append(f"{type(seen).__name__}: {seen}".lower())
        seen = seen.__cause__ or seen.__context__
    return " | ".join(texts)


def scheme_hint(error: Exception, tls: bool) -> str | None:
    """ "is this a TLS port? use mqtts://" (or the converse) when ``error`` (a failed attempt
    before CONNACK) looks like TLS spoken to a plain listener or plain MQTT to a TLS one: both
    only say "Connection reset by peer" otherwise. None when it does not look so."""
    if getattr(error, "reason_code", None) is not None or getattr(error, "refused", False):
        return None  # the broker answered MQTT, or nothing listens: not a scheme mismatch
    if getattr(error, "fatal", False):
        return None  # a certificate problem: TLS is spoken on both sides
    text = _chain(error)
    if not any(word in text for word in _MISMATCH_WORDS):
        return None
    if tls:
        return _USE_MQTT if ("ssl" in text or "cannot connect" in text) else None
    return _USE_MQTTS if "before connack" in text else None


def with_scheme_hint(error: ConnectError, tls: bool) -> ConnectError:
    """``error`` with :func:`scheme_hint`'s advice at the end of its message, once: for the
    caller who gets it raised (``connect()`` with ``wait_for_broker=False``, the CLI's one
    line), who reads no WARNING. The same object, its attributes, cause and traceback kept;
    unchanged when it does not look like a mismatch, or says so already."""
    hint = scheme_hint(error, tls)
    if hint is not None and hint not in str(error):
        error.args = (f"{error} ({hint})", *error.args[1:])
    return error


def describe_invalid(error: BaseException, limit: int = 3) -> str:
    """A pydantic ``ValidationError`` as a log line: the count, the model, then each of the
    first ``limit`` errors as ``location: reason``. Never the input values (they may be
    secrets); other errors as their first line."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return text[:200]
    found = errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or '(data)'}: {item['msg']}"[:120]
        for item in found[:limit]
    ]
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    title = getattr(error, "title", "data")
    count = len(found)
    return f"{count} validation error{'s' if count != 1 else ''} for {title}: " + (
        "; ".join(parts) + more
    )


class Healed(Frozen):
    """A series of failed attempts ended with a link: how many failed, over how long."""

    __slots__ = ("attempts", "seconds")
    attempts: int
    seconds: float

    def __init__(self, attempts: int, seconds: float) -> None:
        _set(self, "attempts", attempts)
        _set(self, "seconds", seconds)


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
