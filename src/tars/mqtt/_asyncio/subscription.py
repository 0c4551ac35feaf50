"""One subscription: a handler on a topic filter, with its own bounded queue and worker.

Each :meth:`MQTTClient.subscribe <tars.mqtt.MQTTClient.subscribe>` call makes one
:class:`Subscription`: a handler, a bounded queue, an overflow policy, a concurrency limit, an
optional per-call timeout and dedup window, and one worker task. A slow, failing or hung handler
fills only its own queue; nothing it does reaches another subscription or the link, except the
``block`` policy, which by design stops reading the link while its queue is full (TCP
backpressure to the broker; see the docs for when to prefer a drop policy). For that it is
given ``pause`` and ``resume`` callables (as websockets' ``Assembler``), not a way back into the
client: it knows nothing of links.

A QoS 1/2 message whose acknowledgement waits for its handlers comes with a *token* of the
session's incoming part; the subscription calls its ``done(token)`` callable exactly once per
token: when the handler returned or failed, when dedup suppressed the message, or when
:meth:`Subscription.stop` drops it (on a live link, an ``unsubscribe()``: logged and counted;
at shutdown the link is gone first, and the broker keeps the message).

The worker never dies of its handler: whatever a handler raises, ``BaseException`` subclasses
such as ``GeneratorExit`` included, is counted as a failure and logged, and the next message is
handled. Only ``KeyboardInterrupt`` and ``SystemExit`` go through (asyncio stops the loop with
them, and ``run_forever`` / ``async with`` shut the client down gracefully on the way out); the
messages the worker held then stay unacknowledged, for the broker to send again.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import sys
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .._dedup import DedupWindow
from .._envelope import Envelope
from .._errors import EnvelopeError, InvalidArgumentError, InvalidArgumentTypeError, MQTTError
from .._instruments import Instruments
from .._logfields import message_fields
from .._message import Message
from .._trouble import describe_invalid

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .._instrument import Outcome

__all__ = [
    "Handler",
    "Overflow",
    "Subscription",
    "SubscriptionStats",
]

Done = Callable[[int], None]
"""``done(token)``: a subscription is finished with the message of ``token`` (see
:meth:`tars.mqtt._core.incoming.Incoming.done`)."""

log = logging.getLogger("tars.mqtt.dispatch")

Overflow = Literal["block", "drop_oldest", "drop_newest"]
ModelT = TypeVar("ModelT", bound="BaseModel")
# The forms a handler may take, spelled out so that mypy rejects another one (``str``,
# ``dict``, a dataclass) where ``subscribe()`` is called, not only ``_arg_kind`` at run time.
Handler = (
    Callable[[bytes], Awaitable[None]]
    | Callable[[Message], Awaitable[None]]
    | Callable[[Envelope], Awaitable[None]]
    | Callable[[ModelT], Awaitable[None]]
)
_SUPPORTED_FORMS = (
    "bytes (or no annotation, Any, object), tars.mqtt.Message, tars.mqtt.Envelope, "
    "or a pydantic BaseModel subclass"
)


class _ArgKind(enum.Enum):
    PAYLOAD = "payload"
    MESSAGE = "message"
    ENVELOPE = "envelope"
    MODEL = "model"


@dataclass(slots=True)
class SubscriptionStats:
    """What happened to the messages of one subscription (counters only grow)."""

    received: int = 0  # offered to the queue
    handled: int = 0  # handler returned normally
    failed: int = 0  # handler raised
    timed_out: int = 0  # handler exceeded its timeout
    dropped: int = 0  # overflow policy dropped it
    deduplicated: int = 0  # same envelope (id and content) seen within the dedup TTL
    invalid: int = 0  # not an envelope / not valid for a typed handler
    worker_restarts: int = 0  # the worker ended by a fault of ours and was started again


def _arg_kind(handler: Handler[Any]) -> tuple[_ArgKind, type[BaseModel] | None]:
    """How to call ``handler``, from the annotation of its first parameter (read once)."""
    if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects are fine
    ):
        raise InvalidArgumentTypeError(
            f"handler {handler!r} must be an async function (async def handler(...) -> None)"
        )
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return _ArgKind.PAYLOAD, None
    if not params:
        raise InvalidArgumentTypeError(f"handler {handler!r} must take one argument (the message)")
    annotation = params[0].annotation
    if isinstance(annotation, str):
        try:
            hints = typing.get_type_hints(handler)
            annotation = hints.get(params[0].name, annotation)
        except Exception:
            known: dict[str, Any] = {"Message": Message, "Envelope": Envelope, "bytes": bytes}
            if annotation not in known and annotation not in ("Any", "object"):
                # Guessing "raw bytes" here would hand a typed handler the wrong argument.
                raise InvalidArgumentTypeError(
                    f"cannot resolve the annotation {annotation!r} of the first parameter of "
                    f"handler {handler!r}: define that class at module level (annotations "
                    "are strings under `from __future__ import annotations`)"
                ) from None
            annotation = known.get(annotation, annotation)
    if annotation is Message:
        return _ArgKind.MESSAGE, None
    if annotation is Envelope:
        return _ArgKind.ENVELOPE, None
    pydantic = sys.modules.get("pydantic")  # not imported: the annotation cannot be a model
    if pydantic and isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return _ArgKind.MODEL, annotation
    if annotation in (inspect.Parameter.empty, bytes, Any, object, "Any", "object"):
        return _ArgKind.PAYLOAD, None
    # Handing raw bytes to a handler that declared ``str``, ``dict`` or a dataclass would fail
    # far from here, inside the handler, on every message: refuse it at subscribe().
    raise InvalidArgumentTypeError(
        f"handler {handler!r} annotates its first parameter as {annotation!r}, which tars.mqtt "
        f"cannot give it; annotate it as one of: {_SUPPORTED_FORMS}"
    )


class Subscription:
    """One handler on one topic filter, with its own queue and worker.

    Returned by :meth:`MQTTClient.subscribe <tars.mqtt.MQTTClient.subscribe>`; use it to read
    :attr:`stats` or :attr:`error`, or to :meth:`~tars.mqtt.MQTTClient.unsubscribe` just this
    handler.
    """

    def __init__(
        self,
        topic_filter: str,
        handler: Handler[Any],
        *,
        qos: int,
        queue_size: int,
        overflow: Overflow,
        concurrency: int,
        timeout: float | None,
        dedup: DedupWindow | None,
        pause: Callable[[], None],
        resume: Callable[[], None],
        done: Done | None = None,
    ) -> None:
        """``pause``/``resume``: stop and restart reading the link (the ``block`` policy);
        ``done(token)``: finished with a withheld message (see the module docstring)."""
        if queue_size < 1:
            raise InvalidArgumentError("queue_size must be >= 1")
        if concurrency < 1:
            raise InvalidArgumentError("concurrency must be >= 1")
        if overflow not in ("block", "drop_oldest", "drop_newest"):
            raise InvalidArgumentError(
                f"overflow must be block, drop_oldest or drop_newest, not {overflow!r}"
            )
        if timeout is not None and timeout <= 0:
            raise InvalidArgumentError("timeout must be > 0")
        self.topic_filter = topic_filter
        self.handler = handler
        self.qos = qos
        self.queue_size = queue_size
        self.overflow: Overflow = overflow
        self.concurrency = concurrency
        self.timeout = timeout
        self.stats = SubscriptionStats()
        self._kind, self._model = _arg_kind(handler)
        # What makes a message invalid for this handler (pydantic's error only for a model).
        self._invalid: tuple[type[Exception], ...] = (EnvelopeError,)
        if self._model is not None:
            self._invalid += (sys.modules["pydantic"].ValidationError,)
        self._dedup = dedup
        self._queue: deque[tuple[Message, int | None]] = deque()  # (message, token)
        self._waiter: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._blocking = False
        self._pause = pause
        self._resume = resume
        self._done = done
        self._holding: set[int] = set()  # tokens of the messages being handled now
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._clock = time.monotonic
        self._busy = False  # the sequential worker is inside a handler call
        self._instruments = Instruments("")  # the client's, set by subscribe(): observers of _call
        self._error: MQTTError | None = None

    def __repr__(self) -> str:
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"<Subscription {self.topic_filter!r} -> {name} queued={len(self._queue)}>"

    @property
    def queued(self) -> int:
        """Messages waiting for the handler."""
        return len(self._queue)

    @property
    def error(self) -> MQTTError | None:
        """What ended this subscription without a call of yours, else None: a
        :class:`~tars.mqtt.PoisonMessageError` when the poison-message breaker gave its filter
        up (the broker ended link after link on its SUBSCRIBE), a
        :class:`~tars.mqtt.SubscribeError` when the broker refused the SUBSCRIBE of the
        ``subscribe()`` call that made it (that call raised it too; a refusal when a later link
        restores the filter is logged and tried again on the next link, and leaves this None).
        Its worker is stopped then (a message it had queued may still be handled while the
        stop runs), and it receives nothing more; ``unsubscribe()`` and ``shutdown()`` leave it
        None.
        """
        return self._error

    def ended(self, error: MQTTError) -> None:
        """Record what ended it (the client calls it at once, then :meth:`stop` in a task)."""
        if self._error is None:
            self._error = error

    # --- receive side (synchronous, from the link's data_received) ---------------------------

    def offer(self, msg: Message, token: int | None = None) -> None:
        """Queue ``msg`` for the handler, applying dedup and the overflow policy. ``token``:
        its acknowledgement waits for us (this subscription calls ``done(token)`` once)."""
        stats = self.stats
        stats.received += 1
        dedup = self._dedup
        if dedup is not None:
            key = msg.dedup_key
            if key is not None and dedup.seen(key, self._clock()):
                stats.deduplicated += 1
                if token is not None and self._done is not None:
                    self._done(token)
                return
        queue = self._queue
        if len(queue) >= self.queue_size:
            if token is not None and self.overflow != "block":
                # A QoS 1/2 message whose acknowledgement waits for us is never dropped: the
                # broker's Receive Maximum bounds how many can wait, and holds the rest.
                pass
            elif self.overflow == "drop_newest" or (
                self.overflow == "drop_oldest" and queue[0][1] is not None
            ):
                stats.dropped += 1
                self._log_drop("newest", msg)
                return
            elif self.overflow == "drop_oldest":
                stats.dropped += 1
                oldest = queue.popleft()[0]
                self._log_drop("oldest", oldest)
            elif not self._blocking:
                self._blocking = True
                self._pause()
        queue.append((msg, token))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _log_drop(self, which: str, msg: Message) -> None:
        """Warn on the first drop and every 1,000th after it: visible, but never a log flood."""
        dropped = self.stats.dropped
        if dropped == 1 or dropped % 1000 == 0:
            log.warning(
                "queue of %r full (%d): dropped the %s message (%d dropped so far); the "
                "handler is slower than the messages arrive",
                self.topic_filter,
                self.queue_size,
                which,
                dropped,
                extra=message_fields(self._instruments.client_id, msg, self.topic_filter),
            )

    # --- worker ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker that feeds the handler (the client calls it on connect)."""
        if self._worker is None:
            self._worker = worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"tars-mqtt-sub:{self.topic_filter}"
            )
            worker.add_done_callback(self._worker_ended)

    async def stop(self, timeout: float = 5.0, *, error: MQTTError | None = None) -> None:
        """Cancel the worker and any running handler; queued messages are dropped (counted).
        ``error``: what ended it, when not its user (kept in :attr:`error`).

        Called from this subscription's own handler (a one-shot handler unsubscribing itself,
        a "stop" command shutting the client down), the calling handler is neither cancelled
        nor awaited, which would deadlock; it finishes, then its worker ends. A handler that
        ignores its cancellation is waited for ``timeout`` seconds at most, then left behind
        (and logged), so that shutdown stays bounded.
        """
        if error is not None:
            self.ended(error)
        me = asyncio.current_task()
        tasks = [t for t in (self._worker, *self._running) if t is not None and t is not me]
        self._worker = None
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
            for task in stuck:
                log.error(
                    "%s (handler of %r) ignored its cancellation for %g s; left running",
                    task.get_name(),
                    self.topic_filter,
                    timeout,
                    extra={
                        "client_id": self._instruments.client_id,
                        "topic_filter": self.topic_filter,
                    },
                )
        self._running.clear()
        self._release_held("stopped")
        if self._blocking:
            self._blocking = False
            self._resume()
        self._busy = False
        self._signal_idle()  # join() callers must not wait for a worker that is gone

    async def join(self) -> None:
        """Wait until the queue is empty and no handler call is running (or it is stopped)."""
        while self._queue or self._running or self._busy:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)  # shared by every joiner

    def _release_held(self, why: str) -> None:
        """The worker is gone: what the subscription still holds is dropped (counted) and its
        tokens given back. On a live link (``unsubscribe()``) that acknowledges them unhandled,
        which is said; at shutdown the link is gone already, so the broker keeps them."""
        queue, holding = self._queue, self._holding
        tokens = [token for _, token in queue if token is not None] + list(holding)
        self.stats.dropped += len(queue)
        queue.clear()
        holding.clear()
        if tokens and self._done is not None:
            log.warning(
                "subscription %r %s with %d QoS 1/2 messages it had not finished; they are "
                "counted as dropped and their acknowledgements released (with a link up they "
                "are acknowledged unhandled, otherwise the broker keeps them)",
                self.topic_filter,
                why,
                len(tokens),
                extra={"client_id": self._instruments.client_id, "topic_filter": self.topic_filter},
            )
            for token in tokens:
                self._done(token)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        """The worker task ended. Through :meth:`stop`, nothing to do; by itself, only
        ``KeyboardInterrupt``/``SystemExit`` from a handler can end it (the process is on its
        way out: what it held stays unacknowledged, the broker sends it again), or a bug of
        ours, which is logged and the worker started again: the queue is served, and nothing
        is acknowledged that no handler saw."""
        if task is not self._worker:
            return
        self._worker = None
        self._busy = False
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, KeyboardInterrupt | SystemExit) or task.cancelled():
            log.warning(
                "the worker of %r ended (%s); its %d queued messages stay unacknowledged",
                self.topic_filter,
                "cancelled" if exc is None else type(exc).__name__,
                len(self._queue) + len(self._holding),
                extra={"client_id": self._instruments.client_id, "topic_filter": self.topic_filter},
            )
            self.stats.dropped += len(self._queue)
            self._queue.clear()
            self._holding.clear()  # not done(): unacknowledged, the process is ending
            self._signal_idle()
            return
        self.stats.worker_restarts += 1
        log.error(
            "the worker of %r ended unexpectedly; started again",
            self.topic_filter,
            exc_info=exc,
            extra={"client_id": self._instruments.client_id, "topic_filter": self.topic_filter},
        )
        holding = list(self._holding)  # what it was handling: finished, as a failed call is
        self._holding.clear()
        if self._done is not None:
            for token in holding:
                self._done(token)
        self.start()

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        if self.concurrency > 1:
            self._slots = asyncio.Semaphore(self.concurrency)
        me = asyncio.current_task()
        done = self._done
        holding = self._holding
        call = self._call
        while self._worker is me:  # stop() from inside a handler: end after that call
            if not queue:
                self._signal_idle()
                waiter = loop.create_future()
                self._waiter = waiter
                await waiter
                continue
            msg, token = queue.popleft()
            if self._blocking and len(queue) < self.queue_size:
                self._blocking = False
                self._resume()
            slots = self._slots
            if slots is None:
                self._busy = True
                if token is not None:
                    holding.add(token)
                try:
                    # _observed_call() written out: one call fewer per message.
                    instruments = self._instruments
                    await (instruments.handle(self, msg, call) if instruments else call(msg))
                finally:
                    self._busy = False
                # Not in the finally: a KeyboardInterrupt, SystemExit or the worker's own
                # cancellation leaves the token held (stop() or _worker_ended decides).
                if token is not None and token in holding and done is not None:
                    holding.discard(token)  # (not released by stop() meanwhile)
                    done(token)
            else:
                await slots.acquire()
                if token is not None:
                    holding.add(token)
                task = loop.create_task(self._call_released(msg, token, slots))
                self._running.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._queue and not self._running:
            self._signal_idle()

    def _signal_idle(self) -> None:
        idle = self._idle
        if idle is not None and not self._queue and not self._running and not self._busy:
            self._idle = None
            if not idle.done():
                idle.set_result(None)

    async def _call_released(
        self, msg: Message, token: int | None, slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._observed_call(msg)
        finally:
            slots.release()
        if token is not None and token in self._holding and self._done is not None:
            self._holding.discard(token)
            self._done(token)

    def _observed_call(self, msg: Message) -> Awaitable[Outcome]:
        """The handler call, through the instruments when there are any (a plain function
        returning the awaitable: no extra coroutine frame per message)."""
        if self._instruments:
            return self._instruments.handle(self, msg, self._call)
        return self._call(msg)

    async def _call(self, msg: Message) -> Outcome:
        stats = self.stats
        kind = self._kind
        try:
            if kind is _ArgKind.PAYLOAD:
                arg: Any = msg.payload
            elif kind is _ArgKind.MESSAGE:
                arg = msg
            elif kind is _ArgKind.ENVELOPE:
                arg = msg.envelope
            else:
                assert self._model is not None
                arg = self._model.model_validate(msg.envelope.data)
        except self._invalid as exc:
            stats.invalid += 1
            log.warning(
                "message on %r is not valid for handler %s: %s",
                msg.topic,
                getattr(self.handler, "__qualname__", self.handler),
                describe_invalid(exc),  # the fields and reasons, never the values
                extra=message_fields(self._instruments.client_id, msg, self.topic_filter),
            )
            return "invalid"
        deadline: asyncio.Timeout | None = None
        try:
            if self.timeout is None:
                await self.handler(arg)
            else:
                async with asyncio.timeout(self.timeout) as deadline:
                    await self.handler(arg)
        except TimeoutError:
            if deadline is None or not deadline.expired():
                # The handler's own TimeoutError (its HTTP call, its own wait_for): a failure
                # with a traceback, not our per-handler timeout.
                self._failed(msg)
                return "failed"
            stats.timed_out += 1
            log.warning(
                "handler %s timed out after %g s on topic %r (envelope id %s)",
                getattr(self.handler, "__qualname__", self.handler),
                self.timeout,
                msg.topic,
                msg.envelope_id,
                extra=message_fields(self._instruments.client_id, msg, self.topic_filter),
            )
            return "timed_out"
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker itself is being stopped
            # The handler awaited something someone else cancelled, or raised CancelledError
            # itself: its failure, not the worker's end (the next message would wait for ever).
            self._failed(msg)
            return "failed"
        except (KeyboardInterrupt, SystemExit) as exc:
            # The one way a handler ends the service: asyncio stops the loop with it, and the
            # client shuts down gracefully on the way out (health "shutdown", no will).
            self.stats.failed += 1
            log.warning(
                "handler %s raised %s on topic %r: the service stops",
                getattr(self.handler, "__qualname__", self.handler),
                type(exc).__name__,
                msg.topic,
                extra=message_fields(self._instruments.client_id, msg, self.topic_filter),
            )
            raise
        except BaseException:
            # Exception and the rest of BaseException (GeneratorExit, a library's own
            # BaseException): a failure of this message, never the worker's end.
            self._failed(msg)
            return "failed"
        stats.handled += 1
        return "handled"

    def _failed(self, msg: Message) -> None:
        """Count and log (with the traceback being handled) a handler that raised."""
        self.stats.failed += 1
        log.exception(
            "handler %s failed on topic %r (envelope id %s)",
            getattr(self.handler, "__qualname__", self.handler),
            msg.topic,
            msg.envelope_id,
            extra=message_fields(self._instruments.client_id, msg, self.topic_filter),
        )
