"""ConnectTrouble: which failed connection attempts are worth a WARNING (pure, fake clock)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from tars.mqtt._errors import ConnectError, ConnectionLostError
from tars.mqtt._trouble import (
    ConnectTrouble,
    Healed,
    describe_invalid,
    scheme_hint,
    with_scheme_hint,
)


def test_the_first_failure_warns_then_at_most_once_per_period() -> None:
    trouble = ConnectTrouble(warn_every=60.0)
    times = [100.0, 100.5, 101.0, 159.9, 160.0, 160.5, 219.9, 220.0]
    assert [trouble.failed(t) for t in times] == [
        True,  # trouble starts: say it
        False,
        False,
        False,
        True,  # 60 s after the last warning
        False,
        False,
        True,
    ]
    assert trouble.attempts == len(times)
    assert trouble.seconds(220.0) == 120.0


def test_connected_reports_the_series_once_and_starts_afresh() -> None:
    trouble = ConnectTrouble()
    assert trouble.connected(5.0) is None  # no trouble: nothing to report
    trouble.failed(10.0)
    trouble.failed(11.0)
    trouble.failed(12.0)
    assert trouble.connected(13.5) == Healed(attempts=3, seconds=3.5)
    assert trouble.connected(14.0) is None
    assert trouble.seconds(14.0) == 0.0
    assert trouble.failed(20.0) is True  # a new series warns again at once
    assert trouble.attempts == 1


def test_warn_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="warn_every"):
        ConnectTrouble(warn_every=0)


# --- hints (issue 19 §3) -------------------------------------------------------------------------


def _lost(text: str, cause: BaseException) -> ConnectError:
    error = ConnectError(text)
    error.__cause__ = cause
    return error


def test_a_reset_during_the_tls_handshake_hints_a_plain_port() -> None:
    error = _lost(
        "cannot connect to mqtts://h:1883: [Errno 104] Connection reset by peer",
        ConnectionResetError(104, "Connection reset by peer"),
    )
    hint = scheme_hint(error, tls=True)
    assert hint is not None
    assert "use mqtt://" in hint
    assert scheme_hint(error, tls=False) is None  # not a handshake of ours: no TLS hint


def test_a_link_closed_before_connack_on_plain_mqtt_hints_a_tls_port() -> None:
    inner = ConnectionLostError("link lost: [Errno 104] Connection reset by peer")
    error = _lost(f"link closed before CONNACK: {inner}", inner)
    assert scheme_hint(error, tls=False) == "is this a TLS port? use mqtts://"


@pytest.mark.parametrize(
    "error",
    [
        ConnectError("connection to mqtt://h:1 refused", refused=True),
        ConnectError("broker refused the connection", 0x86),  # an MQTT answer: no mismatch
        ConnectError("cannot connect: certificate verify failed", fatal=True),
        ConnectError("no CONNACK from mqtt://h:1 within 1 s"),
    ],
)
def test_other_failures_get_no_scheme_hint(error: ConnectError) -> None:
    assert scheme_hint(error, tls=True) is None
    assert scheme_hint(error, tls=False) is None


def test_the_error_raised_to_a_caller_carries_the_hint_once() -> None:
    cause = ConnectionResetError(104, "Connection reset by peer")
    error = _lost("cannot connect to mqtts://h:1883: [Errno 104] Connection reset by peer", cause)
    hint = scheme_hint(error, tls=True)
    hinted = with_scheme_hint(error, tls=True)
    assert hinted is error  # the same error: its cause, traceback and attributes kept
    assert str(hinted) == (
        f"cannot connect to mqtts://h:1883: [Errno 104] Connection reset by peer ({hint})"
    )
    assert hinted.__cause__ is cause
    assert str(with_scheme_hint(hinted, tls=True)).count("use mqtt://") == 1  # once
    other = ConnectError("connection to mqtt://h:1 refused", refused=True)
    assert str(with_scheme_hint(other, tls=False)) == "connection to mqtt://h:1 refused"


class Move(BaseModel):
    speed: int
    heading: float
    name: str
    mode: str


def test_a_validation_error_is_described_by_fields_and_reasons_never_values() -> None:
    with pytest.raises(ValidationError) as info:
        Move.model_validate({"speed": "s3cret-fast", "heading": "north", "name": 7})
    text = describe_invalid(info.value)
    assert text.startswith("4 validation errors for Move: speed: Input should be a valid integer")
    assert "heading: Input should be a valid number" in text
    assert "name: Input should be a valid string" in text
    assert text.endswith("; and 1 more")  # bounded: the first three
    assert "s3cret" not in text
    assert "north" not in text


def test_other_errors_are_their_first_line() -> None:
    assert describe_invalid(ValueError("first\nsecond")) == "first"
