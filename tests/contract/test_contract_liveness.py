"""Contract: what a client says about itself. Retained health status (ready, shutdown), the
last will on an abrupt disconnect, and the heartbeat payload, identical on every broker."""

from __future__ import annotations

import pytest

from contract.harness import Target, collect, connections
from tars.mqtt import HealthStatus, HeartbeatPayload, Message, health_topic, keepalive_topic

HEALTH_TYPE = "health.status"


def status(message: Message) -> HealthStatus:
    envelope = message.envelope
    assert envelope.type == HEALTH_TYPE
    return HealthStatus.model_validate(envelope.data)


async def retained_status(target: Target, client_id: str) -> tuple[HealthStatus, bool]:
    """What a newcomer subscribing to ``client_id``'s health topic receives first."""
    observer = await target.client("observer")
    inbox = await collect(observer, health_topic(client_id), qos=1)
    [message] = await inbox.wait_for(1)
    return status(message), message.retain


@pytest.mark.needs("will_discarded_on_disconnect")
async def test_health_is_retained_ready_while_up_and_shutdown_after(target: Target) -> None:
    service = await target.client("svc", enable_health=True)

    ready, retained = await retained_status(target, service.client_id)
    assert (ready.ok, ready.event, ready.error, retained) == (True, "ready", None, True)

    await service.shutdown()

    gone, retained = await retained_status(target, service.client_id)
    assert (gone.ok, gone.event, retained) == (False, "shutdown", True)


async def test_the_will_says_offline_when_the_link_dies_and_the_client_comes_back(
    target: Target,
) -> None:
    service = await target.client("svc", enable_health=True, connect=False)
    observer = await target.client("observer")
    seen = await collect(observer, health_topic(service.client_id), qos=1)
    reconnected = connections(service)
    await service.connect()
    [ready] = await seen.wait_for(1)
    assert status(ready).event == "ready"
    # The broker may route "ready" before its PUBACK reaches the service: a drop in between
    # makes the service resend it (QoS 1, at least once), and the observer sees it twice.
    await service.flush(timeout=5)

    await target.drop(service)

    _, will, back = await seen.wait_for(3)
    offline = status(will)
    assert (offline.ok, offline.event, offline.error) == (
        False,
        "offline",
        "connection lost unexpectedly",
    )
    assert will.envelope.source == service.client_id
    assert (status(back).ok, status(back).event) == (True, "reconnected")
    await reconnected.wait_for(2)


async def test_heartbeats_carry_the_documented_payload_and_come_back(target: Target) -> None:
    service = await target.client("svc", connect=False, enable_heartbeat=True, heartbeat_interval=1)
    observer = await target.client("observer")
    beats = await collect(observer, keepalive_topic(service.client_id))
    await service.connect()

    first, second = await beats.wait_for(2, timeout=5)
    for message in (first, second):
        beat = HeartbeatPayload.model_validate_json(message.payload)
        assert (beat.ok, beat.event, message.retain) == (True, "heartbeat", False)
    gap = HeartbeatPayload.model_validate_json(second.payload).timestamp - (
        HeartbeatPayload.model_validate_json(first.payload).timestamp
    )
    assert 0.5 < gap < 2.0
    # Its own beats came back through the broker: the watchdog never found the link stale.
    assert service.connected
    assert service.stats.stale_links == 0


@pytest.mark.needs("will_discarded_on_disconnect")
async def test_nothing_is_published_in_a_clients_name_after_a_graceful_shutdown(
    target: Target,
) -> None:
    """A clean DISCONNECT discards the will: the last status stays "shutdown"."""
    service = await target.client("svc", enable_health=True, connect=False)
    observer = await target.client("observer")
    seen = await collect(observer, health_topic(service.client_id), qos=1)
    await service.connect()
    await service.shutdown()
    await observer.publish(health_topic(service.client_id), b"end", qos=1)

    count = 1
    while (await seen.wait_for(count))[-1].payload != b"end":
        count += 1
    assert [status(m).event for m in seen.items[:-1]] == ["ready", "shutdown"]
