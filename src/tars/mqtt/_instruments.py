"""The instruments of one client (:class:`Instruments`), and the calls around a publish and a
handler call that tell them.

The instruments' own types (:class:`~tars.mqtt.Instrument`, :class:`~tars.mqtt.OutgoingPublish`,
:class:`~tars.mqtt.HandlerCall`) live in :mod:`tars.mqtt._instrument`, which this module loads
only when an instrument is added: a service without instruments does not pay for their
dataclasses at start-up (issue 21). See that module for what an instrument is told.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._argcheck import wrong_type

if TYPE_CHECKING:
    from ._instrument import Instrument, Outcome, SubscriptionInfo
    from ._message import Message

__all__ = ["Instruments"]

log = logging.getLogger("tars.mqtt.instrument")

_LOGGED_FAILURES = 3  # an instrument's first failures are logged with a traceback, then counted

_Hook = Callable[..., Any]


def _hook(instrument: Instrument, name: str) -> _Hook | None:
    """``instrument``'s method ``name``, or None when it is the base class's no-op."""
    from ._instrument import Instrument  # loaded by whoever made ``instrument``

    if getattr(type(instrument), name) is getattr(Instrument, name):
        return None
    method: _Hook = getattr(instrument, name)
    return method


class Instruments(list["Instrument"]):  # quoted: Instrument is loaded by add()
    """The instruments of one client: empty, hence falsy, until one is added.

    The client and each of its subscriptions hold the same object; they test it for truth and
    call :meth:`publish` or :meth:`handle` only when there is an instrument to tell. The
    methods an instrument overrides are looked up once, when it is added; the base class's
    no-ops are never called.
    """

    def __init__(self, client_id: str) -> None:
        super().__init__()
        self.client_id = client_id
        self.errors = 0  # instrument calls that raised (logged, then counted)
        self._publish_hooks: list[tuple[_Hook | None, _Hook | None]] = []
        self._handler_hooks: list[tuple[_Hook | None, _Hook | None]] = []

    def add(self, instrument: Instrument) -> Callable[[], None]:
        """Add ``instrument``; return a function that removes it again.

        Raises:
            InvalidArgumentTypeError: ``instrument`` is not a :class:`~tars.mqtt.Instrument`.
        """
        from ._instrument import Instrument

        if not isinstance(instrument, Instrument):
            raise wrong_type(
                "instrument", instrument, "an instance of a tars.mqtt.Instrument subclass"
            )
        self.append(instrument)
        self._resolve()

        def remove() -> None:
            if instrument in self:
                self.remove(instrument)
                self._resolve()

        return remove

    def _resolve(self) -> None:
        # New lists, never changed in place: a call in progress keeps the ones it started with.
        pairs = [
            (
                (_hook(i, "publish_started"), _hook(i, "publish_finished")),
                (_hook(i, "handler_started"), _hook(i, "handler_finished")),
            )
            for i in self
        ]
        self._publish_hooks = [p for p, _ in pairs if p != (None, None)]
        self._handler_hooks = [h for _, h in pairs if h != (None, None)]

    async def publish(
        self,
        send: Callable[..., Awaitable[None]],
        topic: str,
        payload: bytes | str,
        qos: int,
        retain: bool,
        wait: bool,
        properties: dict[str, Any] | None,
    ) -> None:
        """Call ``send`` (the client's publish) between the instruments' publish hooks."""
        hooks = self._publish_hooks
        if not hooks:
            await send(topic, payload, qos=qos, retain=retain, wait=wait, properties=properties)
            return
        from ._instrument import OutgoingPublish  # loaded by add(), as hooks are there

        given = properties.get("user_properties") if properties else None
        outgoing = OutgoingPublish(
            self.client_id, topic, payload, qos, retain, list(given) if given else []
        )
        states: list[Any] = []
        for started, _ in hooks:
            state = None
            if started is not None:
                try:
                    state = started(outgoing)
                except Exception:
                    self._failed(started)
            states.append(state)
        if outgoing.user_properties:
            properties = {**(properties or {}), "user_properties": outgoing.user_properties}
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            await send(topic, payload, qos=qos, retain=retain, wait=wait, properties=properties)
        except BaseException as exc:
            error = exc
            raise
        finally:
            outgoing.duration = time.perf_counter() - start
            for (_, finished), state in zip(reversed(hooks), reversed(states), strict=True):
                if finished is not None:
                    try:
                        finished(outgoing, state, error)
                    except Exception:
                        self._failed(finished)

    async def handle(
        self,
        subscription: SubscriptionInfo,
        message: Message,
        call: Callable[[Message], Awaitable[Outcome]],
    ) -> Outcome:
        """Run ``call`` (the subscription's handler call) between the instruments' hooks."""
        hooks = self._handler_hooks
        if not hooks:
            return await call(message)
        from ._instrument import HandlerCall  # loaded by add(), as hooks are there

        observed = HandlerCall(self.client_id, subscription, message)
        states: list[Any] = []
        for started, _ in hooks:
            state = None
            if started is not None:
                try:
                    state = started(observed)
                except Exception:
                    self._failed(started)
            states.append(state)
        outcome: Outcome = "cancelled"
        start = time.perf_counter()
        try:
            outcome = await call(message)
            return outcome
        finally:
            observed.duration = time.perf_counter() - start
            observed.outcome = outcome
            for (_, finished), state in zip(reversed(hooks), reversed(states), strict=True):
                if finished is not None:
                    try:
                        finished(observed, state)
                    except Exception:
                        self._failed(finished)

    def connected(self, broker: str) -> None:
        """Tell every instrument that a link to ``broker`` is up."""
        for instrument in list(self):
            try:
                instrument.connected(self.client_id, broker)
            except Exception:
                self._failed(instrument.connected)

    def disconnected(self, broker: str) -> None:
        """Tell every instrument that the link to ``broker`` was lost."""
        for instrument in list(self):
            try:
                instrument.disconnected(self.client_id, broker)
            except Exception:
                self._failed(instrument.disconnected)

    def _failed(self, method: _Hook) -> None:
        """Count an instrument's failure; log the first few with their traceback."""
        self.errors += 1
        if self.errors <= _LOGGED_FAILURES:
            log.exception(
                "instrument %r failed (%d so far; only the first %d are logged)",
                method,
                self.errors,
                _LOGGED_FAILURES,
                extra={"client_id": self.client_id},
            )
