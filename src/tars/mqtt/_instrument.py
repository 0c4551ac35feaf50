"""Observability by composition: instruments see every publish and every handler call.

An :class:`Instrument` is handed to :meth:`MQTTClient.add_instrument
<tars.mqtt.MQTTClient.add_instrument>`; the client then calls it

- around every :meth:`~tars.mqtt.MQTTClient.publish` (``publish_event``, ``request``, ``reply``
  and ``publish_health`` all go through it), with an :class:`OutgoingPublish` whose
  ``user_properties`` it may extend: that is how trace context travels in MQTT 5;
- around every handler call of a subscription, with a :class:`HandlerCall` that says, at the
  end, how the call went (``handled``, ``failed``, ``timed_out``, ``invalid``, ``cancelled``)
  and how long it took;
- when a link comes up or goes down.

The core knows only :class:`Instruments`, a list that is empty (falsy) until someone adds one,
so a client without instruments pays one truth test per publish and per handler call. What the
instruments do (metrics, traces) lives beside the core, not in it: :mod:`tars.mqtt.prometheus`,
:mod:`tars.mqtt.otel`. An instrument that raises is logged (its first failures) and counted, and
never breaks a publish or a handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

if TYPE_CHECKING:
    from ._message import Message

__all__ = ["HandlerCall", "Instrument", "Instruments", "Outcome", "OutgoingPublish"]

log = logging.getLogger("tars.mqtt.instrument")

Outcome = Literal["handled", "failed", "timed_out", "invalid", "cancelled"]
"""How a handler call ended: returned, raised, exceeded its timeout, got a message it cannot
take (not an envelope, not valid for its model: the handler was not called), or was cancelled
(unsubscribe or shutdown while it ran)."""

_LOGGED_FAILURES = 3  # an instrument's first failures are logged with a traceback, then counted


@dataclass(slots=True, eq=False)
class OutgoingPublish:
    """One call of :meth:`~tars.mqtt.MQTTClient.publish`, as an instrument sees it.

    Append ``(name, value)`` pairs to ``user_properties`` in
    :meth:`Instrument.publish_started` to send them as MQTT 5 user properties (the caller's own
    come first). ``duration`` (seconds) is set before :meth:`Instrument.publish_finished`: until
    the broker acknowledged a QoS 1/2 publish with ``wait=True``, until it is handed over
    otherwise.
    """

    client_id: str
    topic: str
    payload: bytes | str
    qos: int
    retain: bool
    user_properties: list[tuple[str, str]]
    duration: float = 0.0
    _ids: tuple[str | None, str | None] | None = field(default=None, init=False, repr=False)

    @property
    def envelope_id(self) -> str | None:
        """The ``id`` of the envelope being published, None when the payload is not one
        (read from the payload on first use, so instruments that never ask pay nothing)."""
        if self._ids is None:
            self._ids = _envelope_ids(self.payload)
        return self._ids[0]

    @property
    def correlation_id(self) -> str | None:
        """The envelope's ``correlate`` (the event it answers), None when it has none."""
        if self._ids is None:
            self._ids = _envelope_ids(self.payload)
        return self._ids[1]


class SubscriptionInfo(Protocol):
    """What an instrument may read of the :class:`~tars.mqtt.Subscription` a call runs in
    (a protocol, so that this module does not depend on the subscription's)."""

    @property
    def topic_filter(self) -> str: ...

    @property
    def qos(self) -> int: ...


@dataclass(slots=True, eq=False)
class HandlerCall:
    """One message on its way through one subscription's handler.

    ``outcome`` and ``duration`` (seconds, the handler's own time, model validation included)
    are set before :meth:`Instrument.handler_finished`; ``outcome`` is None until then.
    """

    client_id: str
    subscription: SubscriptionInfo
    message: Message
    outcome: Outcome | None = None
    duration: float = 0.0


class Instrument:
    """What the client tells an observer; override the methods you need (each is a no-op).

    The ``*_started`` methods return any object (a span, a start time); the client hands it
    back to the matching ``*_finished`` call, so one instrument can follow many concurrent
    calls without keeping state of its own. Calls are synchronous and on the client's event
    loop: keep them short. ``handler_started`` runs in the task that then runs the handler, so
    a context variable it sets (the current span) is what the handler sees.
    """

    def publish_started(self, publish: OutgoingPublish) -> Any:
        """A publish begins; extend ``publish.user_properties`` to add MQTT 5 user properties."""
        return None

    def publish_finished(
        self, publish: OutgoingPublish, state: Any, error: BaseException | None
    ) -> None:
        """The publish ended: ``error`` is what :meth:`~tars.mqtt.MQTTClient.publish` raised."""

    def handler_started(self, call: HandlerCall) -> Any:
        """A handler is about to be called with ``call.message``."""
        return None

    def handler_finished(self, call: HandlerCall, state: Any) -> None:
        """The handler call ended; ``call.outcome`` and ``call.duration`` say how."""

    def connected(self, client_id: str, broker: str) -> None:
        """A link to ``broker`` (a redacted URL) is up and the client usable on it."""

    def disconnected(self, client_id: str, broker: str) -> None:
        """The link to ``broker`` was lost (the client reconnects by itself)."""


_Hook = Callable[..., Any]


def _hook(instrument: Instrument, name: str) -> _Hook | None:
    """``instrument``'s method ``name``, or None when it is the base class's no-op."""
    if getattr(type(instrument), name) is getattr(Instrument, name):
        return None
    method: _Hook = getattr(instrument, name)
    return method


class Instruments(list[Instrument]):
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
        """Add ``instrument``; return a function that removes it again."""
        if not isinstance(instrument, Instrument):
            raise TypeError(
                f"an instrument must subclass tars.mqtt.Instrument, not {type(instrument)!r}"
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


def _envelope_ids(payload: bytes | str) -> tuple[str | None, str | None]:
    """The ``id`` and ``correlate`` fields of a JSON object payload (None where absent)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    msg_id, correlate = doc.get("id"), doc.get("correlate")
    return (
        msg_id if isinstance(msg_id, str) else None,
        correlate if isinstance(correlate, str) else None,
    )
