"""Request/response correlation: which answer completes which :meth:`MQTTClient.request
<tars.mqtt.MQTTClient.request>`.

Answers are consumed by an internal, queue-less subscription on each response topic (see
:meth:`~tars.mqtt._asyncio.dispatch.Dispatcher.add_internal`), so a full or slow handler
queue can never hold an answer back, and the correlation is registered before the request leaves.

An answer names its request in one of two ways: tars-core writes ``correlate: <request id>``;
the fleet's original client writes no ``correlate`` and reuses the request's id as the answer's
own ``id``. Both complete the request, so a native ``request()`` works against an original
responder.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from ._envelope import Envelope
from ._errors import EnvelopeError
from ._message import Message

__all__ = ["PendingRequests", "reply_to_of", "with_reply_to"]

log = logging.getLogger("tars.mqtt")


class PendingRequests:
    """Requests waiting for their answer, by request envelope id."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self.topics: set[str] = set()  # response topics already consumed

    def expect(self, request_id: str) -> asyncio.Future[Envelope]:
        """Register a request; its answer will complete the returned future."""
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        return fut

    def forget(self, request_id: str) -> None:
        """Answered, timed out or abandoned: a late answer is ignored."""
        self._pending.pop(request_id, None)

    def on_answer(self, msg: Message) -> None:
        """The internal consumer of a response topic."""
        try:
            envelope = msg.envelope
        except EnvelopeError:
            log.warning("non-envelope message on response topic %r ignored", msg.topic)
            return
        # Native answers say ``correlate``; original-format answers carry the request's id.
        key = envelope.correlate if envelope.correlate is not None else envelope.id
        fut = self._pending.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(envelope)


# MQTT 3.1.1 has no response topic property: a request says where to answer in its envelope,
# as the extra key ``reply_to`` (envelope readers ignore keys they do not know).


def with_reply_to(payload: bytes, topic: str) -> bytes:
    """``payload`` (an encoded envelope: a JSON object) with ``"reply_to": topic`` added."""
    return payload[:-1] + b',"reply_to":' + orjson.dumps(topic) + b"}"


def reply_to_of(payload: bytes) -> str | None:
    """The ``reply_to`` of an envelope's bytes, or None (none, or not an envelope)."""
    if b'"reply_to"' not in payload:
        return None
    try:
        value = orjson.loads(payload).get("reply_to")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if type(value) is str and value else None
