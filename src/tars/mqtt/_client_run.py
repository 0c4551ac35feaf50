"""How a service runs on :class:`~tars.mqtt.MQTTClient`: serve until a signal, or until closed.

Every service ends its ``main()`` the same way (:meth:`run_forever`), so SIGINT and SIGTERM
shut every service down gracefully, whoever wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._client_state import ClientState
from ._errors import ClientStateError

__all__ = ["RunMethods"]

log = logging.getLogger("tars.mqtt")


class RunMethods:
    """Mixed into :class:`~tars.mqtt.MQTTClient` (its state is the client's)."""

    if TYPE_CHECKING:
        _state: ClientState
        _closed: asyncio.Future[None] | None

        @property
        def client_id(self) -> str: ...

        async def connect(self) -> None: ...

        async def shutdown(self, timeout: float = ...) -> None: ...

    async def wait_for_disconnect(self) -> None:
        """Wait until the client is closed: by :meth:`shutdown` (from anywhere), or because
        the reconnect policy gave up. Returns at once when it is already closed.

        A lost link does not end the wait: the client reconnects and restores its
        subscriptions by itself (use :meth:`on_disconnect` to hear about lost links). This is
        the "serve until stopped" call of services that run their own signal handling.

        Raises :class:`~tars.mqtt.ClientStateError` before the first :meth:`connect`.
        """
        if self._state is ClientState.CREATED:
            raise ClientStateError("wait_for_disconnect() before connect()")
        closed = self._closed
        if closed is not None and not closed.done():
            await asyncio.shield(closed)

    async def run_forever(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Connect (unless already connected), serve until one of ``signals`` arrives or the
        client is shut down elsewhere, then :meth:`shutdown` gracefully: the last line of a
        service's ``main()``, so every service handles SIGINT/SIGTERM the same way.

        The handlers are installed with ``loop.add_signal_handler`` and the previous ones put
        back on return. Where that is not possible (Windows, or not in the main thread) it
        still shuts down when cancelled (Ctrl-C under ``asyncio.run``). Raises what
        :meth:`connect` raises.
        """
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[int] = loop.create_future()

        def on_signal(signum: int) -> None:
            if not stop.done():
                stop.set_result(signum)

        # Handlers before connecting: a signal while (re)trying to reach the broker, or just
        # after "ready" went out, must stop the service gracefully, not kill it.
        installed: list[tuple[int, Any]] = []
        for signum in signals:
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append((signum, previous))
        connecting: asyncio.Task[None] | None = None
        try:
            if self._state in (ClientState.CREATED, ClientState.CLOSED):
                connecting = loop.create_task(self.connect(), name="tars-mqtt-run-forever-connect")
                await asyncio.wait((connecting, stop), return_when=asyncio.FIRST_COMPLETED)
                if connecting.done():
                    connecting.result()  # raises what connect() raised
            closed = self._closed
            if not stop.done() and closed is not None and not closed.done():
                await asyncio.wait((stop, closed), return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                log.info("%s: signal %s received, shutting down", self.client_id, stop.result())
        finally:
            for signum, previous in installed:
                loop.remove_signal_handler(signum)
                if previous is not None:
                    signal.signal(signum, previous)
            if connecting is not None and not connecting.done():
                connecting.cancel()
                await asyncio.wait((connecting,))
                if not connecting.cancelled():
                    connecting.exception()  # retrieved: shutdown() below is the outcome
            await self.shutdown()
