"""amqtt (PyPI ``amqtt``), a Python MQTT 3.1.1 broker, in a process of its own: TCP and
WebSockets on free ports of 127.0.0.1, started and stopped by PID.

amqtt pins ``websockets==15.0.1`` and our ``ws`` extra needs ``websockets>=17``: it cannot live
in the project's venv. It gets a venv of its own, ``.venv-amqtt`` at the root of the checkout
(``make amqtt`` makes it; so does :func:`amqtt_command` when it is missing, which takes a minute
or two on a loaded machine), with the version pinned below. The broker is its ``amqtt`` script
with a configuration file written here; it is ready when it logs that both listeners are bound
and its TCP port accepts.

What amqtt 0.12.1 does, measured here: it speaks MQTT 3.1.1 only, and never answers an MQTT 5
CONNECT (no CONNACK, the link stays open): ``protocol="auto"`` falls back after
``connect_timeout``. Its WebSocket listener serves any path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tars.mqtt.testing._process import BrokerProcess, BrokerRunner, ProcessExited, free_port

__all__ = ["AMQTT_VERSION", "AmqttBroker", "amqtt_command"]

AMQTT_VERSION = "0.12.1"
VENV = Path(__file__).resolve().parents[2] / ".venv-amqtt"
_install_lock = threading.Lock()


def amqtt_command() -> Path:
    """The ``amqtt`` script of the amqtt venv, making the venv first when it is missing.

    Raises RuntimeError with pip's output when the install fails (no network, no PyPI).
    """
    script = VENV / "bin" / "amqtt"
    with _install_lock:
        if os.access(script, os.X_OK):
            return script
        steps = [
            [sys.executable, "-m", "venv", str(VENV)],
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", f"amqtt=={AMQTT_VERSION}"],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"cannot install amqtt {AMQTT_VERSION} in {VENV} (make amqtt): "
                    f"{' '.join(step)}\n{result.stdout}{result.stderr}"
                )
        return script


class AmqttBroker(BrokerRunner):
    """One amqtt broker: ``url`` (``mqtt://127.0.0.1:port``) and ``ws_url``
    (``ws://127.0.0.1:port/mqtt``), anonymous clients allowed.

    ``with AmqttBroker() as broker:`` starts it (installing amqtt first if needed) and stops
    it by PID on exit; :meth:`kill` is ``kill -9``.
    """

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        if host != "127.0.0.1":
            raise ValueError("the broker listens on 127.0.0.1 only")
        super().__init__(None, prefix="tars-amqtt-")
        self.host = host
        self.port = 0
        self.ws_port = 0
        self.process = BrokerProcess("amqtt", self.workdir / "amqtt.log")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/mqtt"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _config(self) -> str:
        return "\n".join(
            [
                "# Written by tests/support/amqtt.py: a throwaway broker for tests.",
                "listeners:",
                "  default:",
                "    type: tcp",
                f"    bind: {self.host}:{self.port}",
                "  ws:",
                "    type: ws",
                f"    bind: {self.host}:{self.ws_port}",
                "plugins:",
                "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
                "    allow_anonymous: true",
                "",
            ]
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker; return once both listeners are bound and TCP accepts.

        Raises RuntimeError with the end of its log; retries on other ports when one was
        taken meanwhile.
        """
        command = amqtt_command()
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + timeout
            while True:
                self.port, self.ws_port = free_port(self.host), free_port(self.host)
                config = self.workdir / "broker.yaml"
                config.write_text(self._config(), encoding="utf-8")
                offset = self.process.spawn([str(command), "-c", str(config)], cwd=self.workdir)
                bound = [f"bind to {self.host}:{port}" for port in (self.port, self.ws_port)]
                try:
                    self.process.wait_listening(
                        self.host,
                        self.port,
                        offset=offset,
                        deadline=deadline,
                        ready=lambda log, bound=bound: all(line in log for line in bound),
                    )
                    return
                except ProcessExited:
                    if time.monotonic() >= deadline:
                        raise

    def kill(self) -> None:
        """``kill -9`` by PID."""
        self.process.kill()

    def _stop_all(self) -> None:
        self.process.stop(10.0)
