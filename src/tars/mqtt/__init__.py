"""tars.mqtt: the asyncio MQTT 5 client of the TARS fleet.

Everything a service imports comes from here::

    from tars.mqtt import MQTTClient, Message, Envelope

The names below are the public API (checked by a test); modules starting with ``_`` are
internal and may change.
"""

from ._backoff import BackoffPolicy, ExponentialBackoff, NoRetry
from ._config import ConnectionParams, MQTTClientConfig, parse_mqtt_url, redact_url
from ._connection import Connection
from ._dispatch import Subscription, SubscriptionStats
from ._envelope import Envelope, decode_envelope, new_id
from ._errors import (
    ClientStateError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    EnvelopeError,
    InvalidTopicError,
    MQTTError,
    NotConnectedError,
    OutboxFullError,
    PayloadTooLarge,
    ProtocolError,
    PublishError,
    SubscribeError,
)
from ._health import HealthStatus, HeartbeatPayload, health_topic, keepalive_topic
from ._message import Message
from ._options import ClientOptions
from ._topics import topic_matches, validate_topic_filter, validate_topic_name
from .client import ClientState, ClientStats, MQTTClient

__all__ = [
    "BackoffPolicy",
    "ClientOptions",
    "ClientState",
    "ClientStateError",
    "ClientStats",
    "ConfigError",
    "ConnectError",
    "Connection",
    "ConnectionLostError",
    "ConnectionParams",
    "Envelope",
    "EnvelopeError",
    "ExponentialBackoff",
    "HealthStatus",
    "HeartbeatPayload",
    "InvalidTopicError",
    "MQTTClient",
    "MQTTClientConfig",
    "MQTTError",
    "Message",
    "NoRetry",
    "NotConnectedError",
    "OutboxFullError",
    "PayloadTooLarge",
    "ProtocolError",
    "PublishError",
    "SubscribeError",
    "Subscription",
    "SubscriptionStats",
    "decode_envelope",
    "health_topic",
    "keepalive_topic",
    "new_id",
    "parse_mqtt_url",
    "redact_url",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
]

__version__ = "0.1.0"
