"""The asyncio side of the session's incoming part: acknowledgements out, the backlog watched.

The pure :class:`~.._core.incoming.Incoming` decides; this only schedules:

- :meth:`Acks.done` is the ``done(token)`` callable every subscription is given (as websockets
  hands its ``Assembler`` ``pause``/``resume``). The acknowledgements it makes due are queued in
  the session at once, and written **once per loop turn**, whatever their number: a worker that
  finishes 500 messages in one turn sends 500 PUBACKs in one ``write``, and the broker answers
  with one burst, rather than one packet each way per message.
- the unrouted backlog (a resumed session's messages that arrive before their ``subscribe()``)
  is watched with one timer, for :meth:`Incoming.next_deadline
  <.._core.incoming.Incoming.next_deadline>`: what waits too long is logged, and logged again
  every 30 s while it still waits, the client's health turns ``degraded`` (and back), and the
  user's opt-in ``unrouted_timeout`` gives up on what waited longer (acknowledged unhandled,
  counted as unmatched).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from .._core.session import Session
from .._message import Message

__all__ = ["Acks"]

log = logging.getLogger("tars.mqtt.dispatch")


class _Link(Protocol):
    def flush(self) -> None: ...


class LinkHolder(Protocol):
    """Who holds the current link (the supervisor): read, never kept."""

    @property
    def current(self) -> _Link | None: ...


HealthCallback = Callable[[bool, str | None], None]
"""``(degraded, why)``: the client publishes its health (``degraded``, or ``recovered``)."""


class Acks:
    """Writes the acknowledgements the incoming part makes due; watches the unrouted backlog."""

    def __init__(
        self,
        session: Session,
        links: LinkHolder,
        *,
        client_id: str = "",
        on_health: HealthCallback | None = None,
    ) -> None:
        """``links.current`` is the link the acknowledgements are written on (the
        supervisor's; read at each write, as links come and go)."""
        self.incoming = session.incoming
        self.withholding = session.ack_after_handling  # False: acknowledged on arrival
        self._session = session
        self._links = links
        self._client_id = client_id
        self._on_health = on_health
        self._write_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.degraded = False

    # --- acknowledgements ----------------------------------------------------------------------

    def done(self, token: int) -> None:
        """A holder of ``token``'s message is finished with it (handled, failed, dropped)."""
        due = self.incoming.done(token)
        if due and self._session.acknowledge(due) and self._write_handle is None:
            self._write_handle = asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._write_handle = None
        self._flush()

    def _flush(self) -> None:
        link = self._links.current
        if link is not None:
            link.flush()

    # --- the unrouted backlog ------------------------------------------------------------------

    def park(self, packet_id: int | None, msg: Message) -> None:
        """No subscription takes ``msg`` yet (``packet_id`` None: acknowledged on arrival)."""
        if self.degraded and not self.incoming.waiting:
            # What made us degraded is gone (a link ended: the broker sends it again): say so
            # before this new backlog is judged on its own.
            self.check()
        pushed = self.incoming.park(packet_id, msg, asyncio.get_running_loop().time())
        for old in pushed:
            self._discarded(old, "more than 1000 wait")
        self._watch()

    def claim(self, wants: Callable[[Message], bool]) -> list[tuple[int | None, Message]]:
        """A subscription was added: the parked messages it wants, in arrival order."""
        if not self.incoming.waiting:
            return []
        taken = self.incoming.claim(wants)
        if taken:
            self.check()
        return taken

    def check(self) -> None:
        """Look at the backlog now: say what waits too long, give up what the user's
        ``unrouted_timeout`` allows, and set the next look."""
        loop = asyncio.get_running_loop()
        report = self.incoming.check(loop.time())
        for msg in report.discarded:
            self._discarded(msg, f"after {self.incoming.unrouted_timeout:g} s (unrouted_timeout)")
        if report.due and self._session.acknowledge(report.due):
            self._flush()
        if report.remind:
            first = self.incoming.first_parked()
            log.warning(
                "%s: %d received messages wait for a subscription (the oldest for %.0f s, "
                "on %r); their acknowledgements, and those of every message after them, are "
                "withheld, so the broker's Receive Maximum window fills and then it sends "
                "nothing more: subscribe() before connect(), or set unrouted_timeout to give "
                "them up (overdue so far: %d)",
                self._client_id,
                report.waiting,
                report.oldest,
                first.topic if first is not None else None,
                self.incoming.overdue,
                extra={"client_id": self._client_id},
            )
        degraded = report.overdue > 0
        if degraded != self.degraded:
            self.degraded = degraded
            if not degraded:
                log.info(
                    "%s: no received message waits for a subscription any more", self._client_id
                )
            if self._on_health is not None:
                why = (
                    f"{report.waiting} received messages wait for a subscription"
                    if degraded
                    else None
                )
                self._on_health(degraded, why)
        self._watch()

    def _discarded(self, msg: Message, why: str) -> None:
        count = self.incoming.discarded
        if count == 1 or count % 1000 == 0:
            log.warning(
                "%s: no subscription for a QoS %d message on %r: given up %s (unmatched so "
                "far: %d)",
                self._client_id,
                msg.qos,
                msg.topic,
                why,
                count,
                extra={"client_id": self._client_id},
            )

    def _watch(self) -> None:
        deadline = self.incoming.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.check()

    def close(self) -> None:
        """Shutdown: stop watching (what waits stays unacknowledged: the broker keeps it)."""
        for handle in (self._timer, self._write_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._write_handle = None
        self._timer_at = None
