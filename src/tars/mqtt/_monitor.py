"""The liveness task: is the current link really alive?

TCP can stay "up" for minutes over a dead path (a half-open link), and MQTT keep-alive only
notices after 1.5x keep-alive. :class:`LinkMonitor` runs one task per client that, for whichever
link is current:

- publishes the heartbeat (``{"ok", "event": "heartbeat", "timestamp"}``) on
  ``system/keepalive/{client_id}`` every ``heartbeat_interval``, when enabled;
- expects that heartbeat back through the broker (the client consumes its own keepalive topic):
  none within ``watchdog_missed_heartbeats`` intervals means the link is stale;
- declares the link stale when QoS 1/2 publishes wait longer than ``publish_timeout`` for any
  acknowledgement.

A stale link is handed to ``on_stale``; the supervisor reconnects. The deadlines themselves are
the pure :class:`~tars.mqtt._liveness.Watchdog` and :class:`~tars.mqtt._liveness.HeartbeatSchedule`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from ._config import MQTTClientConfig
from ._connection import Connection
from ._health import encode_heartbeat, keepalive_topic
from ._liveness import HeartbeatSchedule, Watchdog
from ._message import Message

__all__ = ["LinkMonitor"]

_TICK: Final = 1.0  # the longest sleep: the publish-ack timeout is checked at least this often


class LinkMonitor:
    """Heartbeat, heartbeat watchdog and publish-ack timeout of one client."""

    def __init__(
        self,
        config: MQTTClientConfig,
        *,
        link: Callable[[], Connection | None],
        link_up: asyncio.Event,
        reading_paused: Callable[[], bool],
        unacked: Callable[[], int],
        last_ack: Callable[[], float],
        on_stale: Callable[[Connection, str], None],
    ) -> None:
        self._config = config
        self._link = link  # the live link, or None
        self._link_up = link_up  # set while a link is up (cleared on loss and at shutdown)
        self._reading_paused = reading_paused
        self._unacked = unacked
        self._last_ack = last_ack
        self._on_stale = on_stale
        self._watchdog = Watchdog(config.heartbeat_interval, config.watchdog_missed_heartbeats)
        self._waiting_since: float | None = None
        self.topic = keepalive_topic(config.effective_client_id)

    def link_started(self, now: float) -> None:
        """A new link: watch it from now."""
        self._watchdog.start(now)
        self._waiting_since = None

    def on_echo(self, msg: Message) -> None:
        """Our own heartbeat came back through the broker (an internal consumer)."""
        self._watchdog.heartbeat_returned(asyncio.get_running_loop().time())

    async def run(self) -> None:
        """The task body; runs until cancelled."""
        cfg = self._config
        loop = asyncio.get_running_loop()
        schedule = HeartbeatSchedule(cfg.heartbeat_interval)
        current: Connection | None = None
        while True:
            conn = self._link()
            if conn is None:
                if self._link_up.is_set():
                    # The link just died and the supervisor has not noticed yet: yield to it
                    # (Event.wait() on a set event would not).
                    await asyncio.sleep(_TICK / 10)
                else:
                    await self._link_up.wait()
                continue
            now = loop.time()
            if conn is not current:  # a new link: beat at once, watch from now
                current = conn
                schedule = HeartbeatSchedule(cfg.heartbeat_interval)
            wake = now + _TICK
            if self._reading_paused():
                # A "block" queue stopped reading the link on purpose: no echo and no ack can
                # come back meanwhile, which says nothing about the link. Watch afresh after.
                self._watchdog.start(now)
                self._waiting_since = time.monotonic()
            if cfg.enable_heartbeat:
                if schedule.due(now):
                    conn.publish_nowait(self.topic, encode_heartbeat(time.time()), qos=0)
                    schedule.sent(now)
                if self._watchdog.is_stale(now):
                    self._on_stale(conn, "no heartbeat came back through the broker")
                    continue
                wake = min(wake, schedule.next_due(), self._watchdog.deadline())
            if self._ack_overdue(time.monotonic()):
                self._on_stale(conn, f"no publish ack within {cfg.publish_timeout:g} s")
                continue
            await asyncio.sleep(max(0.0, wake - loop.time()))

    def _ack_overdue(self, now: float) -> bool:
        if self._unacked() == 0:
            self._waiting_since = None
            return False
        if self._waiting_since is None:
            self._waiting_since = now
            return False
        return now - max(self._waiting_since, self._last_ack()) > self._config.publish_timeout
