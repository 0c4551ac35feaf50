"""The public surface of ``tars.mqtt``: exactly the names we mean to export, all documented.

Services import only from ``tars.mqtt``; a name that appears or disappears here is an API change
and must be a deliberate one (update this list in the same change).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import types
import typing
from pathlib import Path

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
    "LinkView",  # what MQTTClient.client returns (issue 10: Connection left __all__)
    # messages and subscriptions
    "Envelope",
    "Message",
    "Subscription",
    "SubscriptionStats",
    "HealthStatus",
    "HeartbeatPayload",
    # observability
    "Instrument",
    "OutgoingPublish",
    "HandlerCall",
    # policies
    "BackoffPolicy",
    "ExponentialBackoff",
    "NoRetry",
    # errors
    "MQTTError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "ConfigError",
    "InvalidTopicError",
    "PayloadTooLarge",
    "EnvelopeError",
    "ClientStateError",
    "NotConnectedError",
    "ConnectError",
    "ConnectionLostError",
    "ProtocolError",
    "PoisonMessageError",
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
    """Nothing public leaks from the package without being in ``__all__`` (modules aside).

    Names are imported on first use, so ``dir()`` (not ``vars()``) is what lists them all.
    """
    public = {
        name
        for name in dir(tars.mqtt)
        if not name.startswith("_") and not isinstance(getattr(tars.mqtt, name), types.ModuleType)
    }
    assert public == INTENDED


def test_the_names_type_checkers_see_are_the_names_imported_at_run_time() -> None:
    """The lazy table and the ``TYPE_CHECKING`` imports of ``__init__.py`` say the same."""
    tree = ast.parse(Path(tars.mqtt.__file__).read_text(encoding="utf-8"))
    static = {
        alias.asname or alias.name: f".{node.module}" if node.level else node.module
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "_typing.TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert static == tars.mqtt._EXPORTS


def test_importing_the_package_loads_nothing_until_a_name_is_used() -> None:
    """``import tars.mqtt`` is almost free (service start-up on a Pi); names load on use."""
    code = (
        "import sys, tars.mqtt\n"
        "heavy = [m for m in ('pydantic', 'asyncio', 'tars.mqtt.client') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from tars.mqtt import MQTTClient\n"
        "assert 'tars.mqtt.client' in sys.modules and tars.mqtt.MQTTClient is MQTTClient\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=50)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        tars.mqtt.Nope  # type: ignore[attr-defined]  # noqa: B018


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
