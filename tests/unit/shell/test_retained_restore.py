"""The retained check (issue 20) on the in-memory broker: it asks the broker what it still holds
without touching the service's own subscriptions.

A service often subscribes to the very topic it publishes its retained state on (a ``mode``
topic it also takes commands on). The check must not SUBSCRIBE or UNSUBSCRIBE that filter: the
broker would replace the service's subscription with the check's, then delete it.

To see the end of a check, each test gives it a topic the broker no longer holds (another client
cleared it): the service re-publishes it only after the check's UNSUBSCRIBE was answered.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from support.mosquitto_cli import Inbox, wait_until
from tars.mqtt import Message, MQTTClient
from tars.mqtt.testing import InMemoryBroker
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory

FAST = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2}


async def inbox_of(client: MQTTClient, topic_filter: str) -> Inbox[Message]:
    inbox: Inbox[Message] = Inbox()

    async def handler(msg: Message) -> None:
        inbox.add(msg)

    await client.subscribe(topic_filter, handler, qos=1)
    return inbox


async def payload_arrives(inbox: Inbox[Message], payload: bytes, timeout: float = 5.0) -> Message:
    """The first message of ``inbox`` with ``payload``, once it is there."""
    async with asyncio.timeout(timeout):
        count = 1
        while True:
            msg = (await inbox.wait_for(count, timeout=timeout))[-1]
            if msg.payload == payload:
                return msg
            count += 1


async def test_a_service_subscribed_to_its_own_retained_topic_still_receives_after_a_new_session(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    service = await mqtt_client_factory("robot", **FAST)
    modes = await inbox_of(service, "x/mode")
    await service.publish("x/mode", b"listening", qos=1, retain=True)
    await service.publish("x/canary", b"back", qos=1, retain=True)
    panel = await mqtt_client_factory("panel")
    await panel.publish("x/canary", b"", qos=1, retain=True)
    canary = await inbox_of(panel, "x/canary")

    await in_memory_broker.drop_link("robot")  # session expiry 0: the next link is a new session
    await payload_arrives(canary, b"back")  # the check is over

    await panel.publish("x/mode", b"docked", qos=1)
    await payload_arrives(modes, b"docked")
    # Its own publish, the stored copy its restored subscription brought, the command; the
    # broker held the state all along: it was not re-published, and it is still there.
    assert [(m.payload, m.retain) for m in modes.items] == [
        (b"listening", False),
        (b"listening", True),
        (b"docked", False),
    ]
    fresh = await inbox_of(await mqtt_client_factory("fresh"), "x/mode")
    (stored,) = await fresh.wait_for(1)
    assert (stored.payload, stored.retain) == (b"listening", True)


async def test_a_topic_the_service_subscribes_with_its_subtree_is_asked_with_plus(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    """``x/mode`` and ``x/mode/#`` are both the service's: the check asks with ``x/+``, finds
    nothing there (another client cleared it) and puts the service's state back; the
    service's own subscriptions still deliver."""
    service = await mqtt_client_factory("robot", **FAST)
    modes = await inbox_of(service, "x/mode")
    below = await inbox_of(service, "x/mode/#")
    await service.publish("x/mode", b"listening", qos=1, retain=True)
    panel = await mqtt_client_factory("panel")
    await panel.publish("x/mode", b"", qos=1, retain=True)

    await in_memory_broker.drop_link("robot")
    await wait_until(lambda: in_memory_broker.retained("x/mode") == b"listening")  # put back
    assert sorted(in_memory_broker.subscriptions("robot")) == ["x/mode", "x/mode/#"]
    await panel.publish("x/mode", b"docked", qos=1)
    await payload_arrives(modes, b"docked")
    await payload_arrives(below, b"docked")


async def test_a_filter_the_service_subscribes_during_the_check_is_left_subscribed(
    in_memory_broker: InMemoryBroker, mqtt_client_factory: MQTTClientFactory
) -> None:
    """The check asks about ``x/state`` with that very filter (the service has not subscribed
    it yet); the service subscribes it while the check waits for answers, which replaces the
    check's subscription on the broker. The check then leaves it alone: the service gets its
    own state, put back after the check.

    The service stops reading its new link as soon as it is up, so the check's SUBACK, and
    with it the check's answer window, waits until the service has subscribed: no machine is
    too slow for this test."""
    service = await mqtt_client_factory("robot", **FAST)
    await service.publish("x/state", b"on", qos=1, retain=True)
    panel = await mqtt_client_factory("panel")
    await panel.publish("x/state", b"", qos=1, retain=True)

    @service.on_connect
    async def hold_the_answers() -> None:
        service.client.pause_reading()

    await in_memory_broker.drop_link("robot")
    await wait_until(lambda: "x/state" in in_memory_broker.subscriptions("robot"))  # asking
    # Resumed once subscribe() has put the filter in the table (its first step, which runs
    # before the callback), while it waits for its own SUBACK.
    asyncio.get_running_loop().call_soon(service.client.resume_reading)
    states = await inbox_of(service, "x/state")

    assert (await payload_arrives(states, b"on")).retain is False  # re-published, live
    await panel.publish("x/state", b"off", qos=1)
    await payload_arrives(states, b"off")


async def test_without_subscription_identifiers_a_topic_the_service_hears_is_not_asked(
    in_memory_broker: InMemoryBroker,
    mqtt_client_factory: MQTTClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An MQTT 3.1.1 link has no subscription identifiers: the client routes every message by
    its topic, so the check's retained copy of ``x/mode`` would reach the service's ``x/#``
    handler a second time (a command run twice). The check does not ask about a topic one of
    the service's filters matches; it says so at INFO."""
    caplog.set_level(logging.INFO, logger="tars.mqtt")
    service = await mqtt_client_factory("robot", protocol="3.1.1", **FAST)
    heard = await inbox_of(service, "x/#")
    await service.publish("x/mode", b"listening", qos=1, retain=True)
    await service.publish("canary", b"back", qos=1, retain=True)  # no filter of its matches
    panel = await mqtt_client_factory("panel")
    await panel.publish("canary", b"", qos=1, retain=True)
    canary = await inbox_of(panel, "canary")

    await in_memory_broker.drop_link("robot")
    # Its own publish, then the stored copy its restored subscription brings.
    assert (await heard.wait_for(2))[1].retain is True
    await payload_arrives(canary, b"back")  # the check is over
    await panel.publish("x/after", b"after", qos=1)
    await payload_arrives(heard, b"after")  # the subscription's queue handled what came before

    assert [(m.topic, m.payload, m.retain) for m in heard.items] == [
        ("x/mode", b"listening", False),
        ("x/mode", b"listening", True),
        ("x/after", b"after", False),
    ]
    (why,) = [r.getMessage() for r in caplog.records if "cannot check" in r.getMessage()]
    assert "'x/mode'" in why
    assert "no subscription identifiers" in why
    assert "'x/#'" in why
    assert in_memory_broker.retained("x/mode") == b"listening"
