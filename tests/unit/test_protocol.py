"""The ``protocol`` option as a policy: which MQTT version each attempt speaks, and what a
failed or accepted attempt teaches (``auto``: MQTT 5 first, 3.1.1 when refused, remembered)."""

from __future__ import annotations

import pytest

from tars.mqtt._core.protocol import MQTT5, MQTT311, ProtocolChoice, level_name

A, B = "a:1883", "b:1883"


def test_fixed_levels_never_change() -> None:
    for option, level in (("5", MQTT5), ("3.1.1", MQTT311)):
        choice = ProtocolChoice(option)  # type: ignore[arg-type]
        assert choice.level(A) == level
        assert choice.failed(A, level, 0x84, connect_sent=True) is False
        assert choice.level(A) == level


def test_auto_falls_back_on_an_explicit_refusal_and_remembers_per_broker() -> None:
    choice = ProtocolChoice("auto")
    assert choice.level(A) == MQTT5
    assert choice.failed(A, MQTT5, 0x84, connect_sent=True) is True
    assert choice.level(A) == MQTT311
    assert choice.succeeded(A, MQTT311) is True  # news: logged once
    assert choice.succeeded(A, MQTT311) is False
    assert choice.level(A) == MQTT311
    assert choice.level(B) == MQTT5  # another broker is asked afresh


@pytest.mark.parametrize(("reason", "sent", "falls_back"), [
    (None, True, True),  # closed right after CONNECT, or no CONNACK within the timeout
    (None, False, False),  # never reached the broker (refused, DNS, TLS): not a protocol matter
    (0x86, True, False),  # bad credentials: a refusal of another kind
    (0x87, True, False),
])  # fmt: skip
def test_what_counts_as_a_refusal_of_mqtt5(
    reason: int | None, sent: bool, falls_back: bool
) -> None:
    assert ProtocolChoice().failed(A, MQTT5, reason, connect_sent=sent) is falls_back


def test_a_fallback_that_fails_is_not_remembered() -> None:
    choice = ProtocolChoice()
    assert choice.failed(A, MQTT5, None, connect_sent=True)
    assert choice.failed(A, MQTT311, None, connect_sent=True) is False
    assert choice.level(A) == MQTT5  # the broker was just away: MQTT 5 again next time


def test_a_broker_known_for_mqtt5_is_not_downgraded_by_an_outage() -> None:
    choice = ProtocolChoice()
    choice.succeeded(A, MQTT5)
    assert choice.failed(A, MQTT5, None, connect_sent=True) is False
    assert choice.level(A) == MQTT5
    # ...but an explicit refusal is believed (the broker was replaced by a 3.1.1 one).
    assert choice.failed(A, MQTT5, 0x84, connect_sent=True) is True
    assert choice.level(A) == MQTT311


def test_names_and_bad_options() -> None:
    assert level_name(MQTT311) == "MQTT 3.1.1"
    assert level_name(MQTT5) == "MQTT 5"
    with pytest.raises(ValueError, match="protocol"):
        ProtocolChoice("3.1")  # type: ignore[arg-type]


def test_one_unanswered_connect_is_not_enough_to_remember_311() -> None:
    choice = ProtocolChoice()
    # An MQTT 5 broker in trouble drops a CONNECT; the 3.1.1 retry is taken.
    assert choice.failed(A, MQTT5, None, connect_sent=True)
    assert choice.level(A) == MQTT311
    assert choice.succeeded(A, MQTT311) is True
    assert choice.level(A) == MQTT5  # not settled: the next link asks for MQTT 5 again
    assert choice.succeeded(A, MQTT5) is True
    assert choice.level(A) == MQTT5
    # A broker that drops MQTT 5 CONNECTs twice in a row (each time taking 3.1.1) is 3.1.1.
    other = ProtocolChoice()
    for _ in range(2):
        assert other.level(B) == MQTT5
        assert other.failed(B, MQTT5, None, connect_sent=True)
        other.succeeded(B, MQTT311)
    assert other.level(B) == MQTT311


def test_a_url_option_wins_for_its_broker() -> None:
    choice = ProtocolChoice("5")
    assert choice.level(A, "3.1.1") == MQTT311
    assert choice.level(A, "auto") == MQTT5
    assert choice.failed(A, MQTT5, 0x84, connect_sent=True, option="auto") is True
    assert choice.level(A, "auto") == MQTT311
    assert choice.level(B) == MQTT5
