"""MQTT 5 reason codes are named in the errors a user reads ("0x87 Not authorized")."""

from __future__ import annotations

from tars.mqtt import (
    ConnectError,
    ConnectionLostError,
    ProtocolError,
    PublishError,
    SubscribeError,
)
from tars.mqtt._reasons import describe, name_in, reason_name


def test_subscribe_error_names_the_reason() -> None:
    error = SubscribeError("fleet/#", 0x87)
    assert (
        str(error)
        == "subscription to 'fleet/#' refused by the broker (reason code 0x87 Not authorized)"
    )
    assert error.reason_code == 0x87


def test_subscribe_error_keeps_the_explanation() -> None:
    error = SubscribeError("$share/g/a", 0x9E, "the broker does not offer shared subscriptions")
    assert "0x9e Shared Subscriptions not supported: the broker does not offer" in str(error)


def test_connect_error_names_the_code_where_the_message_writes_it() -> None:
    error = ConnectError("broker refused the connection: reason code 0x86 (bad login)", 0x86)
    assert str(error) == (
        "broker refused the connection: reason code 0x86 Bad User Name or Password (bad login)"
    )


def test_connect_error_without_the_code_in_its_text_gets_it_appended() -> None:
    assert str(ConnectError("refused", 0x87)) == "refused (0x87 Not authorized)"
    assert str(ConnectError("no CONNACK within 5 s")) == "no CONNACK within 5 s"


def test_publish_protocol_and_lost_errors_name_their_code() -> None:
    assert "0x97 Quota exceeded" in str(PublishError("refused: reason code 0x97", 0x97))
    assert "0x81 Malformed Packet" in str(ProtocolError("bad length", 0x81))
    lost = ConnectionLostError("broker closed the connection: reason code 0x8b", 0x8B)
    assert str(lost) == "broker closed the connection: reason code 0x8b Server shutting down"
    assert lost.reason_code == 0x8B
    assert ConnectionLostError("link lost").reason_code is None


def test_a_longer_hex_number_is_not_taken_for_the_code() -> None:
    assert name_in("id 0x870 failed", 0x87) == "id 0x870 failed (0x87 Not authorized)"


def test_unknown_codes_stay_as_numbers() -> None:
    assert reason_name(0x7F) is None
    assert describe(0x7F) == "0x7f"
    assert name_in("reason code 0x7f", 0x7F) == "reason code 0x7f"
    assert describe(0x00) == "0x00 Success"
