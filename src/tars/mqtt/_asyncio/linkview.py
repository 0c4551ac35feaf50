"""What :attr:`MQTTClient.client <tars.mqtt.MQTTClient.client>` returns: a narrow, documented
view of the current link, for the protocol-level needs the client does not wrap.

Publish with any MQTT 5 property, subscribe with options (``no_local``, retain handling...),
read the broker's CONNACK and whether it resumed our session, and stop reading for a while.
Everything goes through the one session, so a publish made here is resent after a reconnect
like any other; a subscription made here is not in the client's table (it is not restored, and
its messages reach only listeners added with
:meth:`~tars.mqtt.MQTTClient.add_message_listener`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from mqtt5 import ConnAckPacket, QoS, TopicFilter

from .._argcheck import check_bool, check_int, check_type
from .._checks import check_properties
from .._core.protocol import MQTT311
from .._core.session import Session
from .._errors import ConnectionLostError, InvalidArgumentError
from .._properties import check_user_properties, malformed_property
from .._topics import validate_topic_filter, validate_topic_name
from .connection import Connection, settle

__all__ = ["LinkView"]


class LinkView:
    """The current link, as :attr:`MQTTClient.client <tars.mqtt.MQTTClient.client>` shows it.

    Valid for one link: methods raise :class:`~tars.mqtt.ConnectionLostError` once it is gone
    (read :attr:`MQTTClient.client <tars.mqtt.MQTTClient.client>` again for the next one).
    """

    __slots__ = ("_conn", "_session")

    def __init__(self, conn: Connection, session: Session) -> None:
        self._conn = conn
        self._session = session

    def __repr__(self) -> str:
        return f"<LinkView client_id={self.client_id!r} connected={self.is_connected}>"

    @property
    def is_connected(self) -> bool:
        """True while this link is up."""
        return self._conn.is_connected

    @property
    def client_id(self) -> str:
        """The client id in use (the broker's assigned one if ours was empty)."""
        return self._session.client_id

    @property
    def connack(self) -> ConnAckPacket | None:
        """The broker's CONNACK (``mqtt5.ConnAckPacket``): its limits and features."""
        return self._session.connack

    @property
    def session_present(self) -> bool:
        """Whether the broker resumed our session on this link."""
        return self._session.session_present

    @property
    def write_paused(self) -> bool:
        """True while the socket's write buffer is over its high-water mark."""
        return self._conn.write_paused

    def pause_reading(self) -> None:
        """Stop reading from the link (calls nest: each needs a :meth:`resume_reading`)."""
        self._conn.pause_reading()

    def resume_reading(self) -> None:
        """Undo one :meth:`pause_reading`."""
        self._conn.resume_reading()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
        **properties: Any,
    ) -> int:
        """Publish with any MQTT 5 PUBLISH property a caller may set (``content_type``,
        ``correlation_data``, ``message_expiry_interval``, ``payload_format_indicator``,
        ``response_topic``, ``user_properties``; the codec's other keywords, such as
        ``topic_alias`` or ``subscription_ids``, are the session's or the broker's). An MQTT
        3.1.1 link sends none of them (counted in ``stats.properties_dropped``, said once).

        Returns the broker's reason code (0 for QoS 0 or ``wait=False``). The topic and the
        properties follow the rules of :meth:`MQTTClient.publish
        <tars.mqtt.MQTTClient.publish>` (a string the broker would call malformed must not
        reach it by a side door); the size is left to the codec's and the broker's limits.

        Raises :class:`~tars.mqtt.InvalidTopicError` (the topic or ``response_topic``),
        :class:`~tars.mqtt.InvalidArgumentTypeError` (a wrong type, or another keyword) and
        :class:`~tars.mqtt.InvalidArgumentError` (a control or non-character in another string
        property) before anything is sent.
        """
        validate_topic_name(topic)
        check_type("payload", payload, (bytes, bytearray, memoryview))
        check_int("qos", qos)
        check_bool("retain", retain)
        check_bool("wait", wait)
        if properties:
            check_properties(topic, properties)
        conn = self._require()
        fut: asyncio.Future[int] | None = None
        if qos and wait:
            fut = asyncio.get_running_loop().create_future()
        props = properties or None
        now = asyncio.get_running_loop().time()  # starts the ack clock of a QoS 1/2 publish
        settle(
            self._session.publish(
                topic, payload, qos, retain, handle=fut, properties=props, now=now
            )
        )
        conn.flush_soon()
        if conn.write_paused:
            await conn.drain()
        return 0 if fut is None else await fut

    async def subscribe(
        self,
        *filters: TopicFilter | str,
        qos: int = 2,
        subscription_id: int | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> tuple[int, ...]:
        """Send one SUBSCRIBE (strings or ``mqtt5.TopicFilter`` with options); returns the
        SUBACK reason codes as they are. Not restored after a reconnect.

        Raises :class:`~tars.mqtt.InvalidArgumentError` on an MQTT 3.1.1 link for what only
        MQTT 5 can say (a subscription identifier, user properties, ``no_local``,
        ``retain_handling``), :class:`~tars.mqtt.InvalidTopicError`,
        :class:`~tars.mqtt.InvalidArgumentTypeError` and
        :class:`~tars.mqtt.InvalidArgumentError` (a control or non-character in a user
        property) before anything is sent."""
        for f in filters:
            validate_topic_filter(f.pattern if isinstance(f, TopicFilter) else f)
        check_int("qos", qos)
        check_int("subscription_id", subscription_id, optional=True)
        _check_user_properties("subscribe", user_properties)
        conn = self._require()
        topic_filters = [
            f if isinstance(f, TopicFilter) else TopicFilter(f, max_qos=QoS(qos)) for f in filters
        ]
        if self._session.protocol_level == MQTT311:
            mqtt5_only = subscription_id is not None or bool(user_properties)
            for tf in topic_filters:
                mqtt5_only |= bool(tf.no_local) or int(tf.retain_handling) != 0
            if mqtt5_only:
                raise InvalidArgumentError(
                    "subscription identifiers, user properties, no_local and retain_handling "
                    "are MQTT 5 only; this link speaks MQTT 3.1.1 (docs/mqtt311.md)"
                )
        fut: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._session.subscribe(
            topic_filters,
            handle=fut,
            subscription_id=subscription_id,
            user_properties=user_properties,
        )
        conn.flush()
        return await fut

    async def unsubscribe(
        self, *patterns: str, user_properties: list[tuple[str, str]] | None = None
    ) -> tuple[int, ...]:
        """Send one UNSUBSCRIBE; returns the UNSUBACK reason codes (on MQTT 3.1.1, which has
        none, Success for each).

        Raises :class:`~tars.mqtt.InvalidTopicError`,
        :class:`~tars.mqtt.InvalidArgumentTypeError` and
        :class:`~tars.mqtt.InvalidArgumentError` (a control or non-character in a user
        property) before anything is sent."""
        for pattern in patterns:
            validate_topic_filter(pattern)
        _check_user_properties("unsubscribe", user_properties)
        conn = self._require()
        if user_properties and self._session.protocol_level == MQTT311:
            raise InvalidArgumentError(
                "user properties are MQTT 5 only; this link speaks MQTT 3.1.1 (docs/mqtt311.md)"
            )
        fut: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._session.unsubscribe(list(patterns), handle=fut, user_properties=user_properties)
        conn.flush()
        return await fut

    def _require(self) -> Connection:
        if not self._conn.is_connected:
            raise ConnectionLostError("the link to the broker is not up")
        return self._conn


def _check_user_properties(call: str, user_properties: list[tuple[str, str]] | None) -> None:
    """The user properties of a SUBSCRIBE or UNSUBSCRIBE: their type, then the string rule
    (:mod:`tars.mqtt._properties`), before a packet id is taken or anything is sent."""
    check_user_properties("user_properties", user_properties)
    if user_properties:
        reason = malformed_property(None, None, user_properties)
        if reason is not None:
            raise InvalidArgumentError(f"{call} refused: {reason}")
