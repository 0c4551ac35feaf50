"""Issue 18, tried from the outside on a real Mosquitto: a received QoS 1/2 message has one
owner until it may be acknowledged, a worker never dies of its handler, and no message is
acknowledged that no handler saw.

- A handler that raises ``GeneratorExit`` (a ``BaseException``, not an ``Exception``) used to
  end its subscription's worker without a word: its withheld acknowledgement was never
  released, the broker's Receive Maximum window filled, and another subscription then handled
  none of its messages. Now the raise is a counted, logged failure and both subscriptions get
  every message.
- A resumed session's backlog that arrived more than 5 s before its ``subscribe()`` used to be
  acknowledged unhandled (1,000 of 3,000 handled). Now it waits for the subscription however
  long it takes (said in the log, ``stats`` and health ``degraded`` meanwhile).
- ``SystemExit`` and ``KeyboardInterrupt`` from a handler remain the way a handler ends the
  service: in a real process under ``asyncio.run``, after a graceful shutdown (health
  ``shutdown`` retained, not the will's ``offline``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sys
import time
from pathlib import Path

import pytest

from support.cli_process import Proc
from support.mosquitto_cli import MosquittoSub, unique
from support.stream import queue_backlog
from tars.mqtt import Message, MQTTClient, health_topic
from tars.mqtt.testing import MosquittoBroker

# The shared broker (persistence off): a broker that saves its database on every change
# takes seconds per PUBACK with thousands of messages queued.
pytestmark = pytest.mark.mosquitto

FATAL_HANDLER = str(Path(__file__).resolve().parents[1] / "support" / "fatal_handler.py")


async def test_a_handler_raising_generator_exit_stops_neither_its_worker_nor_another_one(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tars.mqtt")
    first_topic, other_topic = unique("raises"), unique("other")
    counts = {first_topic: 150, other_topic: 200}
    handled: dict[str, collections.Counter[int]] = {t: collections.Counter() for t in counts}
    all_in = asyncio.Event()
    raised = False

    async def on_job(message: Message) -> None:
        nonlocal raised
        if message.topic == first_topic and not raised:
            raised = True
            raise GeneratorExit  # once: the first message of the first subscription
        handled[message.topic][message.envelope.data["n"]] += 1
        if all(len(handled[t]) == n for t, n in counts.items()):
            all_in.set()

    # A small window, so that one withheld acknowledgement never released would stop the link.
    worker = MQTTClient(shared_mosquitto.url, unique("worker"), receive_maximum=10)
    first = await worker.subscribe(first_topic, on_job, qos=1)
    other = await worker.subscribe(other_topic, on_job, qos=1)
    producer = MQTTClient(shared_mosquitto.url, unique("producer"))
    async with worker, producer:
        await producer.publish_event(first_topic, "job", {"n": -1}, qos=1)  # the one it raises on
        for topic, n in counts.items():
            for i in range(n):
                await producer.publish_event(topic, "job", {"n": i}, qos=1, wait=False)
        await producer.flush(timeout=20)
        await asyncio.wait_for(all_in.wait(), 20)
        stats = worker.stats
    print(
        f"\nGeneratorExit once, then {counts[first_topic]} and {counts[other_topic]} QoS 1: "
        f"handled {len(handled[first_topic])} and {len(handled[other_topic])}, failed "
        f"{stats.failed}"
    )
    assert {t: sorted(c.values()) for t, c in handled.items()} == {
        t: [1] * n for t, n in counts.items()
    }
    assert (first.stats.failed, first.stats.handled) == (1, counts[first_topic])
    assert (other.stats.failed, other.stats.handled) == (0, counts[other_topic])
    assert (stats.dropped, stats.unmatched) == (0, 0)
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None
    assert record.exc_info[0] is GeneratorExit
    assert first_topic in record.getMessage()


async def test_a_backlog_of_3000_waits_6_s_for_its_subscribe_and_none_is_acked_unhandled(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A persistent session with 3,000 QoS 1 messages queued; the service subscribes 6 s
    after ``connect()``: all 3,000 handled, none acknowledged without its handler. Meanwhile
    it said so: a warning, ``stats.unrouted``/``unrouted_overdue``, health ``degraded``, then
    ``recovered``."""
    events, service, topic = 3_000, unique("late"), unique("jobs")
    options = {"clean_start": False, "session_expiry_interval": 300}
    await queue_backlog(shared_mosquitto.url, service, topic, events)

    handled: collections.Counter[int] = collections.Counter()
    done = asyncio.Event()

    async def on_job(message: Message) -> None:
        handled[message.envelope.data["n"]] += 1
        if len(handled) == events:
            done.set()

    worker = MQTTClient(
        shared_mosquitto.url,
        service,
        enable_health=True,
        **options,  # type: ignore[arg-type]
    )
    health = health_topic(service)
    async with MosquittoSub(shared_mosquitto, health, qos=1) as statuses:
        async with worker:  # connect() first: the backlog starts coming
            started = time.monotonic()
            await asyncio.sleep(6.0)  # the scenario: a service that subscribes this late
            waiting = worker.stats
            await worker.subscribe(topic, on_job, qos=1)
            await asyncio.wait_for(done.wait(), 30)
            stats = worker.stats
            seconds = time.monotonic() - started
        seen = [json.loads(c.payload)["data"]["event"] for c in await statuses.wait_for(4)]
    print(
        f"\nresumed backlog of {events} QoS 1, subscribe() 6 s after connect(): handled "
        f"{len(handled)} in {seconds:.1f} s, unmatched {stats.unmatched}; while waiting: "
        f"unrouted {waiting.unrouted}, overdue {waiting.unrouted_overdue}; health {seen}"
    )
    assert sorted(handled.values()) == [1] * events
    assert (stats.unmatched, stats.dropped, stats.unrouted) == (0, 0, 0)
    assert waiting.unrouted > 0
    assert waiting.unrouted_overdue == waiting.unrouted  # all waited > 5 s, each counted once
    assert "wait for a subscription" in caplog.text
    assert seen == ["ready", "degraded", "recovered", "shutdown"]


@pytest.mark.parametrize("exception", ["SystemExit", "KeyboardInterrupt"])
async def test_systemexit_or_keyboardinterrupt_from_a_handler_ends_the_service_gracefully(
    shared_mosquitto: MosquittoBroker, exception: str
) -> None:
    client_id, topic = unique("fatal"), unique("cmd")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        FATAL_HANDLER,
        shared_mosquitto.url,
        client_id,
        topic,
        exception,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    proc = Proc(process)
    try:
        await proc.line_with("ready", timeout=15)
        producer = MQTTClient(shared_mosquitto.url, unique("producer"))
        async with producer:
            await producer.publish(topic, b"stop", qos=1)
        code = await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    async with MosquittoSub(shared_mosquitto, health_topic(client_id), qos=1, count=1) as sub:
        [retained] = await sub.wait_for(1)
    status = json.loads(retained.payload)["data"]
    print(f"\n{exception} from a handler: exit code {code}, retained health {status['event']}")
    assert code != 0
    assert (status["ok"], status["event"]) == (False, "shutdown")
