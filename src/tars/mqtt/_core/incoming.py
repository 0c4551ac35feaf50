"""The incoming part of the session: each received QoS 1/2 message from arrival to acknowledgement.

Pure (no asyncio; ``now`` is passed in). This is the one owner of a received message's lifetime
while its acknowledgement is withheld (``acknowledge="after_handling"``, the default):

- **arrival order**: the session calls :meth:`Incoming.arrive` for each new QoS 1/2 PUBLISH;
  MQTT 5 (4.6) wants the PUBACKs (PUBRECs) in that order, so a finished message waits here for
  the ones before it;
- **who holds it**: the dispatcher calls :meth:`~Incoming.hold` with the number of
  subscriptions it reached and gets a *token*; each subscription calls ``done(token)`` once when
  it is finished with the message (handled, failed, deduplicated, dropped by ``unsubscribe``);
  the last ``done`` makes the acknowledgement due. Nothing is counted on the public
  :class:`~tars.mqtt.Message`, which stays plain data;
- **the unrouted backlog**: a message tagged with one of our subscription identifiers that no
  subscription takes yet (a resumed session's backlog, arriving before the service's
  ``subscribe()``) is :meth:`~Incoming.park`-ed until a subscription :meth:`~Incoming.claim`-s
  it. It is never acknowledged unhandled, unless the user opted in (``unrouted_timeout``); it
  holds the acknowledgements after it, so the broker's Receive Maximum window is the bound.
  :meth:`~Incoming.check` says when it waits too long (``warn_after``), and keeps saying it;
- **QoS 2 ids**: :attr:`~Incoming.qos2` holds the ids PUBREC-ed and waiting for their PUBREL
  (a resend of one is acknowledged again, never delivered twice).

Tokens are never reused (they count arrivals over every link); :meth:`~Incoming.link_ended`
forgets the link's messages (the broker sends them again on a resumed session), so a ``done``
from a handler that outlived its link is ignored. With ``acknowledge="on_arrival"`` the session
acknowledges at once and only the backlog is used here (no token; bounded by ``max_parked``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from .._record import Frozen, Record, _set

__all__ = ["BacklogReport", "Due", "Incoming"]

T = TypeVar("T")

Due = tuple[int, int]
"""An acknowledgement now due: (packet id, QoS). QoS 1: PUBACK; QoS 2: PUBREC."""

WARN_AFTER: Final = 5.0
"""Seconds a parked message waits before it is reported as waiting too long."""
REMIND_EVERY: Final = 30.0
"""Seconds between the reports while a parked message still waits too long."""
MAX_PARKED: Final = 1000
"""Most parked messages that hold no acknowledgement (``on_arrival``); the oldest goes first."""


class _Held(Record):
    __slots__ = ("holders", "packet_id", "qos")
    packet_id: int
    qos: int
    holders: int  # subscriptions (or the backlog) that still have it; 0: done

    def __init__(self, packet_id: int, qos: int, holders: int) -> None:
        self.packet_id = packet_id
        self.qos = qos
        self.holders = holders


class _Parked(Record, Generic[T]):
    __slots__ = ("item", "overdue", "since", "token")
    token: int | None  # None: acknowledged on arrival already
    since: float
    item: T
    overdue: bool  # counted once in Incoming.overdue

    def __init__(self, token: int | None, since: float, item: T, overdue: bool = False) -> None:
        self.token = token
        self.since = since
        self.item = item
        self.overdue = overdue


class BacklogReport(Frozen, Generic[T]):
    """What :meth:`Incoming.check` found in the unrouted backlog."""

    __slots__ = ("discarded", "due", "oldest", "overdue", "remind", "waiting")

    waiting: int
    """Messages that wait for a subscription now."""
    overdue: int
    """Of them, how many have waited longer than ``warn_after``."""
    oldest: float
    """Seconds the oldest has waited (0 when none waits)."""
    remind: bool
    """True when the shell should say it (again): the first time something is overdue, then
    every ``remind_every`` seconds while it stays so."""
    discarded: list[T]
    """Given up after ``unrouted_timeout`` (the user's opt-in) or over ``max_parked``."""
    due: list[Due]
    """The acknowledgements the discarded messages made due, in arrival order."""

    def __init__(
        self,
        waiting: int,
        overdue: int,
        oldest: float,
        remind: bool,
        discarded: list[T] | None = None,
        due: list[Due] | None = None,
    ) -> None:
        _set(self, "waiting", waiting)
        _set(self, "overdue", overdue)
        _set(self, "oldest", oldest)
        _set(self, "remind", remind)
        _set(self, "discarded", [] if discarded is None else discarded)
        _set(self, "due", [] if due is None else due)


class Incoming(Generic[T]):
    """The received QoS 1/2 messages of the current link, from arrival to acknowledgement.

    ``T`` is what the backlog keeps for a later subscription (the shell's message object).
    ``unrouted_timeout``: seconds after which a parked message is given up (acknowledged
    unhandled, reported in :attr:`BacklogReport.discarded`); None waits for ever.
    """

    __slots__ = (
        "_backlog",
        "_by_pid",
        "_held",
        "_last_remind",
        "_next_token",
        "_order",
        "discarded",
        "max_parked",
        "overdue",
        "qos2",
        "remind_every",
        "unrouted_timeout",
        "warn_after",
    )

    def __init__(
        self,
        *,
        unrouted_timeout: float | None = None,
        warn_after: float = WARN_AFTER,
        remind_every: float = REMIND_EVERY,
        max_parked: int = MAX_PARKED,
    ) -> None:
        self.unrouted_timeout = unrouted_timeout
        self.warn_after = warn_after
        self.remind_every = remind_every
        self.max_parked = max_parked
        self._order: deque[int] = deque()  # tokens, in arrival order
        self._held: dict[int, _Held] = {}  # token -> its message
        self._by_pid: dict[int, int] = {}  # packet id -> token (ids are unique while held)
        self._next_token = 1
        self._backlog: deque[_Parked[T]] = deque()
        self._last_remind: float | None = None
        self.qos2: set[int] = set()  # PUBREC-ed, waiting for the broker's PUBREL
        self.overdue = 0  # parked messages that waited longer than warn_after (each once)
        self.discarded = 0  # parked messages given up (unrouted_timeout, max_parked)

    def __len__(self) -> int:
        """Messages whose acknowledgement is withheld."""
        return len(self._held)

    def __contains__(self, packet_id: object) -> bool:
        """True while a message with this packet id waits for its acknowledgement (a resend of
        it is not a new message)."""
        return packet_id in self._by_pid

    @property
    def waiting(self) -> int:
        """Messages parked for a subscription that does not exist yet."""
        return len(self._backlog)

    def first_parked(self) -> T | None:
        """The oldest parked message (for a report), or None."""
        return self._backlog[0].item if self._backlog else None

    # --- arrival to acknowledgement ------------------------------------------------------------

    def arrive(self, packet_id: int, qos: int) -> None:
        """A new QoS 1/2 message arrived (the session): its acknowledgement is withheld."""
        token = self._next_token
        self._next_token = token + 1
        self._order.append(token)
        self._held[token] = _Held(packet_id, qos, 0)
        self._by_pid[packet_id] = token

    def hold(self, packet_id: int, holders: int) -> int | None:
        """``holders`` subscriptions (at least one) take the message just received; returns the
        token each passes to ``done`` once, or None when it is not withheld (unknown id)."""
        token = self._by_pid.get(packet_id)
        if token is not None:
            self._held[token].holders += holders
        return token

    def done(self, token: int) -> list[Due]:
        """One holder is finished with the message; returns the acknowledgements now due, in
        arrival order (none while an earlier message is still held, or for a token of a link
        that is gone)."""
        entry = self._held.get(token)
        if entry is None:
            return []
        entry.holders -= 1
        if entry.holders > 0:
            return []
        order = self._order
        if order[0] != token:
            return []  # an earlier message goes first
        held, by_pid = self._held, self._by_pid
        order.popleft()  # this one first, without a second lookup
        del held[token]
        del by_pid[entry.packet_id]
        due: list[Due] = [(entry.packet_id, entry.qos)]
        while order:
            head = held[order[0]]
            if head.holders > 0:
                break
            del held[order.popleft()]
            del by_pid[head.packet_id]
            due.append((head.packet_id, head.qos))
        return due

    # --- the unrouted backlog ------------------------------------------------------------------

    def park(self, packet_id: int | None, item: T, now: float) -> list[T]:
        """No subscription takes ``item`` yet: it waits for one. ``packet_id`` None: a message
        acknowledged on arrival, kept (at most ``max_parked``) only so a late subscription
        still sees it; returns those pushed out by that bound (the oldest)."""
        token = None
        if packet_id is not None:
            token = self.hold(packet_id, 1)  # the backlog is its holder until claimed
        backlog = self._backlog
        backlog.append(_Parked(token, now, item))
        pushed: list[T] = []
        # Only an on_arrival session parks messages without a token, and then all of them:
        # the oldest is one too.
        if token is None and len(backlog) > self.max_parked:
            self.discarded += 1
            pushed.append(backlog.popleft().item)
        return pushed

    def claim(self, wants: Callable[[T], bool]) -> list[tuple[int | None, T]]:
        """A subscription was added: it takes the parked messages ``wants(item)`` accepts, in
        arrival order, with their tokens (it is their holder now)."""
        taken: list[tuple[int | None, T]] = []
        kept: deque[_Parked[T]] = deque()
        for parked in self._backlog:
            if wants(parked.item):
                taken.append((parked.token, parked.item))
            else:
                kept.append(parked)
        if taken:
            self._backlog = kept
        return taken

    def check(self, now: float) -> BacklogReport[T]:
        """Look at the backlog at ``now``: count what became overdue, give up what waited past
        ``unrouted_timeout`` (acknowledgements due), and say whether to report it now."""
        backlog = self._backlog
        discarded: list[T] = []
        due: list[Due] = []
        timeout = self.unrouted_timeout
        if timeout is not None:
            while backlog and now - backlog[0].since >= timeout:
                parked = backlog.popleft()
                self.discarded += 1
                discarded.append(parked.item)
                if parked.token is not None:
                    due.extend(self.done(parked.token))
        overdue = 0
        limit = now - self.warn_after
        for parked in backlog:
            if parked.since > limit:
                break  # in arrival order: the rest are younger
            overdue += 1
            if not parked.overdue:
                parked.overdue = True
                self.overdue += 1
        remind = False
        if overdue:
            last = self._last_remind
            if last is None or now - last >= self.remind_every:
                self._last_remind = now
                remind = True
        else:
            self._last_remind = None
        oldest = now - backlog[0].since if backlog else 0.0
        return BacklogReport(len(backlog), overdue, oldest, remind, discarded, due)

    def next_deadline(self) -> float | None:
        """When :meth:`check` has something new to say (None: the backlog is empty)."""
        backlog = self._backlog
        if not backlog:
            return None
        oldest = backlog[0].since
        deadlines = []
        if self.unrouted_timeout is not None:
            deadlines.append(oldest + self.unrouted_timeout)
        for parked in backlog:
            if not parked.overdue:
                deadlines.append(parked.since + self.warn_after)
                break
        if self._last_remind is not None:
            deadlines.append(self._last_remind + self.remind_every)
        return min(deadlines) if deadlines else None

    # --- links ---------------------------------------------------------------------------------

    def link_ended(self) -> None:
        """The link is gone (or a new one starts): the broker sends again what was not
        acknowledged (a resumed session) or it is gone with the session; every token of this
        link is void. Parked messages go too: the broker resends them."""
        self._order.clear()
        self._held.clear()
        self._by_pid.clear()
        self._backlog = deque(p for p in self._backlog if p.token is None)
        if not self._backlog:
            self._last_remind = None
