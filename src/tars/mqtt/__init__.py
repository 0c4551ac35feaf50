"""tars.mqtt: the asyncio MQTT 5 client of the TARS fleet.

Everything a service imports comes from here::

    from tars.mqtt import MQTTClient, Message, Envelope

The names below are the public API (checked by a test); modules starting with ``_`` are
internal and may change.

Each name is imported on first use (:data:`_EXPORTS` says from where), so ``import tars.mqtt``
costs almost nothing and a program pays only for what it touches: on a Raspberry Pi every
service start would otherwise load the whole client, pydantic included, before its first line.
"""

# Private aliases: every public attribute of this module is a name of the API (a test checks).
import importlib as _importlib
import typing as _typing

# Public name -> the private module defining it. __all__, attribute access and dir() follow this
# table; the imports for type checkers at the end must match it (a test checks they do).
_EXPORTS: dict[str, str] = {
    "BackoffPolicy": "._backoff",
    "ExponentialBackoff": "._backoff",
    "NoRetry": "._backoff",
    "ConnectionParams": "._config",
    "MQTTClientConfig": "._config",
    "parse_mqtt_url": "._config",
    "redact_url": "._config",
    "Subscription": "._asyncio.subscription",
    "SubscriptionStats": "._asyncio.subscription",
    "Envelope": "._envelope",
    "decode_envelope": "._envelope",
    "new_id": "._envelope",
    "ClientStateError": "._errors",
    "ConfigError": "._errors",
    "ConnectError": "._errors",
    "ConnectionLostError": "._errors",
    "EnvelopeError": "._errors",
    "InvalidArgumentError": "._errors",
    "InvalidArgumentTypeError": "._errors",
    "InvalidTopicError": "._errors",
    "MQTTError": "._errors",
    "NotConnectedError": "._errors",
    "OutboxFullError": "._errors",
    "PayloadTooLarge": "._errors",
    "PoisonMessageError": "._errors",
    "ProtocolError": "._errors",
    "PublishError": "._errors",
    "SubscribeError": "._errors",
    "HealthStatus": "._models",
    "LinkView": "._asyncio.linkview",
    "HeartbeatPayload": "._models",
    "health_topic": "._health",
    "keepalive_topic": "._health",
    "HandlerCall": "._instrument",
    "Instrument": "._instrument",
    "OutgoingPublish": "._instrument",
    "Message": "._message",
    "ClientOptions": "._options",
    "topic_matches": "._topics",
    "validate_topic_filter": "._topics",
    "validate_topic_name": "._topics",
    "ClientState": ".client",
    "ClientStats": ".client",
    "MQTTClient": ".client",
}

__all__ = sorted(_EXPORTS)

__version__ = "0.1.0"


if (
    not _typing.TYPE_CHECKING
):  # hidden from type checkers: a typo must stay an error for them, not Any

    def __getattr__(name: str) -> _typing.Any:
        """Import a public name on first access, then keep it as a plain module attribute."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if _typing.TYPE_CHECKING:  # what type checkers and IDEs read (the same table, as imports)
    from ._asyncio.linkview import LinkView as LinkView
    from ._asyncio.subscription import Subscription as Subscription
    from ._asyncio.subscription import SubscriptionStats as SubscriptionStats
    from ._backoff import BackoffPolicy as BackoffPolicy
    from ._backoff import ExponentialBackoff as ExponentialBackoff
    from ._backoff import NoRetry as NoRetry
    from ._config import ConnectionParams as ConnectionParams
    from ._config import MQTTClientConfig as MQTTClientConfig
    from ._config import parse_mqtt_url as parse_mqtt_url
    from ._config import redact_url as redact_url
    from ._envelope import Envelope as Envelope
    from ._envelope import decode_envelope as decode_envelope
    from ._envelope import new_id as new_id
    from ._errors import ClientStateError as ClientStateError
    from ._errors import ConfigError as ConfigError
    from ._errors import ConnectError as ConnectError
    from ._errors import ConnectionLostError as ConnectionLostError
    from ._errors import EnvelopeError as EnvelopeError
    from ._errors import InvalidArgumentError as InvalidArgumentError
    from ._errors import InvalidArgumentTypeError as InvalidArgumentTypeError
    from ._errors import InvalidTopicError as InvalidTopicError
    from ._errors import MQTTError as MQTTError
    from ._errors import NotConnectedError as NotConnectedError
    from ._errors import OutboxFullError as OutboxFullError
    from ._errors import PayloadTooLarge as PayloadTooLarge
    from ._errors import PoisonMessageError as PoisonMessageError
    from ._errors import ProtocolError as ProtocolError
    from ._errors import PublishError as PublishError
    from ._errors import SubscribeError as SubscribeError
    from ._health import health_topic as health_topic
    from ._health import keepalive_topic as keepalive_topic
    from ._instrument import HandlerCall as HandlerCall
    from ._instrument import Instrument as Instrument
    from ._instrument import OutgoingPublish as OutgoingPublish
    from ._message import Message as Message
    from ._models import HealthStatus as HealthStatus
    from ._models import HeartbeatPayload as HeartbeatPayload
    from ._options import ClientOptions as ClientOptions
    from ._topics import topic_matches as topic_matches
    from ._topics import validate_topic_filter as validate_topic_filter
    from ._topics import validate_topic_name as validate_topic_name
    from .client import ClientState as ClientState
    from .client import ClientStats as ClientStats
    from .client import MQTTClient as MQTTClient
