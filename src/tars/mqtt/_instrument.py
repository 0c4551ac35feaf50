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

The core knows only :class:`~tars.mqtt._instruments.Instruments` (its own module, so that a
client without instruments never loads this one), a list that is empty (falsy) until someone
adds one, so a client without instruments pays one truth test per publish and per handler
call. What the instruments do (metrics, traces) lives beside the core, not in it:
:mod:`tars.mqtt.prometheus`, :mod:`tars.mqtt.otel`. An instrument that raises is logged (its
first failures) and counted, and never breaks a publish or a handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

if TYPE_CHECKING:
    from ._message import Message

__all__ = ["HandlerCall", "Instrument", "Outcome", "OutgoingPublish"]

Outcome = Literal["handled", "failed", "timed_out", "invalid", "cancelled"]
"""How a handler call ended: returned, raised, exceeded its timeout, got a message it cannot
take (not an envelope, not valid for its model: the handler was not called), or was cancelled
(unsubscribe or shutdown while it ran)."""


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
