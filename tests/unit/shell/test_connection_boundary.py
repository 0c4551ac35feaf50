"""The asyncio connection's pure helpers: :func:`settle` (session events -> futures) and
:func:`map_exceptions` (foreign exceptions -> ours, at one boundary). The link itself is tested
against Mosquitto in tests/integration/test_connection.py."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tars.mqtt._asyncio.connection import map_exceptions, settle
from tars.mqtt._core.events import (
    FilterGivenUp,
    PublishDone,
    RequestAborted,
    Settled,
    Subscribed,
    Unsubscribed,
)
from tars.mqtt._errors import (
    ConnectError,
    ConnectionLostError,
    OutboxFullError,
    PoisonMessageError,
    PublishError,
    SubscribeError,
)


async def test_settle_resolves_each_kind_of_handle() -> None:
    loop = asyncio.get_running_loop()
    acked, refused, dropped, waiter, sub, unsub, aborted = (loop.create_future() for _ in range(7))
    error = OutboxFullError("outbox full: message for 't' dropped")
    settle(
        [
            PublishDone(acked, 0x10),
            PublishDone(refused, 0x87, "not authorized"),
            PublishDone(dropped, 0x80, "dropped", error),
            Settled(waiter),
            Subscribed(sub, (1, 0x87)),
            Unsubscribed(unsub, (0,)),
            RequestAborted(aborted),
        ]
    )
    assert acked.result() == 0x10  # "no subscribers" is a success
    with pytest.raises(PublishError, match=r"0x87.*not authorized") as info:
        refused.result()
    assert info.value.reason_code == 0x87
    with pytest.raises(OutboxFullError):
        dropped.result()
    assert waiter.result() is None
    assert sub.result() == (1, 0x87)
    assert unsub.result() == (0,)
    with pytest.raises(ConnectionLostError):
        aborted.result()


async def test_settle_fails_the_subscribe_calls_of_a_filter_given_up() -> None:
    loop = asyncio.get_running_loop()
    waiting, gone = loop.create_future(), loop.create_future()
    gone.cancel()  # its caller gave up meanwhile
    error = PoisonMessageError("x/#", 3, 0x81, subscription=True)
    settle([FilterGivenUp("x/#", error, (waiting, gone, None))])
    assert waiting.exception() is error
    settle([RequestAborted(waiting)])  # the link's end, right after: the verdict stands
    assert waiting.exception() is error


async def test_settle_skips_handles_nobody_waits_on() -> None:
    fut = asyncio.get_running_loop().create_future()
    fut.cancel()  # the caller gave up (its timeout)
    settle([PublishDone(fut, 0), PublishDone(None, 0), Settled("not a future")])
    assert fut.cancelled()


@pytest.mark.parametrize(
    ("raised", "refused", "fatal", "text"),
    [
        (ConnectionRefusedError(111, "refused"), True, False, "refused"),
        (OSError(101, "network unreachable"), False, False, "network unreachable"),
        (ssl.SSLCertVerificationError("self-signed"), False, True, "not trusted"),
        (UnicodeError("label too long"), False, False, "label too long"),
        (TimeoutError(), False, False, "no CONNACK from broker:1883 within 3 s"),
    ],
    ids=["refused", "oserror", "certificate", "idna", "timeout"],
)
def test_map_exceptions_turns_transport_errors_into_connect_errors(
    raised: Exception, refused: bool, fatal: bool, text: str
) -> None:
    with pytest.raises(ConnectError) as info, map_exceptions("broker:1883", 3.0):
        raise raised
    assert info.value.refused is refused
    assert info.value.fatal is fatal
    assert text in str(info.value)
    if not isinstance(raised, TimeoutError):
        assert info.value.__cause__ is raised


def test_map_exceptions_lets_our_own_errors_through() -> None:
    ours = SubscribeError("a", 0x87)
    with pytest.raises(SubscribeError) as info, map_exceptions("broker:1883", 3.0):
        raise ours
    assert info.value is ours
