"""The public surface of ``tars.mqtt``: exactly the names we mean to export, all documented.

Services import only from ``tars.mqtt``; a name that appears or disappears here is an API change
and must be a deliberate one (update this list in the same change).
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing

import pytest

import tars.mqtt
from tars.mqtt import ClientOptions, MQTTClientConfig, MQTTError

INTENDED = {
    # the client
    "MQTTClient",
    "ClientOptions",
    "ClientState",
    "ClientStats",
    "MQTTClientConfig",
    "ConnectionParams",
    "Connection",
    # messages and subscriptions
    "Envelope",
    "Message",
    "Subscription",
    "SubscriptionStats",
    "HealthStatus",
    "HeartbeatPayload",
    # policies
    "BackoffPolicy",
    "ExponentialBackoff",
    "NoRetry",
    # errors
    "MQTTError",
    "ConfigError",
    "InvalidTopicError",
    "PayloadTooLarge",
    "EnvelopeError",
    "ClientStateError",
    "NotConnectedError",
    "ConnectError",
    "ConnectionLostError",
    "ProtocolError",
    "PublishError",
    "SubscribeError",
    "OutboxFullError",
    # functions
    "decode_envelope",
    "new_id",
    "health_topic",
    "keepalive_topic",
    "parse_mqtt_url",
    "redact_url",
    "topic_matches",
    "validate_topic_filter",
    "validate_topic_name",
}


def test_all_is_exactly_the_intended_names() -> None:
    assert set(tars.mqtt.__all__) == INTENDED
    assert len(tars.mqtt.__all__) == len(INTENDED)  # no name listed twice


def test_every_public_attribute_is_in_all() -> None:
    """Nothing public leaks from the package without being in ``__all__`` (modules aside)."""
    public = {
        name
        for name, value in vars(tars.mqtt).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == INTENDED


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_each_name_is_importable_and_documented(name: str) -> None:
    module = importlib.import_module("tars.mqtt")
    obj = getattr(module, name)
    assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not (callable(value) or isinstance(value, property)):
                continue
            assert (inspect.getdoc(getattr(obj, attr)) or "").strip(), f"{name}.{attr}: no doc"


def test_errors_form_one_tree() -> None:
    errors = [getattr(tars.mqtt, n) for n in INTENDED if n.endswith("Error")]
    errors.append(tars.mqtt.PayloadTooLarge)
    for error in errors:
        assert issubclass(error, MQTTError), error
    for error in ("ConfigError", "InvalidTopicError", "PayloadTooLarge", "EnvelopeError"):
        assert issubclass(getattr(tars.mqtt, error), ValueError), error


def test_client_options_mirror_the_config_fields() -> None:
    """``MQTTClient(url, client_id, **options)``: the typed options are the config's fields."""
    hints = typing.get_type_hints(ClientOptions)
    fields = MQTTClientConfig.model_fields
    assert set(hints) == set(fields) - {"mqtt_url", "client_id"}
    for name, hint in hints.items():
        assert hint == fields[name].annotation, name
