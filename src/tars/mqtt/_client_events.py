"""The envelope-level methods of :class:`~tars.mqtt.MQTTClient`: events, request/reply, health.

They are built on the client's raw :meth:`~tars.mqtt.MQTTClient.publish` and add only what the
fleet's envelopes need (an id, a ``correlate``, the original fleet's answer format), so the
facade's own module stays about the lifecycle and the raw paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._argcheck import check_bool, check_int, check_number, check_str, check_type
from ._client_publish import PublishMethods
from ._core.protocol import MQTT311
from ._envelope import Envelope, encode_event
from ._errors import ConnectionLostError, InvalidArgumentError
from ._health import encode_health, health_topic
from ._message import Message
from ._requests import reply_to_of, with_reply_to
from ._topics import validate_topic_name

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ._asyncio.dispatch import Dispatcher
    from ._requests import PendingRequests

__all__ = ["EventMethods"]


class EventMethods(PublishMethods):
    """Mixed into :class:`~tars.mqtt.MQTTClient` (its state is the client's); built on the
    raw publish path of :class:`~._client_publish.PublishMethods`."""

    if TYPE_CHECKING:
        _dispatcher: Dispatcher
        _requests: PendingRequests

    async def publish_event(
        self,
        topic: str,
        event_type: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        correlation_id: str | None = None,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
    ) -> str:
        """Wrap ``data`` in an :class:`~tars.mqtt.Envelope` and publish it; return its id.

        ``correlation_id`` names the event this one answers: as ``correlate`` by default, or,
        with ``correlation_format="original"`` (for a fleet that still runs the original
        client), as the envelope's own id, which is then also what is returned.

        See :meth:`publish` for ``qos``, ``retain``, ``wait`` and the errors raised; also
        ``TypeError`` when ``data`` is not a mapping or pydantic model or cannot be serialized.
        """
        if correlation_id is not None and self._config.correlation_format == "original":
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, msg_id=correlation_id
            )
        else:
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, correlate=correlation_id
            )
        await self.publish(topic, payload, qos=qos, retain=retain, wait=wait)
        return msg_id

    async def request(
        self,
        topic: str,
        event_type: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        response_topic: str,
        qos: int = 1,
        timeout: float = 10.0,
    ) -> Envelope:
        """Publish an event and wait for the answer whose ``correlate`` is its id.

        The answer is expected on ``response_topic`` (an exact topic the client subscribes to
        on first use, and after every reconnect). The request carries MQTT 5
        ``response_topic`` and ``correlation_data`` too, so a responder can simply call
        :meth:`reply`; on an MQTT 3.1.1 link, which has no properties, the envelope carries
        ``reply_to`` instead (not with ``correlation_format="original"``: the original client
        refuses unknown envelope keys). The correlation is registered before the request
        leaves, so an answer can never arrive "too early".

        Use one response topic per service (e.g. ``"stt/answers"``): each distinct response
        topic stays subscribed for the client's life.

        Raises ``TimeoutError`` after ``timeout`` seconds, plus what :meth:`publish` raises.
        """
        check_str("response_topic", response_topic)
        validate_topic_name(response_topic)
        check_int("qos", qos)
        check_number("timeout", timeout)
        msg_id, payload = encode_event(event_type, data, source=self._config.source)
        requests = self._requests
        if response_topic not in requests.topics:
            requests.topics.add(response_topic)
            fut = asyncio.get_running_loop().create_future()
            sid, sent = self._session.add_internal(response_topic, handle=fut)
            self._dispatcher.add_internal(response_topic, sid, requests.on_answer)
            if sent:
                self._supervisor.flush_soon()
                # Lost meanwhile: the next link subscribes every internal topic anyway.
                with contextlib.suppress(ConnectionLostError):
                    await fut
        properties: dict[str, Any] | None = {
            "response_topic": response_topic,
            "correlation_data": msg_id.encode(),
        }
        if self._session.protocol_level == MQTT311:
            # MQTT 3.1.1 has no properties: the envelope says where to answer (docs/mqtt311.md).
            properties = None
            if self._config.correlation_format == "native":
                payload = with_reply_to(payload, response_topic)
        answer = requests.expect(msg_id)
        try:
            async with asyncio.timeout(timeout):
                await self.publish(topic, payload, qos=qos, properties=properties)
                return await answer
        finally:
            requests.forget(msg_id)

    async def reply(
        self,
        request: Message,
        event_type: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        topic: str | None = None,
        qos: int | None = None,
    ) -> str:
        """Answer a request received as a :class:`~tars.mqtt.Message`: publish an event whose
        ``correlate`` is the request's envelope id, on ``topic`` or else the request's MQTT 5
        response topic, at the request's QoS unless ``qos`` is given. Returns the answer's id.

        On MQTT 3.1.1, which has no response topic property, :meth:`request` writes the
        response topic into the envelope as ``reply_to``, and the answer goes there.

        A request that came without MQTT 5 correlation data (nor ``reply_to``) was not sent by
        :meth:`request`
        (the fleet's original client cannot send any): the answer is then written in the
        original format, which such a requester understands: no ``correlate``, and the
        request's id as its own id. So is every answer with ``correlation_format="original"``.

        Raises :class:`~tars.mqtt.EnvelopeError` when the request is not an envelope and
        ``ValueError`` when there is no topic to answer on.
        """
        check_type("request", request, Message)
        check_str("topic", topic, optional=True)
        check_int("qos", qos, optional=True)
        packet = request.packet
        # An MQTT 3.1.1 request carries its response topic in the envelope (``reply_to``).
        via_envelope = None if packet.response_topic else reply_to_of(request.payload)
        target = topic or packet.response_topic or via_envelope
        if not target:
            raise InvalidArgumentError("the request has no response topic: pass topic=")
        request_id = request.envelope.id
        qos = request.qos if qos is None else qos
        native = packet.correlation_data is not None or via_envelope is not None
        if not native or self._config.correlation_format == "original":
            msg_id, payload = encode_event(
                event_type, data, source=self._config.source, msg_id=request_id
            )
            await self.publish(target, payload, qos=qos)
            return msg_id
        return await self.publish_event(
            target, event_type, data, correlation_id=request_id, qos=qos
        )

    async def publish_health(
        self, ok: bool, event: str | None = None, error: str | None = None
    ) -> str:
        """Publish a retained ``health.status`` envelope on ``system/health/{client_id}``, QoS 1."""
        check_bool("ok", ok)
        check_str("event", event, optional=True)
        check_str("error", error, optional=True)
        cfg = self._config
        msg_id, payload = encode_health(ok, event, error, source=cfg.source, timestamp=time.time())
        await self.publish(health_topic(cfg.effective_client_id), payload, qos=1, retain=True)
        return msg_id
