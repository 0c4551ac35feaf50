"""A subscription without a broker: packets are built with the codec.

A :class:`Subscription` is fed with :meth:`~Subscription.offer` exactly as the dispatcher feeds
it; its worker runs on the test's loop. Tests wait on what the handler records. The ``block``
policy is handed ``pause``/``resume`` callables (a :class:`PauseLog` here), never the client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from mqtt5 import PublishPacket
from pydantic import BaseModel

from support.mosquitto_cli import Inbox, wait_until
from tars.mqtt import Envelope, Message, PoisonMessageError, SubscribeError
from tars.mqtt._asyncio.subscription import Handler, Overflow, Subscription
from tars.mqtt._dedup import DedupWindow
from tars.mqtt._envelope import encode_event


class Point(BaseModel):
    x: int
    y: int


def msg(payload: bytes = b"p", topic: str = "a/b") -> Message:
    return Message(PublishPacket(topic, payload))


def event(data: dict[str, Any], event_type: str = "t") -> bytes:
    return encode_event(event_type, data, source="test")[1]


class PauseLog:
    """The link's ``pause_reading``/``resume_reading``, as the subscription is handed them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def subscription(
    handler: Handler[Any],
    *,
    topic_filter: str = "a/#",
    queue_size: int = 100,
    overflow: Overflow = "block",
    concurrency: int = 1,
    timeout: float | None = None,
    dedup: DedupWindow | None = None,
    link: PauseLog | None = None,
    done: Any = None,
) -> Subscription:
    link = link or PauseLog()
    return Subscription(
        topic_filter,
        handler,
        qos=0,
        queue_size=queue_size,
        overflow=overflow,
        concurrency=concurrency,
        timeout=timeout,
        dedup=dedup,
        pause=link.pause,
        resume=link.resume,
        done=done,
    )


def recorder() -> tuple[Handler[Any], Inbox[Any]]:
    inbox: Inbox[Any] = Inbox()

    async def handler(payload: bytes) -> None:
        inbox.add(payload)

    return handler, inbox


# --- handler forms -----------------------------------------------------------------------------


async def test_handler_argument_follows_the_first_annotation() -> None:
    got: dict[str, Inbox[Any]] = {k: Inbox() for k in ("bytes", "none", "msg", "env", "model")}

    async def as_bytes(payload: bytes) -> None:
        got["bytes"].add(payload)

    async def unannotated(payload):  # type: ignore[no-untyped-def]
        got["none"].add(payload)

    async def as_message(m: Message) -> None:
        got["msg"].add(m)

    async def as_envelope(e: Envelope) -> None:
        got["env"].add(e)

    async def as_model(p: Point) -> None:
        got["model"].add(p)

    subs = [subscription(h) for h in (as_bytes, unannotated, as_message, as_envelope, as_model)]
    raw = event({"x": 1, "y": 2})
    shared = msg(raw)
    for sub in subs:
        sub.start()
        sub.offer(shared)
    assert await got["bytes"].wait_for(1) == [raw]
    assert await got["none"].wait_for(1) == [raw]
    assert (await got["msg"].wait_for(1))[0] is shared
    [env] = await got["env"].wait_for(1)
    assert isinstance(env, Envelope)
    assert env.data == {"x": 1, "y": 2}
    assert await got["model"].wait_for(1) == [Point(x=1, y=2)]
    for sub in subs:
        await sub.stop()


async def test_async_callable_objects_are_handlers() -> None:
    inbox: Inbox[Message] = Inbox()

    class Handler:
        async def __call__(self, m: Message) -> None:
            inbox.add(m)

    sub = subscription(Handler())
    sub.start()
    sub.offer(msg(b"x"))
    assert (await inbox.wait_for(1))[0].payload == b"x"
    await sub.stop()


def test_non_coroutine_handlers_are_refused() -> None:
    def sync(payload: bytes) -> None:
        pass

    async def no_argument() -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        subscription(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async"):
        subscription(lambda payload: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="argument"):
        subscription(no_argument)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [{"queue_size": 0}, {"concurrency": 0}, {"overflow": "explode"}, {"timeout": 0}],
)
def test_bad_subscription_options(options: dict[str, Any]) -> None:
    handler, _ = recorder()
    with pytest.raises(ValueError):  # noqa: PT011 - each option has its own message
        subscription(handler, **options)


async def test_invalid_for_a_typed_handler_is_counted_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    points: Inbox[Point] = Inbox()

    async def on_point(p: Point) -> None:
        points.add(p)

    sub = subscription(on_point)
    sub.start()
    sub.offer(msg(b"not json", topic="a/bad"))
    sub.offer(msg(event({"x": "left"}), topic="a/bad"))  # an envelope, invalid data
    sub.offer(msg(event({"x": 3, "y": 4})))
    assert await points.wait_for(1) == [Point(x=3, y=4)]
    assert (sub.stats.invalid, sub.stats.handled) == (2, 1)
    assert sum("a/bad" in r.getMessage() for r in caplog.records) == 2
    # The fields and the reasons (issue 19), not just "1 validation error for Point"; the
    # values never (they may be secrets).
    [invalid] = [r.getMessage() for r in caplog.records if "validation error" in r.getMessage()]
    assert "for Point: x: Input should be a valid integer" in invalid
    assert "y: Field required" in invalid
    assert "left" not in invalid
    await sub.stop()


# --- failures, timeouts, concurrency ------------------------------------------------------------


async def test_a_failing_handler_is_logged_and_the_next_message_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: Inbox[bytes] = Inbox()

    async def handler(m: Message) -> None:
        if m.payload != b"ok":
            raise ValueError("bad")
        done.add(m.payload)

    caplog.set_level(logging.ERROR, logger="tars.mqtt")
    sub = subscription(handler)
    sub.start()
    failing = event({"n": 1})
    failing_id = msg(failing).envelope_id
    assert failing_id is not None
    sub.offer(msg(failing, topic="a/fail"))
    sub.offer(msg(b"ok"))
    await done.wait_for(1)
    await sub.join()
    assert (sub.stats.failed, sub.stats.handled) == (1, 1)
    [record] = [r for r in caplog.records if r.exc_info]
    assert "a/fail" in record.getMessage()
    assert failing_id in record.getMessage()
    await sub.stop()


class OwnBaseException(BaseException):
    """A library's own BaseException subclass (as some cancellation scopes have)."""


@pytest.mark.parametrize(
    "raised",
    [GeneratorExit(), OwnBaseException("x"), asyncio.CancelledError(), ValueError("v")],
    ids=["GeneratorExit", "own BaseException", "CancelledError raised by the handler", "Exception"],
)
async def test_the_worker_never_dies_of_what_its_handler_raises(
    raised: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a GeneratorExit used to end the worker without a word, its message never
    released. Now every exception but KeyboardInterrupt/SystemExit is a counted, logged
    failure, the message is finished (done once), and the next one is handled."""
    handled: Inbox[bytes] = Inbox()
    finished: Inbox[int] = Inbox()

    async def handler(payload: bytes) -> None:
        if payload == b"raise":
            raise raised
        handled.add(payload)

    caplog.set_level(logging.ERROR, logger="tars.mqtt")
    sub = subscription(handler, done=finished.add)
    sub.start()
    sub.offer(msg(b"raise"), 1)
    sub.offer(msg(b"next"), 2)
    assert await handled.wait_for(1) == [b"next"]
    assert await finished.wait_for(2) == [1, 2]
    assert (sub.stats.failed, sub.stats.handled) == (1, 1)
    [record] = [r for r in caplog.records if r.exc_info]
    assert type(raised).__name__ in record.exc_text or type(raised).__name__ in str(record.exc_info)
    await sub.stop()
    assert finished.items == [1, 2]  # nothing released twice


async def test_stop_gives_back_every_token_it_holds_once_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished: Inbox[int] = Inbox()
    entered = asyncio.Event()

    async def stuck(payload: bytes) -> None:
        entered.set()
        await asyncio.Event().wait()

    sub = subscription(stuck, done=finished.add)
    sub.start()
    for token in (1, 2, 3):
        sub.offer(msg(b"%d" % token), token)
    await entered.wait()
    await sub.stop()
    assert sorted(finished.items) == [1, 2, 3]  # the one in the handler, and the two queued
    assert sub.stats.dropped == 2
    assert "3 QoS 1/2 messages it had not finished" in caplog.text


async def test_stopped_with_an_error_it_keeps_it_and_releases_what_it_holds() -> None:
    """What the client does when the broker's verdict ends a subscription (its filter given
    up): ``error`` says why; the tokens go back as at an unsubscribe. A plain stop (or a later
    one) leaves no error, or keeps the first."""
    finished: Inbox[int] = Inbox()
    entered = asyncio.Event()

    async def stuck(payload: bytes) -> None:
        entered.set()
        await asyncio.Event().wait()

    sub = subscription(stuck, done=finished.add)
    assert sub.error is None
    sub.start()
    sub.offer(msg(b"1"), 1)
    sub.offer(msg(b"2"), 2)
    await entered.wait()
    verdict = PoisonMessageError("a/#", 3, 0x81, subscription=True)
    await sub.stop(error=verdict)
    assert sub.error is verdict
    assert sorted(finished.items) == [1, 2]
    await sub.stop(error=SubscribeError("a/#", 0x87))
    assert sub.error is verdict
    plain = subscription(stuck)
    plain.start()
    await plain.stop()
    assert plain.error is None


async def test_a_handler_stopping_its_own_subscription_releases_its_message_once() -> None:
    finished: Inbox[int] = Inbox()

    async def one_shot(payload: bytes) -> None:
        await sub.stop()

    sub = subscription(one_shot, done=finished.add)
    sub.start()
    sub.offer(msg(b"x"), 7)
    await finished.wait_for(1)
    await asyncio.sleep(0)  # the handler returns after stop(): no second done
    assert finished.items == [7]


async def test_per_handler_timeout(caplog: pytest.LogCaptureFixture) -> None:
    done: Inbox[bytes] = Inbox()
    cancelled = asyncio.Event()

    async def handler(payload: bytes) -> None:
        if payload == b"hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        done.add(payload)

    sub = subscription(handler, timeout=0.05)
    sub.start()
    sub.offer(msg(b"hang", topic="a/slow"))
    sub.offer(msg(b"next"))
    assert await done.wait_for(1) == [b"next"]
    assert cancelled.is_set()
    assert (sub.stats.timed_out, sub.stats.handled) == (1, 1)
    assert any("a/slow" in r.getMessage() for r in caplog.records)
    await sub.stop()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_limits_handler_calls_in_flight(concurrency: int) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    started: Inbox[bytes] = Inbox()

    async def handler(payload: bytes) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.add(payload)
        await release.wait()
        running -= 1

    sub = subscription(handler, concurrency=concurrency)
    sub.start()
    for i in range(6):
        sub.offer(msg(b"%d" % i))
    await started.wait_for(concurrency)
    for _ in range(5):  # give the worker every chance to start more than allowed
        await asyncio.sleep(0)
    assert (running, peak) == (concurrency, concurrency)
    release.set()
    await started.wait_for(6)
    await sub.join()
    assert sub.stats.handled == 6
    assert peak == concurrency
    await sub.stop()


# --- overflow policies ------------------------------------------------------------------------


async def test_drop_newest_keeps_what_is_queued() -> None:
    handler, inbox = recorder()
    sub = subscription(handler, queue_size=2, overflow="drop_newest")
    for payload in (b"1", b"2", b"3"):  # worker not started yet: the queue fills
        sub.offer(msg(payload))
    assert (sub.queued, sub.stats.dropped, sub.stats.received) == (2, 1, 3)
    sub.start()
    assert await inbox.wait_for(2) == [b"1", b"2"]
    await sub.join()
    assert inbox.items == [b"1", b"2"]
    await sub.stop()


async def test_drop_oldest_keeps_the_latest() -> None:
    handler, inbox = recorder()
    sub = subscription(handler, queue_size=2, overflow="drop_oldest")
    for payload in (b"1", b"2", b"3", b"4"):
        sub.offer(msg(payload))
    assert (sub.queued, sub.stats.dropped) == (2, 2)
    sub.start()
    assert await inbox.wait_for(2) == [b"3", b"4"]
    await sub.join()
    assert inbox.items == [b"3", b"4"]
    await sub.stop()


async def test_block_keeps_everything_and_pauses_the_link_while_full() -> None:
    handler, inbox = recorder()
    link = PauseLog()
    sub = subscription(handler, queue_size=2, overflow="block", link=link)
    for payload in (b"1", b"2"):
        sub.offer(msg(payload))
    assert link.calls == []
    sub.offer(msg(b"3"))  # full: the link must stop reading, but nothing is lost
    sub.offer(msg(b"4"))
    assert link.calls == ["pause"]  # once, not per message
    assert (sub.queued, sub.stats.dropped) == (4, 0)
    sub.start()
    assert await inbox.wait_for(4) == [b"1", b"2", b"3", b"4"]
    assert link.calls == ["pause", "resume"]  # resumed once the queue drained below its size
    await sub.stop()
    assert link.calls == ["pause", "resume"]  # not resumed twice


async def test_stop_releases_a_blocked_link_and_counts_what_was_queued() -> None:
    handler, _ = recorder()
    link = PauseLog()
    sub = subscription(handler, queue_size=1, overflow="block", link=link)
    sub.offer(msg(b"1"))
    sub.offer(msg(b"2"))
    assert link.calls == ["pause"]
    await sub.stop()
    assert link.calls == ["pause", "resume"]
    assert (sub.queued, sub.stats.dropped) == (0, 2)


# --- dedup ---------------------------------------------------------------------------------------


async def test_dedup_per_subscription_on_envelope_ids_only() -> None:
    handler, inbox = recorder()
    sub = subscription(handler, dedup=DedupWindow(60.0, 100))
    other, other_inbox = recorder()
    other_sub = subscription(other, dedup=DedupWindow(60.0, 100))
    same = event({"n": 1})
    for s in (sub, other_sub):
        s.start()
        s.offer(msg(same))
        s.offer(msg(same))
        s.offer(msg(b"raw"))
        s.offer(msg(b"raw"))  # not an envelope: never deduplicated
    assert await inbox.wait_for(3) == [same, b"raw", b"raw"]
    assert await other_inbox.wait_for(3) == [same, b"raw", b"raw"]
    assert sub.stats.deduplicated == other_sub.stats.deduplicated == 1
    for s in (sub, other_sub):
        await s.stop()


async def test_join_waits_for_running_handlers() -> None:
    gate = asyncio.Event()
    handled: list[bytes] = []

    async def handler(payload: bytes) -> None:
        await gate.wait()
        handled.append(payload)

    sub = subscription(handler, concurrency=2)
    sub.start()
    sub.offer(msg(b"1"))
    sub.offer(msg(b"2"))
    joiner = asyncio.create_task(sub.join())
    await wait_until(lambda: sub.queued == 0)
    assert not joiner.done()
    gate.set()
    await asyncio.wait_for(joiner, 5)
    assert sorted(handled) == [b"1", b"2"]
    await sub.stop()


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_handler_may_stop_its_own_subscription(concurrency: int) -> None:
    """A one-shot handler unsubscribes itself: stop() must not wait for (or cancel) the very
    call it is made from, and the worker must still end once that call returns."""
    done: Inbox[bytes] = Inbox()

    async def once(payload: bytes) -> None:
        await sub.stop()
        done.add(payload)

    before = asyncio.all_tasks()
    sub = subscription(once, concurrency=concurrency)
    sub.start()
    sub.offer(msg(b"1"))
    assert await done.wait_for(1) == [b"1"]
    await wait_until(lambda: all(t.done() for t in asyncio.all_tasks() - before))
    assert sub.stats.handled == 1
    sub.offer(msg(b"2"))  # stopped: queued, but nobody runs it
    sub.start()  # ... until started again
    assert await done.wait_for(2) == [b"1", b"2"]


async def test_an_annotation_that_cannot_be_resolved_is_refused_not_guessed() -> None:
    # Under `from __future__ import annotations` a model defined inside a function is only a
    # string: handing such a handler raw bytes would be a silent type error.
    class LocalModel(BaseModel):
        text: str

    async def typed(event: LocalModel) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="LocalModel"):
        subscription(typed)


@dataclass
class Reading:
    value: int


async def _as_str(payload: str) -> None:
    raise AssertionError("never called")


async def _as_dict(payload: dict[str, Any]) -> None:
    raise AssertionError("never called")


async def _as_dataclass(payload: Reading) -> None:
    raise AssertionError("never called")


async def _as_int(payload: int) -> None:
    raise AssertionError("never called")


@pytest.mark.parametrize("handler", [_as_str, _as_dict, _as_dataclass, _as_int])
def test_an_unsupported_annotation_is_refused_naming_the_supported_forms(handler: Any) -> None:
    # Before, these handlers silently got raw bytes and failed inside, on every message.
    with pytest.raises(TypeError) as caught:
        subscription(handler)
    text = str(caught.value)
    assert handler.__name__ in text
    for form in ("bytes", "Message", "Envelope", "BaseModel"):
        assert form in text


async def test_any_and_object_annotations_mean_the_raw_payload() -> None:
    got: Inbox[Any] = Inbox()

    async def as_any(payload: Any) -> None:
        got.add(payload)

    async def as_object(payload: object) -> None:
        got.add(payload)

    subs = [subscription(as_any), subscription(as_object)]
    for sub in subs:
        sub.start()
        sub.offer(msg(b"raw"))
    assert await got.wait_for(2) == [b"raw", b"raw"]
    for sub in subs:
        await sub.stop()


async def test_drops_are_logged_on_the_first_and_every_thousandth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()

    async def stuck(payload: bytes) -> None:
        await gate.wait()

    sub = subscription(stuck, queue_size=1, overflow="drop_oldest")
    sub.start()
    try:
        with caplog.at_level(logging.WARNING, logger="tars.mqtt.dispatch"):
            sub.offer(msg(b"0"))
            await wait_until(lambda: sub.queued == 0)  # the handler holds message 0
            for n in range(1, 2002):
                sub.offer(msg(b"%d" % n))
        assert sub.stats.dropped == 2000
        drops = [r for r in caplog.records if "dropped the oldest" in r.getMessage()]
        assert [r.getMessage().split("(")[2].split()[0] for r in drops] == ["1", "1000", "2000"]
    finally:
        gate.set()
        await sub.stop()


async def test_a_handlers_own_timeout_error_is_a_failure_not_our_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def calls_a_slow_service(payload: bytes) -> None:
        raise TimeoutError("the LLM did not answer")

    for limit in (None, 30.0):
        sub = subscription(calls_a_slow_service, timeout=limit)
        sub.start()
        try:
            with caplog.at_level(logging.ERROR, logger="tars.mqtt.dispatch"):
                sub.offer(msg())
                await wait_until(lambda s=sub: s.stats.failed == 1)  # type: ignore[misc]
            assert sub.stats.timed_out == 0
            assert any("the LLM did not answer" in r.exc_text for r in caplog.records if r.exc_text)
        finally:
            await sub.stop()
        caplog.clear()


async def test_join_serves_every_waiter_and_returns_when_stopped() -> None:
    gate = asyncio.Event()

    async def stuck(payload: bytes) -> None:
        await gate.wait()

    sub = subscription(stuck)
    sub.start()
    sub.offer(msg())
    joiners = [asyncio.create_task(sub.join()) for _ in range(2)]
    await asyncio.sleep(0)
    await sub.stop()
    await asyncio.wait_for(asyncio.gather(*joiners), timeout=2)


async def test_stop_is_bounded_by_a_handler_that_ignores_cancellation() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def stubborn(payload: bytes) -> None:
        try:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue  # a badly written handler
        finally:
            finished.set()

    sub = subscription(stubborn)
    sub.start()
    sub.offer(msg())
    await wait_until(lambda: sub.queued == 0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sub.stop(timeout=0.2)
    assert loop.time() - started < 1.0
    release.set()  # let the straggler end before the test's loop closes
    await asyncio.wait_for(finished.wait(), timeout=2)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
async def test_drop_policies_never_pause_the_link(overflow: Overflow) -> None:
    handler, _ = recorder()
    link = PauseLog()
    sub = subscription(handler, queue_size=1, overflow=overflow, link=link)
    for n in range(5):
        sub.offer(msg(b"%d" % n))
    await sub.stop()
    assert link.calls == []


async def test_block_pauses_again_each_time_the_queue_fills() -> None:
    gate = asyncio.Event()
    handled: Inbox[bytes] = Inbox()

    async def gated(payload: bytes) -> None:
        await gate.wait()
        handled.add(payload)

    link = PauseLog()
    sub = subscription(gated, queue_size=1, overflow="block", link=link)
    sub.start()
    for round_ in range(2):
        gate.clear()
        sub.offer(msg(b"held"))
        await wait_until(lambda: sub.queued == 0)  # the handler holds it
        sub.offer(msg(b"queued"))
        sub.offer(msg(b"over"))  # over the queue size: stop reading
        assert link.calls == ["pause", "resume"] * round_ + ["pause"]
        gate.set()
        await handled.wait_for(3 * (round_ + 1))
        await sub.join()
        assert link.calls == ["pause", "resume"] * (round_ + 1)
    assert sub.stats.dropped == 0
    await sub.stop()
