"""The withheld acknowledgements of received QoS 1/2 messages (:mod:`tars.mqtt._core.incoming`)."""

from __future__ import annotations

from tars.mqtt._core.incoming import IncomingAcks


def held(*ids_and_qos: tuple[int, int]) -> IncomingAcks:
    acks = IncomingAcks()
    for packet_id, qos in ids_and_qos:
        acks.hold(packet_id, qos)
    return acks


def test_a_message_finished_first_is_acknowledged_first() -> None:
    acks = held((7, 1))
    assert (len(acks), 7 in acks) == (1, True)
    assert acks.finish(7) == [(7, 1)]
    assert (len(acks), 7 in acks) == (0, False)


def test_acknowledgements_go_in_arrival_order_whatever_order_handlers_finish() -> None:
    acks = held((1, 1), (2, 2), (3, 1), (4, 1))
    assert acks.finish(3) == []  # 1 and 2 still being handled
    assert acks.finish(2) == []
    assert 3 in acks
    assert len(acks) == 4
    assert acks.finish(1) == [(1, 1), (2, 2), (3, 1)]  # each with its QoS: PUBACK or PUBREC
    assert acks.finish(4) == [(4, 1)]
    assert len(acks) == 0


def test_finishing_an_unknown_or_already_finished_id_does_nothing() -> None:
    acks = held((1, 1), (2, 1))
    assert acks.finish(9) == []
    assert acks.finish(2) == []
    assert acks.finish(2) == []  # twice: still waits for 1, and is released once
    assert acks.finish(1) == [(1, 1), (2, 1)]
    assert acks.finish(1) == []


def test_a_packet_id_can_be_used_again_once_acknowledged() -> None:
    acks = held((5, 1))
    assert acks.finish(5) == [(5, 1)]
    acks.hold(5, 2)
    assert acks.finish(5) == [(5, 2)]


def test_clear_forgets_everything_when_the_link_is_gone() -> None:
    acks = held((1, 1), (2, 1))
    acks.finish(2)
    acks.clear()
    assert len(acks) == 0
    assert acks.finish(1) == []  # the broker sends them again on the next link
    acks.hold(2, 1)
    assert acks.finish(2) == [(2, 1)]  # no stale "done" mark from the old link
