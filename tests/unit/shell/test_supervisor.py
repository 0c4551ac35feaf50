"""The supervisor alone: the connect loop and its decisions, against the in-memory broker.

The session and the connection are the real ones, the broker is the testing kit's
(:class:`~tars.mqtt.testing.InMemoryBroker`, reached without a socket, or over loopback TCP
where a test needs two brokers at two addresses); only the delays are fake: a backoff policy
that records what it was asked and answers from a script, so no test sleeps for a delay and
every decision (retry, give up, fail over, start the backoff afresh) is checked by what the
supervisor asked for, the events a user sees (the first link's outcome, hooks, ``link``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tars.mqtt._asyncio.connection import Connector
from tars.mqtt._asyncio.supervisor import Hook, Supervisor
from tars.mqtt._core.session import Session
from tars.mqtt._errors import ConnectError
from tars.mqtt._url import parse_mqtt_url, parse_mqtt_urls
from tars.mqtt.testing import InMemoryBroker

WAIT = 5.0  # seconds any expected event gets before the test fails


class ScriptedDelays:
    """A backoff policy answering from a script (None once it runs out: give up)."""

    def __init__(self, *delays: float) -> None:
        self.asked: list[tuple[int, bool]] = []
        self._delays = list(delays)

    def next_delay(self, attempt: int, *, refused: bool) -> float | None:
        self.asked.append((attempt, refused))
        return self._delays.pop(0) if self._delays else None


class Hooks:
    """Connect/disconnect hooks that count, and let a test wait for the next one."""

    def __init__(self) -> None:
        self.ups = 0
        self.downs = 0
        self.changed = asyncio.Event()

    async def up(self) -> None:
        self.ups += 1
        self.changed.set()

    async def down(self) -> None:
        self.downs += 1
        self.changed.set()

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not check():
                self.changed.clear()
                await self.changed.wait()


def _no_tls() -> ssl.SSLContext:
    raise AssertionError("no test here uses TLS")


@pytest_asyncio.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    async with InMemoryBroker(name="sup") as running:
        yield running


def supervisor(
    broker: InMemoryBroker | None,
    backoff: ScriptedDelays,
    hooks: Hooks,
    *,
    url: str = "mqtt://sup",
    client_id: str = "svc",
    connector: Connector | None = None,
    more_hooks: tuple[Hook, ...] = (),
    **options: object,
) -> Supervisor:
    if connector is None and broker is not None:
        connector = broker.connector
    return Supervisor(
        Session(client_id, keep_alive=30),
        parse_mqtt_urls(url),
        listeners=[],
        backoff=backoff,
        tls_context=_no_tls,
        connector=connector,
        connect_timeout=WAIT,
        connect_hooks=[hooks.up, *more_hooks],
        disconnect_hooks=[hooks.down],
        **options,  # type: ignore[arg-type]
    )


async def started(
    sup: Supervisor,
) -> tuple[asyncio.Future[None], asyncio.Task[ConnectError | None]]:
    first = sup.begin()
    return first, asyncio.create_task(sup.run(), name="test-supervisor")


async def stop(sup: Supervisor, task: Awaitable[ConnectError | None]) -> ConnectError | None:
    sup.close()
    sup.abort()
    async with asyncio.timeout(WAIT):
        return await task


async def test_the_first_link_is_held_and_announced(broker: InMemoryBroker) -> None:
    hooks, delays = Hooks(), ScriptedDelays()
    sup = supervisor(broker, delays, hooks)
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        await first
    await hooks.until(lambda: hooks.ups == 1)
    assert sup.link is not None
    assert sup.link.is_connected
    assert (sup.connects, broker.connected_clients, delays.asked) == (1, ["svc"], [])
    assert await stop(sup, task) is None
    assert hooks.downs == 0  # a shutdown is not a lost link


async def test_a_lost_link_is_replaced_after_the_policys_delay(broker: InMemoryBroker) -> None:
    hooks, delays = Hooks(), ScriptedDelays(0.01)
    sup = supervisor(broker, delays, hooks)
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        await first
    await broker.drop_link("svc")
    await hooks.until(lambda: hooks.ups == 2)
    assert (hooks.downs, sup.connects) == (1, 2)
    assert delays.asked == [(0, False)]  # a network loss: the backoff starts afresh
    assert await stop(sup, task) is None


async def test_when_the_policy_gives_up_after_a_loss_run_returns_the_error(
    broker: InMemoryBroker,
) -> None:
    hooks, delays = Hooks(), ScriptedDelays()  # no delay at all: give up at once
    sup = supervisor(broker, delays, hooks)
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        await first
    await broker.drop_link("svc")
    async with asyncio.timeout(WAIT):
        error = await task
    assert isinstance(error, ConnectError)
    assert "gave up reconnecting" in str(error)
    assert (hooks.downs, sup.link) == (1, None)


async def test_a_broker_that_is_not_there_fails_the_first_link_without_waiting() -> None:
    hooks, delays = Hooks(), ScriptedDelays(0.01)
    down = InMemoryBroker(name="down")  # never started: connecting is refused
    sup = supervisor(down, delays, hooks, wait_for_broker=False)
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        error = await task
    assert isinstance(error, ConnectError)
    assert error.refused
    assert first.exception() is error
    assert (delays.asked, hooks.ups) == ([], 0)


async def test_waiting_for_the_broker_retries_with_refused_delays_until_it_comes() -> None:
    hooks, delays = Hooks(), ScriptedDelays(0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
    late = InMemoryBroker(name="late")
    sup = supervisor(late, delays, hooks)
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        while len(delays.asked) < 2:
            await asyncio.sleep(0.005)
    await late.start()
    try:
        async with asyncio.timeout(WAIT):
            await first
        assert delays.asked[:2] == [(0, True), (1, True)]  # the attempt grows; refused says why
        assert await stop(sup, task) is None
    finally:
        await late.close()


async def test_a_refusal_no_retry_fixes_ends_the_loop_at_once() -> None:
    hooks, delays = Hooks(), ScriptedDelays(0.01)
    async with InMemoryBroker(name="strict", auth=lambda *_: False) as strict:
        sup = supervisor(strict, delays, hooks)  # wait_for_broker=True: still fatal
        first, task = await started(sup)
        async with asyncio.timeout(WAIT):
            error = await task
    assert isinstance(error, ConnectError)
    assert error.fatal
    assert first.exception() is error
    assert delays.asked == []


async def test_a_custom_classification_can_make_a_refusal_worth_retrying() -> None:
    hooks, delays = Hooks(), ScriptedDelays()
    async with InMemoryBroker(name="strict", auth=lambda *_: False) as strict:
        sup = supervisor(strict, delays, hooks, is_fatal=lambda _error: False)
        first, task = await started(sup)
        async with asyncio.timeout(WAIT):
            error = await task
    assert isinstance(error, ConnectError)
    assert delays.asked == [(0, False)]  # asked, and the script said give up
    assert first.exception() is error


async def test_of_several_brokers_the_first_that_answers_wins_without_a_delay() -> None:
    hooks, delays = Hooks(), ScriptedDelays()
    async with InMemoryBroker(name="second") as second:
        port = await second.serve_tcp()
        # Nothing listens on the first address: refused, then the second at once.
        probe = InMemoryBroker(name="probe")
        await probe.start()
        closed = await probe.serve_tcp()
        await probe.close()
        url = f"mqtt://127.0.0.1:{closed},mqtt://127.0.0.1:{port}"
        sup = supervisor(None, delays, hooks, url=url, wait_for_broker=False)
        first, task = await started(sup)
        async with asyncio.timeout(WAIT):
            await first
        assert sup.params == parse_mqtt_url(f"mqtt://127.0.0.1:{port}")
        assert (delays.asked, second.connected_clients) == ([], ["svc"])
        assert await stop(sup, task) is None


async def test_a_client_id_clash_keeps_the_backoff_growing(broker: InMemoryBroker) -> None:
    hooks, delays = Hooks(), ScriptedDelays(0.01, 0.01, 0.01)
    sup = supervisor(broker, delays, hooks)
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        await first
    # Another client takes the id: the broker DISCONNECTs ours (0x8E) soon after accepting it,
    # each time ours comes back, so the delays must grow, not restart at attempt 0.
    rival = supervisor(broker, ScriptedDelays(*[0.01] * 50), Hooks(), client_id="svc")
    rival_first, rival_task = await started(rival)
    async with asyncio.timeout(WAIT):
        await rival_first
        while len(delays.asked) < 2:
            await asyncio.sleep(0.005)
    assert [attempt for attempt, _ in delays.asked[:2]] == [0, 1]
    await stop(rival, rival_task)
    await stop(sup, task)


async def test_reading_paused_before_the_link_is_paused_on_it(broker: InMemoryBroker) -> None:
    transports: list[asyncio.Transport] = []

    async def connector(
        factory: Callable[[], asyncio.Protocol],
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        transport, protocol = await broker.connector(factory)
        transports.append(transport)
        return transport, protocol

    hooks = Hooks()
    sup = supervisor(broker, ScriptedDelays(0.01), hooks, connector=connector)
    first = sup.begin()  # a new run: no pause carried over from the last
    sup.pause_reading()
    sup.pause_reading()  # calls nest
    task = asyncio.create_task(sup.run())
    async with asyncio.timeout(WAIT):
        await first
    [transport] = transports
    assert not transport.is_reading()  # paused once ready (the restore was read first)
    sup.resume_reading()
    assert not transport.is_reading()  # one pause is still in force
    sup.resume_reading()
    assert transport.is_reading()
    sup.resume_reading()  # one too many is harmless
    assert transport.is_reading()
    assert await stop(sup, task) is None


async def test_a_hook_that_raises_is_logged_and_the_link_stays(
    broker: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    ran = asyncio.Event()

    async def broken() -> None:
        ran.set()
        raise RuntimeError("hook bug")

    hooks = Hooks()
    sup = supervisor(broker, ScriptedDelays(), hooks, more_hooks=(broken,))
    first, task = await started(sup)
    async with asyncio.timeout(WAIT):
        await first
        await ran.wait()
    await hooks.until(lambda: hooks.ups == 1)
    await asyncio.sleep(0)  # the guard logs as the hook task ends
    assert "connect hook" in caplog.text
    assert sup.link is not None
    assert sup.link.is_connected
    assert await stop(sup, task) is None
