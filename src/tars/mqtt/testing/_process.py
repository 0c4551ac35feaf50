"""A broker process we started: spawn it, wait until it listens, stop or kill it by PID.

What every runner of a real broker for tests needs, whatever the broker: :class:`MosquittoBroker`
here, the ejabberd cluster of tars-core's own suite (``tests/support/ejabberd.py``). A broker is
ready when its log says so *and* its port accepts TCP: the port alone may be another process's,
the log alone may come before the listener opens. Processes are only ever signalled through the
``Popen`` we hold, never looked up by name, so a test never touches a broker it did not start.
:class:`BrokerRunner` is the lifecycle around them: a working directory, a lock, ``with``, and
a ``close`` that stops everything and cleans up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from .._errors import InvalidArgumentError

__all__ = ["BrokerProcess", "BrokerRunner", "ProcessExited", "accepts_tcp", "free_port"]

_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 30


def free_port(host: str) -> int:
    """Ask the kernel for a port nobody listens on (bind to port 0, read it, let it go)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_tcp(host: str, port: int) -> bool:
    """True when something accepts a TCP connection on ``host:port`` (within 0.5 s)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ProcessExited(RuntimeError):
    """The process exited while we waited for it to listen; :attr:`output` is what it logged
    meanwhile (for a runner that retries, e.g. on ``Address already in use``)."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


class BrokerProcess:
    """One child process, its stdout and stderr appended to ``log_path`` across restarts.

    ``name`` appears in errors (``"Mosquitto"``, ``"node tars1@localhost"``). Not thread-safe:
    the runner that owns it serialises start, stop and kill.
    """

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else None."""
        return self._popen.pid if self._popen is not None and self.is_running else None

    @property
    def is_running(self) -> bool:
        """True while the process is alive (it may not listen yet)."""
        return self._popen is not None and self._popen.poll() is None

    def log_text(self) -> str:
        """Everything logged so far, across restarts (empty before the first start)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        """The last lines of the log, headed with the process's name, for error messages."""
        lines = self.log_text().splitlines()[-_LOG_TAIL_LINES:]
        return f"{self.name} log (last lines):\n" + "\n".join(lines)

    def log_since(self, offset: int) -> str:
        """What was logged after byte ``offset`` (see :meth:`spawn`)."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def spawn(
        self,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start the process; return the log offset that its new lines will follow.

        Raises RuntimeError when it is already running.
        """
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return offset

    def wait_listening(
        self,
        host: str,
        port: int,
        *,
        offset: int,
        deadline: float,
        ready: Callable[[str], bool] = lambda _: True,
    ) -> None:
        """Return once ``ready(log since offset)`` holds and ``host:port`` accepts TCP.

        Raises :class:`ProcessExited` when the process exits first (it is reaped), and
        RuntimeError when ``deadline`` (``time.monotonic()``) passes first (it is killed);
        both carry the end of the log.
        """
        while True:
            popen = self._popen
            if popen is None or popen.poll() is not None:
                code = None if popen is None else popen.returncode
                self._popen = None
                raise ProcessExited(
                    f"{self.name} exited with code {code} while starting on port {port}\n"
                    f"{self.log_tail()}",
                    self.log_since(offset),
                )
            if ready(self.log_since(offset)) and accepts_tcp(host, port):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name} did not accept connections on port {port} in time\n"
                    f"{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def terminate(self) -> None:
        """Send SIGTERM (a graceful shutdown) without waiting: see :meth:`wait_or_kill`."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to exit, then SIGKILL it; always reaped.

        Returns False when it had to be killed. Lets a runner SIGTERM several processes first
        and wait for them together.
        """
        popen, self._popen = self._popen, None
        if popen is None:
            return True
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
            return False
        return True

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` s; False when it had to be killed."""
        self.terminate()
        return self.wait_or_kill(timeout)

    def kill(self) -> None:
        """``kill -9`` by PID and reap: nothing is flushed or said to the clients."""
        popen, self._popen = self._popen, None
        if popen is not None:
            if popen.poll() is None:
                popen.kill()
            popen.wait()


class BrokerRunner:
    """The lifecycle a broker runner wraps around its processes.

    A working directory (``workdir``, or a temporary one named ``prefix...`` that :meth:`close`
    removes), a lock that serialises start, stop and kill (the ``a``-prefixed methods of the
    runners run them in worker threads), ``with runner:`` (:meth:`start`, then :meth:`close`),
    and a :meth:`close` that is idempotent and final. A subclass provides :meth:`start` and
    :meth:`_stop_all`. Raises ValueError for a ``workdir`` with whitespace or one of ``unsafe``:
    broker configuration formats cannot quote them.
    """

    def __init__(
        self, workdir: str | os.PathLike[str] | None, *, prefix: str, unsafe: str = ""
    ) -> None:
        self._owns_workdir = workdir is None
        path = Path(workdir or tempfile.mkdtemp(prefix=prefix)).absolute()
        if any(char.isspace() or char in unsafe for char in str(path)):
            if self._owns_workdir:
                path.rmdir()
            what = f"whitespace or one of {unsafe}" if unsafe else "whitespace"
            raise InvalidArgumentError(f"workdir {str(path)!r} contains {what}")
        path.mkdir(parents=True, exist_ok=True)
        self._workdir = path
        self._lock = threading.RLock()
        self._closed = False

    @property
    def workdir(self) -> Path:
        """The directory holding the configuration, logs and data of the broker."""
        return self._workdir

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker; return once it accepts connections (each runner has its own
        default ``timeout``)."""
        raise NotImplementedError

    def _stop_all(self) -> None:
        """Stop every process the runner started, by PID (called once, by :meth:`close`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop every process the runner started and remove its temporary workdir (a given
        workdir is kept). Idempotent; the runner cannot be started again afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._stop_all()
            finally:
                if self._owns_workdir:
                    shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
