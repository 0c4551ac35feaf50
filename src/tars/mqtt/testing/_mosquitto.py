"""Run a real Mosquitto broker, on a free port, for tests.

The in-memory broker answers most questions; some can only be answered by the broker the fleet
runs in production: does a persistent session survive a broker restart, does a client reconnect
after ``kill -9``, what does the latency look like with a real TCP stack. :class:`MosquittoBroker`
starts one private Mosquitto per use, with its own configuration, log and persistence files in
its own directory, on a port nobody else uses (never 1883, never the system configuration), and
stops, kills or restarts it on demand.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import time
from pathlib import Path

from .._argcheck import check_bool, check_int, check_str, check_type
from ._process import BrokerProcess, BrokerRunner, ProcessExited, free_port

__all__ = ["MosquittoBroker"]

# Where distributions put the broker when /usr/sbin is not on a non-root user's PATH.
_FALLBACK_BINARIES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_RUNNING = re.compile(r"mosquitto version \S+ running")


def _find_binary(binary: str | None) -> str | None:
    """Return the path of the Mosquitto executable, or None when there is none."""
    if binary is not None:
        return shutil.which(binary)
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    for candidate in _FALLBACK_BINARIES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class MosquittoBroker(BrokerRunner):
    """A private Mosquitto process for tests, kept on one port across restarts.

    Use it as a context manager (``with MosquittoBroker() as broker:``) or through the
    ``mosquitto_broker`` / ``shared_mosquitto`` pytest fixtures. Clients connect to
    :attr:`url`. :meth:`stop` is a graceful shutdown (the broker saves its persistence file),
    :meth:`kill` is ``kill -9`` (it saves nothing more), :meth:`restart` does either and starts
    again on the same port. The ``a``-prefixed methods do the same off the event loop, so a
    test's loop keeps serving its clients while the broker goes down and comes back.

    ``persistence`` keeps sessions, queued messages and retained messages across restarts.
    ``workdir`` holds the configuration, log and persistence files; by default a temporary
    directory removed by :meth:`close`. ``extra_config`` is appended to the generated
    configuration, so its lines override the defaults written above it. ``binary`` names the
    Mosquitto executable (default: ``mosquitto`` on PATH, else ``/usr/sbin/mosquitto``).

    ``websockets`` adds a second listener, for MQTT over WebSockets (``listener N`` +
    ``protocol websockets``; Debian's Mosquitto is built with it), on :attr:`ws_port` (a free
    one unless given): clients reach it at :attr:`ws_url`. The TLS lines of ``extra_config``
    (``certfile``...) apply to the listener they follow: the WebSocket one, when it exists.

    Raises :class:`ValueError` for a ``workdir`` path with whitespace (Mosquitto's configuration
    format cannot quote it), and :class:`~tars.mqtt.InvalidArgumentTypeError` for an argument of
    the wrong type (``port="1883"`` would otherwise reach the configuration file as it is).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        extra_config: str = "",
        binary: str | None = None,
        websockets: bool = False,
        ws_port: int | None = None,
    ) -> None:
        check_int("port", port, optional=True)
        check_str("host", host)
        check_bool("persistence", persistence)
        check_type("workdir", workdir, (str, os.PathLike), optional=True)
        check_str("extra_config", extra_config)
        check_str("binary", binary, optional=True)
        check_bool("websockets", websockets)
        check_int("ws_port", ws_port, optional=True)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.ws_port: int | None = None
        if websockets or ws_port is not None:
            self.ws_port = ws_port if ws_port is not None else free_port(host)
        self.persistence = persistence
        self.extra_config = extra_config
        self._binary = binary
        super().__init__(workdir, prefix="tars-mosquitto-")
        self._process = BrokerProcess("Mosquitto", self.log_path)

    @staticmethod
    def available(binary: str | None = None) -> bool:
        """Tell whether a Mosquitto executable can be found (see ``binary`` in the class doc)."""
        return _find_binary(binary) is not None

    @property
    def url(self) -> str:
        """The ``mqtt://host:port`` URL clients connect to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        """The ``ws://host:port/mqtt`` URL of the WebSocket listener (None without one)."""
        if self.ws_port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.ws_port}/mqtt"

    @property
    def config_path(self) -> Path:
        """The configuration file Mosquitto is started with (written by :meth:`start`)."""
        return self._workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """Mosquitto's log file; its stdout and stderr go there too."""
        return self._workdir / "mosquitto.log"

    @property
    def persistence_path(self) -> Path:
        """The persistence database; each save replaces it (a new file renamed over it)."""
        return self._workdir / "mosquitto.db"

    @property
    def pid(self) -> int | None:
        """The process id of the running broker, or None when it is not running."""
        return self._process.pid

    @property
    def is_running(self) -> bool:
        """True while the broker process is alive (it may not accept connections yet)."""
        return self._process.is_running

    def log_text(self) -> str:
        """Everything the broker logged so far, across restarts (empty before the first start)."""
        return self._process.log_text()

    def config_text(self) -> str:
        """The configuration :meth:`start` writes."""
        lines = [
            "# Written by tars.mqtt.testing.MosquittoBroker: a throwaway broker for tests.",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Mosquitto's default (Nagle on) delays every small reply: ~44 ms per QoS 1 round trip.
            "set_tcp_nodelay true",
            # 0 = no limit. The default (20) is also sent as the CONNACK Receive Maximum, which
            # would cap every client at 20 QoS 1/2 publishes in flight; with 0 the broker's
            # outgoing window follows each client's own Receive Maximum instead.
            "max_inflight_messages 0",
            # Per client, beyond those in flight. The default (1000) silently drops messages for
            # a persistent-session subscriber that is away while a few thousand are published.
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            # Mosquitto's default set, written out so that extra_config can only add to it:
            # start() waits for the "running" line (information).
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self._workdir}/",
                # Save after every change (a queued or retained message, a subscription) instead
                # of every 30 minutes, so that a kill -9 loses as little as possible. It costs
                # 0.5-1.5 ms per routed QoS 1 message (measured): benchmarks use persistence=False.
                "autosave_interval 1",
                "autosave_on_changes true",
            ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto switches to the "mosquitto" user, which may not write
            # our workdir. Staying the current user keeps the files ours.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.ws_port is not None:
            # Listener options after this line (and extra_config's) are the WebSocket one's.
            lines += [f"listener {self.ws_port} {self.host}", "protocol websockets"]
        if self.extra_config:
            lines += ["# extra_config", self.extra_config]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once its port accepts TCP connections.

        A failed bind (the port still held by a previous broker) is retried until ``timeout``.
        Raises :class:`RuntimeError` (with the end of the log) when the executable is missing,
        the broker is already running or closed, exits, or does not listen within ``timeout``.
        """
        with self._lock:
            self._check_open()
            if self.is_running:
                raise RuntimeError(f"Mosquitto is already running on port {self.port}")
            binary = _find_binary(self._binary)
            if binary is None:
                raise RuntimeError(
                    "Mosquitto not found: install it (apt-get install mosquitto mosquitto-clients)"
                )
            self.config_path.write_text(self.config_text(), encoding="utf-8")
            deadline = time.monotonic() + timeout
            while not self._spawn_and_wait(binary, deadline):
                time.sleep(0.05)  # the old socket is going away; bind again shortly

    def _spawn_and_wait(self, binary: str, deadline: float) -> bool:
        """Spawn once; True when listening, False when the bind failed and may be retried."""
        offset = self._process.spawn([binary, "-c", str(self.config_path)])
        try:
            # The port may accept because another process holds it: the log says whether ours
            # opened its listener (it writes "running" after that), then TCP confirms.
            self._process.wait_listening(
                self.host,
                self.port,
                offset=offset,
                deadline=deadline,
                ready=lambda log: _RUNNING.search(log) is not None,
            )
        except ProcessExited as exc:
            if "Address already in use" in exc.output and time.monotonic() < deadline:
                return False
            raise
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker gracefully (SIGTERM): it saves its persistence file and exits.

        Does nothing when it is not running. Raises :class:`RuntimeError` when it does not exit
        within ``timeout``; it is then killed, and may not have saved its state.
        """
        with self._lock:
            if not self._process.stop(timeout):
                raise RuntimeError(
                    f"Mosquitto did not stop within {timeout} s and was killed\n"
                    f"{self._process.log_tail()}"
                )

    def kill(self) -> None:
        """Kill the broker (SIGKILL) and wait for it to exit: nothing more is saved."""
        with self._lock:
            self._process.kill()

    def restart(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """Stop (or, with ``kill``, kill) the broker, then start it again on the same port."""
        with self._lock:
            if kill:
                self.kill()
            else:
                self.stop(timeout)
            self.start(timeout)

    def _stop_all(self) -> None:
        self.stop()

    async def astart(self, timeout: float = 10.0) -> None:
        """:meth:`start` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.start, timeout)

    async def astop(self, timeout: float = 10.0) -> None:
        """:meth:`stop` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.stop, timeout)

    async def akill(self) -> None:
        """:meth:`kill` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.kill)

    async def arestart(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """:meth:`restart` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.restart, timeout, kill=kill)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<MosquittoBroker {self.url} {state}>"
