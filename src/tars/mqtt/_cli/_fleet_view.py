"""The fleet as the ``fleet`` command sees it: a pure tracker and its table.

Services report on two topics (see ``tars.mqtt._health``): a retained ``health.status``
envelope on ``system/health/{id}`` (replaced by the will's ``offline`` status when a service
dies) and bare heartbeats on ``system/keepalive/{id}``. :class:`FleetView` folds those messages
into one row per client id; :func:`render_table` turns the rows into the text a person reads.
Instances of a replicated service (``instance=``: client id ``{service}-{instance}``, envelopes
still from ``{service}``) are told apart by the health status's ``source``: their rows show the
service and the instance in two columns.

Time is always passed in (``now``: wall-clock Unix seconds), so both are tested without a
broker or sleeps. A status's age counts from its own timestamp (the envelope's ``ts``), not from
when it arrived: a status is retained, so the broker hands over an hours-old one at once, and it
must read as hours old. A heartbeat's age counts from its arrival: heartbeats are live (never
retained), so arrival is when it was sent, without trusting the service's clock.

States, and what ``--check`` makes of them: ``ok``; ``stopped`` (its last status is the
graceful-shutdown one: deliberate, so not a failure); ``unhealthy`` (its status says ``ok:
false``); ``offline`` (its will: the process died or lost its link without a goodbye);
``stale`` (silent for longer than ``stale_after``: hung or cut off); ``unknown`` (heartbeats
but no status); ``missing`` (named on the command line, never heard).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ._render import PLAIN, Style, format_age

__all__ = ["FleetView", "ServiceRow", "render_table"]

HEALTH_PREFIX = "system/health/"
KEEPALIVE_PREFIX = "system/keepalive/"


@dataclass
class ServiceRow:
    """What is known of one client id (a service, or one instance of a replicated service)."""

    service: str
    """The client id, as the topic's last level says it."""
    broker: str = ""
    source: str | None = None
    """The ``source`` of its last health status: the service's name, which instances share."""
    ok: bool | None = None
    """The last health status's ``ok``; None when no status was seen (heartbeats only)."""
    event: str | None = None
    error: str | None = None
    status_at: float | None = None
    """When the last health status was produced: its envelope ``ts`` (Unix seconds, never after
    it arrived)."""
    heartbeat_at: float | None = None
    """When the last heartbeat arrived (Unix seconds); None: none heard."""
    seen: bool = True
    """False for a service named on the command line and not heard yet (``missing``)."""
    up_since: float | None = None
    """An ``offline`` will's ``timestamp`` (Unix time): when the link that died was opened
    (MQTT fixes the will at CONNECT), not when it died."""

    @property
    def name(self) -> str:
        """The service: the status's ``source`` when the client id is ``{source}-{instance}``,
        else the client id."""
        return self.service if self.instance is None else str(self.source)

    @property
    def instance(self) -> str | None:
        """The instance name, when the client id is ``{source}-{instance}``; else None."""
        prefix = f"{self.source}-"
        if self.source and self.service.startswith(prefix) and len(self.service) > len(prefix):
            return self.service[len(prefix) :]
        return None


STOPPED_EVENT = "shutdown"
"""The ``event`` of the status a client publishes when it shuts down gracefully."""
PASSING = frozenset({"ok", "stopped"})
"""States that do not fail ``--check``: running well, or stopped on purpose."""


class FleetView:
    """Folds health and heartbeat messages into rows, and says which rows are in trouble.

    A service is *stale* when its last heartbeat arrived more than ``stale_after`` seconds ago;
    one never heard heartbeating is stale only with ``expect_heartbeats`` (services may run
    without heartbeats) and once the view has listened for ``stale_after`` seconds. ``only``
    (client ids or service names) limits the view to those services; one never heard is
    ``missing`` once the view has listened for ``stale_after`` seconds.
    """

    def __init__(
        self,
        *,
        stale_after: float,
        expect_heartbeats: bool = False,
        started: float = 0.0,
        only: tuple[str, ...] = (),
    ) -> None:
        self.stale_after = stale_after
        self.expect_heartbeats = expect_heartbeats
        self.started = started
        self.only = frozenset(only)
        self.rows: dict[tuple[str, str], ServiceRow] = {}
        self.ignored = 0
        """Messages on the system topics that could not be read (counted, never fatal)."""

    def feed(self, topic: str, payload: bytes, now: float, broker: str = "") -> bool:
        """Take one message; return False when it is not a health or heartbeat message."""
        if topic.startswith(HEALTH_PREFIX):
            service, is_health = topic[len(HEALTH_PREFIX) :], True
        elif topic.startswith(KEEPALIVE_PREFIX):
            service, is_health = topic[len(KEEPALIVE_PREFIX) :], False
        else:
            self.ignored += 1
            return False
        if not service or "/" in service:
            self.ignored += 1
            return False
        if not payload:  # a cleared retained status: the service was removed
            if is_health:
                self.rows.pop((broker, service), None)
            return True
        try:
            doc: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.ignored += 1
            return False
        data: Any = doc.get("data") if type(doc) is dict else None
        if is_health and (type(data) is not dict or not isinstance(data.get("ok"), bool)):
            self.ignored += 1
            return False
        row = self.rows.setdefault((broker, service), ServiceRow(service, broker))
        if is_health:
            row.ok = data["ok"]
            row.event = _text(data.get("event"))
            # "err" is the wire name (the original fleet's); "error" what early tars-core wrote.
            row.error = _text(data.get("err", data.get("error")))
            row.source = _text(doc.get("source"))
            stamp = data.get("timestamp")
            offline = row.event == "offline" and type(stamp) in (int, float)
            row.up_since = stamp if offline else None
            row.status_at = min(now, _stamp(doc.get("ts"), data.get("timestamp"), now))
        else:
            row.heartbeat_at = now
        return True

    def state(self, row: ServiceRow, now: float) -> str:
        """``ok``, ``stopped``, ``stale``, ``unhealthy``, ``offline``, ``unknown`` (no status
        yet) or ``missing`` (named, never heard)."""
        if not row.seen:
            return "missing"
        if row.ok is False:
            if row.event == STOPPED_EVENT:
                return "stopped"
            return "offline" if row.event == "offline" else "unhealthy"
        if self.is_stale(row, now):
            return "stale"
        return "ok" if row.ok else "unknown"

    def decided(self, row: ServiceRow, now: float) -> bool:
        """Whether listening longer could still change the row's state (``--check`` waits
        until every row is decided): a status that says it is not running, a heartbeat heard,
        or a silence that lasted ``stale_after`` already."""
        if not row.seen or (row.heartbeat_at is None and self.expect_heartbeats):
            return row.ok is False or now - self.started >= self.stale_after
        return True

    def all_decided(self, now: float) -> bool:
        """True when every row (named ones included) is :meth:`decided`."""
        return all(self.decided(row, now) for row in self.sorted_rows())

    def is_stale(self, row: ServiceRow, now: float) -> bool:
        """True when the service stopped heartbeating (see the class docstring)."""
        if row.heartbeat_at is not None:
            return now - row.heartbeat_at > self.stale_after
        return self.expect_heartbeats and now - self.started >= self.stale_after

    def in_trouble(self, now: float) -> list[ServiceRow]:
        """Rows whose state is neither ``ok`` nor ``stopped`` (what ``--check`` fails on)."""
        return [row for row in self.sorted_rows() if self.state(row, now) not in PASSING]

    def sorted_rows(self) -> list[ServiceRow]:
        """Rows by service, instance, then broker (with ``only``: those services, and a
        ``missing`` row for each one not heard)."""
        rows = list(self.rows.values())
        if self.only:
            rows = [row for row in rows if row.service in self.only or row.name in self.only]
            heard = {row.service for row in rows} | {row.name for row in rows}
            rows += [ServiceRow(name, seen=False) for name in self.only - heard]
        return sorted(rows, key=lambda row: (row.name, row.instance or "", row.broker))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _stamp(*candidates: Any) -> float:
    """The first candidate that is a number (a bool is not): envelope ``ts``, then the status's
    own ``timestamp``, then the arrival time."""
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    raise AssertionError("the arrival time is always a number")


_HEADERS = ("SERVICE", "INSTANCE", "STATE", "EVENT", "HEARTBEAT", "STATUS", "ERROR", "BROKER")


def render_table(view: FleetView, now: float, style: Style = PLAIN) -> str:
    """The fleet as an aligned text table, one service (or instance) a line, and a summary.

    ``HEARTBEAT`` and ``STATUS`` are the ages of the last heartbeat and health status; the
    ``INSTANCE`` column appears only when some service runs as instances, the ``BROKER`` column
    only when services were seen on more than one broker.
    """
    rows = view.sorted_rows()
    shown = [
        header
        for header in _HEADERS
        if (header != "INSTANCE" or any(row.instance for row in rows))
        and (header != "BROKER" or len({row.broker for row in rows}) > 1)
    ]
    cells: list[tuple[list[str], str]] = []
    for row in rows:
        state = view.state(row, now)
        values = {
            "SERVICE": _one_line(row.name),
            "INSTANCE": _one_line(row.instance) if row.instance else "-",
            "STATE": state,
            "EVENT": row.event or "-",
            "HEARTBEAT": format_age(None if row.heartbeat_at is None else now - row.heartbeat_at),
            "STATUS": format_age(None if row.status_at is None else now - row.status_at),
            "ERROR": _error_cell(row),
            "BROKER": row.broker,
        }
        cells.append(([values[header] for header in shown], state))
    widths = [len(h) for h in shown]
    for line, _ in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    at = shown.index("STATE")
    start = sum(widths[:at]) + 2 * at  # where the state cell begins, after alignment
    out = [style.bold(_join(shown, widths))]
    for line, state in cells:
        painted = _paint(state, style)
        text = _join(line, widths)
        # Colour only the state cell, after alignment (escapes have no width).
        out.append(text[:start] + painted(state) + text[start + len(state) :])
    out.append(_summary(rows, [state for _, state in cells], style))
    return "\n".join(out)


def _summary(rows: list[ServiceRow], states: list[str], style: Style) -> str:
    if not rows:
        return style.dim("no service seen yet on system/health/+ or system/keepalive/+")
    # One line a service (on each broker); with instances, one line an instance.
    instances = sum(1 for row in rows if row.instance)
    services = len({row.name for row in rows}) if instances else len(rows)
    text = f"{services} service{'s' if services != 1 else ''}"
    if instances:
        text += f" ({instances} instance{'s' if instances != 1 else ''})"
    trouble = sum(1 for state in states if state not in PASSING)
    stopped = states.count("stopped")
    text += f", {trouble} not ok" + (f", {stopped} stopped" if stopped else "")
    return style.bad(text) if trouble else style.dim(text)


def _paint(state: str, style: Style) -> Any:
    if state == "ok":
        return style.good
    if state in ("stale", "unknown", "stopped"):
        return style.warn
    return style.bad


def _error_cell(row: ServiceRow) -> str:
    text = _one_line(row.error) if row.error else "-"
    if row.up_since is None:
        return text
    # The will's time is its CONNECT's: say "up since", never "offline since".
    return f"{text} (link up since {time.strftime('%H:%M:%S', time.localtime(row.up_since))})"


def _one_line(text: str) -> str:
    cleaned = " ".join(text.split())
    safe = "".join(ch if ch.isprintable() else "?" for ch in cleaned)
    return safe if len(safe) <= 60 else safe[:59] + "…"


def _join(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
