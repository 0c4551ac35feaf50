"""OpenTelemetry traces across services: W3C trace context in MQTT 5 user properties.

Needs the ``otel`` extra (``pip install 'tars-core[otel]'``), the OpenTelemetry API; the service
installs and configures the SDK and its exporter as for anything else it traces::

    from tars.mqtt.otel import instrument

    instrument(client)          # the global tracer provider and propagator, unless given

Then every :meth:`~tars.mqtt.MQTTClient.publish` (``publish_event``, ``request``, ``reply``)
runs in a PRODUCER span, a child of the caller's current span, whose context travels with the
message as the user properties ``traceparent`` and ``tracestate`` (the global propagator's
fields: W3C trace context, plus baggage when so configured). Every handler call runs in a
CONSUMER span, a child of the context the message brought (or a root span when it brought
none); it is the current span inside the handler, so what the handler publishes, a
:meth:`~tars.mqtt.MQTTClient.reply` included, continues the same trace: a request, its handling
and its answer form one trace across services.

Span attributes follow the OpenTelemetry messaging conventions: ``messaging.system`` (``mqtt``),
``messaging.operation.type`` (``send`` / ``process``), ``messaging.destination.name`` (the
topic), ``messaging.destination.subscription.name`` (the filter of the handler),
``messaging.message.id`` (the envelope id), ``messaging.message.conversation_id`` (the
envelope's ``correlate``), ``messaging.client.id`` and ``messaging.message.body.size``; plus
``messaging.mqtt.qos`` and ``tars.mqtt.outcome`` (how the handler call ended). A handler that
fails or times out sets the span's status to ERROR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("tars.mqtt.otel needs the otel extra: pip install 'tars-core[otel]'") from exc

from . import __version__
from ._instrument import HandlerCall, Instrument, OutgoingPublish

if TYPE_CHECKING:
    from .client import MQTTClient

__all__ = ["OpenTelemetryInstrument", "instrument"]

_SYSTEM: Final = "mqtt"
_FAILED: Final = frozenset({"failed", "timed_out", "invalid"})


class OpenTelemetryInstrument(Instrument):
    """PRODUCER spans around publishes, CONSUMER spans around handler calls, trace context in
    MQTT 5 user properties. Register it with :meth:`MQTTClient.add_instrument
    <tars.mqtt.MQTTClient.add_instrument>` (or use :func:`instrument`).

    ``tracer_provider`` defaults to the global one and ``propagator`` to the global text-map
    propagator (W3C ``traceparent``/``tracestate`` unless configured otherwise), both read when
    used, so configuring OpenTelemetry after creating the instrument works.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("tars.mqtt", __version__, tracer_provider)
        self._propagator = propagator

    def _textmap(self) -> TextMapPropagator:
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    # --- publish: a PRODUCER span, its context injected into the user properties ------------

    def publish_started(self, publish: OutgoingPublish) -> Span:
        """Start the PRODUCER span and write its context into the publish's user properties."""
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": publish.topic,
            "messaging.client.id": publish.client_id,
            "messaging.mqtt.qos": publish.qos,
            "messaging.message.body.size": len(publish.payload),
        }
        if publish.envelope_id is not None:
            attributes["messaging.message.id"] = publish.envelope_id
        if publish.correlation_id is not None:
            attributes["messaging.message.conversation_id"] = publish.correlation_id
        span = self._tracer.start_span(
            f"publish {publish.topic}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        self._textmap().inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            # Ours replace any the caller forwarded: this span is the message's parent now.
            kept = [(k, v) for k, v in publish.user_properties if k not in carrier]
            publish.user_properties[:] = [*kept, *carrier.items()]
        return span

    def publish_finished(
        self, publish: OutgoingPublish, state: Any, error: BaseException | None
    ) -> None:
        """End the PRODUCER span; an error (refused, outbox full, cancelled) is recorded."""
        if not isinstance(state, Span):
            return
        if error is not None:
            state.record_exception(error)
            state.set_status(Status(StatusCode.ERROR, type(error).__name__))
        state.end()

    # --- handler: a CONSUMER span, current while the handler runs -------------------------

    def handler_started(self, call: HandlerCall) -> tuple[Span, object]:
        """Start the CONSUMER span as a child of the message's context and make it current."""
        msg = call.message
        carrier = dict(msg.packet.user_properties or ())
        parent = self._textmap().extract(carrier) if carrier else None
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": msg.topic,
            "messaging.destination.subscription.name": call.subscription.topic_filter,
            "messaging.client.id": call.client_id,
            "messaging.mqtt.qos": msg.qos,
            "messaging.message.body.size": len(msg.payload),
        }
        msg_id = msg.envelope_id
        if msg_id is not None:
            attributes["messaging.message.id"] = msg_id
            correlate = msg.json().get("correlate")  # parsed once: the handler reuses it
            if isinstance(correlate, str):
                attributes["messaging.message.conversation_id"] = correlate
        span = self._tracer.start_span(
            f"process {call.subscription.topic_filter}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def handler_finished(self, call: HandlerCall, state: Any) -> None:
        """End the CONSUMER span with the call's outcome; restore the previous context."""
        if not isinstance(state, tuple):
            return
        span, token = state
        otel_context.detach(token)
        outcome = call.outcome or "cancelled"
        span.set_attribute("tars.mqtt.outcome", outcome)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, f"handler {outcome}"))
        span.end()


def instrument(
    client: MQTTClient,
    *,
    tracer_provider: TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
) -> OpenTelemetryInstrument:
    """Trace ``client`` (an :class:`~tars.mqtt.MQTTClient`): add an
    :class:`OpenTelemetryInstrument` and return it."""
    otel = OpenTelemetryInstrument(tracer_provider=tracer_provider, propagator=propagator)
    client.add_instrument(otel)
    return otel
