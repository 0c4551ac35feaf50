"""Independent observers for the client's tests: Mosquitto's own command-line clients.

What ``mosquitto_sub`` prints and what ``mosquitto_pub`` sends do not depend on tars-core, so
they answer "is it really on the wire like that?" and "does a message from another client reach
the handler?" without trusting the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from tars.mqtt import MQTTClient
from tars.mqtt.testing import MosquittoBroker

__all__ = [
    "Captured",
    "Inbox",
    "MosquittoSub",
    "connected_client",
    "mosquitto_pub",
    "unique",
    "wait_until",
]

T = TypeVar("T")

_ids = itertools.count()
_MARK = "MSG\t"
# Tab-separated so a topic or a property never shifts the columns; the payload in hex so that
# binary and multi-line payloads come through byte for byte.
_FORMAT = _MARK + "%t\t%q\t%r\t%x\t%P"


def unique(prefix: str) -> str:
    """A client id or topic level no other test (or concurrent test run) uses."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


@dataclass(frozen=True, slots=True)
class Captured:
    """One message as ``mosquitto_sub`` printed it."""

    topic: str
    qos: int
    retain: bool
    payload: bytes
    user_properties: str  # ``key:value`` pairs as mosquitto_sub prints %P ("" when none)


class Inbox(Generic[T]):
    """Collects what a handler (or observer) received and lets a test wait for it."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[T]:
        """The first ``count`` items, once they are here; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items[:count]


class MosquittoSub:
    """A ``mosquitto_sub -V mqttv5`` process; ``async with`` returns once it is subscribed.

    ``count`` is ``-C`` (print that many messages, then stop); it is killed on exit either way.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        *topics: str,
        qos: int = 0,
        count: int | None = None,
        extra_args: Sequence[str] = (),
        version: str = "mqttv5",
    ) -> None:
        self._args = [
            "-V",
            version,
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-d",  # prints "Subscribed" once the SUBACK is in: the readiness signal
            "-q",
            str(qos),
            "-F",
            _FORMAT,
            *(arg for topic in topics for arg in ("-t", topic)),
            *extra_args,
        ]
        if count is not None:
            self._args += ["-C", str(count)]
        self.messages: Inbox[Captured] = Inbox()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> Self:
        stdbuf = shutil.which("stdbuf")
        # mosquitto_sub block-buffers a pipe: stdbuf makes it print each line as it happens.
        command = [stdbuf, "-oL"] if stdbuf else []
        self._process = await asyncio.create_subprocess_exec(
            *command,
            "mosquitto_sub",
            *self._args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read(), name="test-mosquitto-sub")
        try:
            async with asyncio.timeout(5):
                await self._subscribed.wait()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        stdout = self._process.stdout
        while line := await stdout.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text.startswith("Subscribed"):
                self._subscribed.set()
            elif text.startswith(_MARK):
                topic, qos, retain, hexed, props = text[len(_MARK) :].split("\t", 4)
                self.messages.add(
                    Captured(topic, int(qos), retain == "1", bytes.fromhex(hexed), props)
                )

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]:
        """The first ``count`` messages it printed."""
        return await self.messages.wait_for(count, timeout)

    async def close(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            # SIGKILL, not SIGTERM: mosquitto_sub 2.0.11 sometimes deadlocks (futex) while
            # disconnecting after -C, and its SIGTERM handler only asks for a disconnect.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def mosquitto_pub(
    broker: MosquittoBroker,
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    extra_args: Sequence[str] = (),
) -> None:
    """Publish ``payload`` byte for byte (read from stdin) with ``mosquitto_pub -V mqttv5``."""
    args = ["-V", "mqttv5", "-h", broker.host, "-p", str(broker.port), "-t", topic]
    # -s reads the payload from stdin; it refuses an empty one, which -n (null message) sends.
    args += ["-q", str(qos), "-s" if payload else "-n", *extra_args]
    if retain:
        args.append("-r")
    # With -n nothing reads stdin, and the process may be gone before an empty write reaches
    # its pipe: uvloop then raises on the write (asyncio ignores it). No pipe at all then.
    process = await asyncio.create_subprocess_exec(
        "mosquitto_pub",
        *args,
        stdin=asyncio.subprocess.PIPE if payload else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(5):
        _, err = await process.communicate(payload or None)
    if process.returncode != 0:
        raise AssertionError(f"mosquitto_pub failed ({process.returncode}): {err.decode()}")


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (for state with no event to await, e.g. a counter) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def connected_client(
    broker: MosquittoBroker, prefix: str = "client", **options: Any
) -> AsyncIterator[MQTTClient]:
    """A connected :class:`MQTTClient` with a fresh client id, shut down afterwards."""
    client = MQTTClient(broker.url, unique(prefix), **options)
    await client.connect()
    try:
        yield client
    finally:
        await client.shutdown()
