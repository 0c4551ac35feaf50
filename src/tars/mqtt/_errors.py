"""The exception tree of tars-core.

Every error the library raises on purpose derives from :class:`MQTTError`, so a service can
catch "anything MQTT" in one clause. One rule for bad arguments: a call refused because of an
argument's value raises an :class:`InvalidArgumentError` (also a :class:`ValueError`), because of
its type an :class:`InvalidArgumentTypeError` (also a :class:`TypeError`), so both
``except MQTTError`` and generic validation code (``except ValueError``) keep working::

    MQTTError
    ├── InvalidArgumentError (ValueError)     an argument's value is refused
    │   ├── ConfigError                       bad URL, bad option, bad environment variable
    │   │   └── ConfigTypeError (TypeError)   an option of the wrong type (also below)
    │   ├── InvalidTopicError                 topic name or filter breaks the MQTT rules
    │   └── PayloadTooLarge                   payload over the configured or broker maximum
    ├── InvalidArgumentTypeError (TypeError)  an argument of the wrong type (or shape)
    │   └── ConfigTypeError                   (the same class: both trees catch it)
    ├── EnvelopeError (ValueError)        bytes that are not a valid envelope
    ├── ClientStateError                  call that makes no sense in the client's state
    ├── NotConnectedError                 no link and nothing may be queued
    ├── ConnectError                      could not open a session (reason_code when refused)
    ├── ConnectionLostError               the link went away under an operation
    ├── ProtocolError                     the peer broke MQTT 5 (malformed or unexpected packet)
    ├── PublishError                      the broker refused a publish (reason_code)
    │   └── PoisonMessageError            the broker ended link after link on this packet
    ├── SubscribeError                    the broker refused a subscription (reason_code)
    │   └── PoisonMessageError            (the same class: both trees catch it)
    └── OutboxFullError                   the outbox is full and its policy is "raise"

Transport errors (``OSError``, ``ssl.SSLError``, ``socket.gaierror``) are caught at the connection
boundary and re-raised as one of these with the original as ``__cause__``.

An error that carries a broker's MQTT 5 reason code names it in its message ("reason code 0x87
Not authorized"), from the one table in :mod:`._reasons`.
"""

from __future__ import annotations

from ._reasons import describe, name_in

__all__ = [
    "ClientStateError",
    "ConfigError",
    "ConfigTypeError",
    "ConnectError",
    "ConnectionLostError",
    "EnvelopeError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidTopicError",
    "MQTTError",
    "NotConnectedError",
    "OutboxFullError",
    "PayloadTooLarge",
    "PoisonMessageError",
    "ProtocolError",
    "PublishError",
    "SubscribeError",
]


class MQTTError(Exception):
    """Root of every error tars-core raises on purpose."""


class InvalidArgumentError(MQTTError, ValueError):
    """An argument's value is refused (a qos of 3, a negative limit, an unknown policy...).

    Raised before anything is sent or changed, so the call can be fixed and retried.
    """


class InvalidArgumentTypeError(MQTTError, TypeError):
    """An argument has the wrong type or shape (a handler that takes no argument, an event
    type that is not a ``str``, data that cannot be encoded as JSON...).

    Raised before anything is sent or changed.
    """


class ConfigError(InvalidArgumentError):
    """A configuration value is invalid.

    ``field`` names the option (or environment variable) at fault, so the message can point at
    the line of configuration to fix. The message never contains a password.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ConfigTypeError(ConfigError, InvalidArgumentTypeError):
    """A configuration option of the wrong type (``mqtt_url=123``, ``keepalive=[5]``).

    Both a :class:`ConfigError` (``field`` names the option) and an
    :class:`InvalidArgumentTypeError`, so ``except TypeError`` sees a wrong type as it would
    anywhere else in Python, and ``except ConfigError`` still sees every bad option.
    """


class InvalidTopicError(InvalidArgumentError):
    """A topic name or topic filter does not follow the MQTT 5 rules."""

    def __init__(self, topic: str, reason: str) -> None:
        shown = topic if len(topic) <= 200 else topic[:200] + "..."
        super().__init__(f"invalid topic {shown!r}: {reason}")
        self.topic = topic
        self.reason = reason


class PayloadTooLarge(InvalidArgumentError):
    """A payload is larger than the configured maximum or the broker's maximum packet size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class EnvelopeError(MQTTError, ValueError):
    """Bytes could not be read as an :class:`~tars.mqtt.Envelope` (not JSON, wrong shape)."""


class ClientStateError(MQTTError):
    """The call does not make sense in the client's current state (e.g. publish after close)."""


class NotConnectedError(MQTTError):
    """There is no connection to the broker and the operation may not wait or be queued."""


# CONNACK reasons that no retry will fix while the configuration stays the same.
_FATAL_CONNACK = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})


class ConnectError(MQTTError):
    """A connection or session could not be established.

    ``reason_code`` is the broker's CONNACK reason code when the broker refused us, else None
    (DNS failure, refused TCP connection, TLS failure, timeout...). ``refused`` is true when the
    TCP connection itself was refused (nothing listens on the port): the reconnect policy retries
    that sooner, since it costs the broker's host nothing. ``server_reference`` is the MQTT 5
    Server Reference of a redirecting CONNACK (0x9C use another server, 0x9D server moved).
    ``fatal`` is true when no retry can fix it with the same configuration: a refusal such as
    bad credentials or not authorized, the broker's TLS certificate failing verification, or
    the broker refusing our client certificate; ``connect()`` then fails at once.
    ``http_status`` is the HTTP status of a refused WebSocket upgrade (``ws://``, ``wss://``:
    401, 404, 502...), else None.
    """

    def __init__(
        self,
        message: str,
        reason_code: int | None = None,
        *,
        refused: bool = False,
        server_reference: str | None = None,
        fatal: bool = False,
        http_status: int | None = None,
    ) -> None:
        super().__init__(name_in(message, reason_code))
        self.reason_code = reason_code
        self.http_status = http_status
        self.refused = refused
        self.server_reference = server_reference
        self.fatal = fatal or reason_code in _FATAL_CONNACK


class ConnectionLostError(MQTTError):
    """The link to the broker was lost while an operation was waiting on it.

    ``reason_code`` is the reason of the broker's DISCONNECT when the broker ended the link
    (e.g. 0x8B Server shutting down, 0x8E Session taken over), else None.
    """

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(name_in(message, reason_code))
        self.reason_code = reason_code


class ProtocolError(MQTTError):
    """The peer sent something MQTT 5 does not allow (malformed or unexpected packet)."""

    def __init__(self, message: str, reason_code: int = 0x82) -> None:
        super().__init__(name_in(message, reason_code))
        self.reason_code = reason_code


class PublishError(MQTTError):
    """The broker answered a QoS 1/2 publish with a failure reason code."""

    def __init__(self, message: str, reason_code: int) -> None:
        super().__init__(name_in(message, reason_code))
        self.reason_code = reason_code


class SubscribeError(MQTTError):
    """The broker refused a subscription (SUBACK/UNSUBACK with a failure reason code)."""

    def __init__(self, topic: str, reason_code: int, why: str | None = None) -> None:
        super().__init__(
            f"subscription to {topic!r} refused by the broker (reason code {describe(reason_code)}"
            + (f": {why})" if why else ")")
        )
        self.topic = topic
        self.reason_code = reason_code


class PoisonMessageError(PublishError, SubscribeError):
    """The poison-message breaker gave up on a QoS 1/2 publish or on a subscription: each of
    the last ``links`` links in a row ended, closed by the broker, while this packet was the
    oldest one it had not answered (3, or more when only bare closes blamed a publish: they
    must span 10 s). Sent again, it would take every next link down with it (and with it
    every other message). A publish was taken out of the resend set and the durable outbox;
    a subscription's filter out of the subscriptions restored on each link (``subscription``
    is then true, ``topic`` the filter, and its :class:`~tars.mqtt.Subscription` ended with
    this error).

    Both a :class:`PublishError` and a :class:`SubscribeError`, so that the ``except`` a
    caller already has around ``publish()`` or ``subscribe()`` catches it.

    ``reason_code`` is the broker's DISCONNECT reason on the last of those links (0x81
    Malformed Packet from Mosquitto for a topic it calls malformed), or 0x80 when the broker
    closed the link without one (``broker_reason`` is then None; never for a subscription,
    which only a DISCONNECT that blames a packet strikes).
    """

    def __init__(
        self, topic: str, links: int, broker_reason: int | None, *, subscription: bool = False
    ) -> None:
        shown = topic if len(topic) <= 200 else topic[:200] + "..."
        why = (
            "the broker closed the link each time without a reason"
            if broker_reason is None
            else f"the broker's DISCONNECT each time: reason code {broker_reason:#04x}"
        )
        if subscription:
            message = (
                f"subscription to {shown!r} given up: the broker ended {links} links in a row "
                f"while its SUBSCRIBE was the oldest request it had not answered ({why}); it "
                "is no longer restored"
            )
        else:
            message = (
                f"publish on {shown!r} given up: the broker ended {links} links in a row while "
                f"it was the oldest unacknowledged message ({why})"
            )
        reason_code = 0x80 if broker_reason is None else broker_reason
        # Not through the two bases' __init__ (their signatures differ): their attributes here.
        MQTTError.__init__(self, name_in(message, reason_code))
        self.reason_code = reason_code
        self.topic = topic
        self.links = links
        self.broker_reason = broker_reason
        self.subscription = subscription


class OutboxFullError(MQTTError):
    """The outbox is full and its overflow policy is ``raise``."""
