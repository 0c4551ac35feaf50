"""The fleet as the ``fleet`` command sees it: a pure tracker and its table.

Services report on two topics (see ``tars.mqtt._health``): a retained ``health.status``
envelope on ``system/health/{id}`` (replaced by the will's ``offline`` status when a service
dies) and bare heartbeats on ``system/keepalive/{id}``. :class:`FleetView` folds those messages
into one row per service; :func:`render_table` turns the rows into the text a person reads.
Time is always passed in (``now``, the monotonic clock of the caller), so both are tested
without a broker or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ._render import PLAIN, Style, format_age

__all__ = ["FleetView", "ServiceRow", "render_table"]

HEALTH_PREFIX = "system/health/"
KEEPALIVE_PREFIX = "system/keepalive/"


@dataclass
class ServiceRow:
    """What is known of one service."""

    service: str
    broker: str = ""
    ok: bool | None = None
    """The last health status's ``ok``; None when no status was seen (heartbeats only)."""
    event: str | None = None
    error: str | None = None
    status_at: float | None = None
    """When the last health status arrived (caller's clock)."""
    heartbeat_at: float | None = None
    """When the last heartbeat arrived (caller's clock); None: none heard."""


class FleetView:
    """Folds health and heartbeat messages into rows, and says which rows are in trouble.

    A service is *stale* when its last heartbeat arrived more than ``stale_after`` seconds ago;
    one never heard heartbeating is stale only with ``expect_heartbeats`` (services may run
    without heartbeats) and once the view has listened for ``stale_after`` seconds.
    """

    def __init__(
        self, *, stale_after: float, expect_heartbeats: bool = False, started: float = 0.0
    ) -> None:
        self.stale_after = stale_after
        self.expect_heartbeats = expect_heartbeats
        self.started = started
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
            row.status_at = now
        else:
            row.heartbeat_at = now
        return True

    def state(self, row: ServiceRow, now: float) -> str:
        """``ok``, ``stale``, ``unhealthy``, ``offline`` or ``unknown`` (no status yet)."""
        if row.ok is False:
            return "offline" if row.event == "offline" else "unhealthy"
        if self.is_stale(row, now):
            return "stale"
        return "ok" if row.ok else "unknown"

    def is_stale(self, row: ServiceRow, now: float) -> bool:
        """True when the service stopped heartbeating (see the class docstring)."""
        if row.heartbeat_at is not None:
            return now - row.heartbeat_at > self.stale_after
        return self.expect_heartbeats and now - self.started >= self.stale_after

    def in_trouble(self, now: float) -> list[ServiceRow]:
        """Rows whose state is not ``ok`` (what ``--check`` fails on)."""
        return [row for row in self.sorted_rows() if self.state(row, now) != "ok"]

    def sorted_rows(self) -> list[ServiceRow]:
        """Rows by service name, then broker."""
        return sorted(self.rows.values(), key=lambda row: (row.service, row.broker))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_HEADERS = ("SERVICE", "STATE", "EVENT", "HEARTBEAT", "STATUS", "ERROR", "BROKER")


def render_table(view: FleetView, now: float, style: Style = PLAIN) -> str:
    """The fleet as an aligned text table, one service a line, with a summary line.

    ``HEARTBEAT`` and ``STATUS`` are the ages of the last heartbeat and health status; the
    ``BROKER`` column appears only when services were seen on more than one broker.
    """
    rows = view.sorted_rows()
    brokers = {row.broker for row in rows}
    headers = _HEADERS if len(brokers) > 1 else _HEADERS[:-1]
    cells: list[tuple[list[str], str]] = []
    for row in rows:
        state = view.state(row, now)
        line = [
            _one_line(row.service),
            state,
            row.event or "-",
            format_age(None if row.heartbeat_at is None else now - row.heartbeat_at),
            format_age(None if row.status_at is None else now - row.status_at),
            _one_line(row.error) if row.error else "-",
            row.broker,
        ][: len(headers)]
        cells.append((line, state))
    widths = [len(h) for h in headers]
    for line, _ in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    out = [style.bold(_join(list(headers), widths))]
    for line, state in cells:
        painted = _paint(state, style)
        text = _join(line, widths)
        # Colour only the state cell, after alignment (escapes have no width).
        start = widths[0] + 2
        out.append(text[:start] + painted(line[1]) + text[start + len(line[1]) :])
    trouble = sum(1 for _, state in cells if state != "ok")
    summary = f"{len(cells)} service{'s' if len(cells) != 1 else ''}, {trouble} not ok"
    if not cells:
        summary = "no service seen yet on system/health/+ or system/keepalive/+"
    out.append(style.dim(summary) if not trouble else style.bad(summary))
    return "\n".join(out)


def _paint(state: str, style: Style) -> Any:
    if state == "ok":
        return style.good
    if state in ("stale", "unknown"):
        return style.warn
    return style.bad


def _one_line(text: str) -> str:
    cleaned = " ".join(text.split())
    safe = "".join(ch if ch.isprintable() else "?" for ch in cleaned)
    return safe if len(safe) <= 60 else safe[:59] + "…"


def _join(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
