"""The testing kit's broker in a process of its own (``python -m tars.mqtt.testing``), for
tests that need a broker URL with a property Mosquitto cannot have: ``--protocol 3.1.1``
makes it a 3.1.1-only broker (Mosquitto speaks every version on every listener)."""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType
from typing import Self


class DevBroker:
    """``with DevBroker("3.1.1") as broker:`` runs it on a free port until the block ends;
    :attr:`url` says where. Started and stopped by its PID, never by name."""

    host = "127.0.0.1"

    def __init__(self, protocol: str = "both") -> None:
        self.protocol = protocol
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "tars.mqtt.testing", "--port", "0"]
        self._process = process = subprocess.Popen(
            [*command, "--protocol", self.protocol], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it listens
        if "listening on mqtt://" not in line:
            self.close()
            raise RuntimeError(f"the dev broker did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
