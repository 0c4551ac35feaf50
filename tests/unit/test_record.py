"""The records written by hand (``tars.mqtt._record``) behave as the dataclasses they replace."""

from __future__ import annotations

import dataclasses

import pytest

from tars.mqtt._core.events import Disconnected, Settled
from tars.mqtt._core.subtable import FilterEntry


def test_a_frozen_record_compares_hashes_and_shows_its_fields() -> None:
    a = Disconnected(0x8E, "gone", by_peer=True)
    assert a == Disconnected(0x8E, "gone", True)
    assert a != Disconnected(0x8E)
    assert hash(a) == hash(Disconnected(0x8E, "gone", True))
    other: object = Disconnected(1)
    assert Settled(1) != other  # another type: never equal
    assert repr(Settled("h")) == "Settled(handle='h')"
    assert repr(a).startswith("Disconnected(reason_code=142, reason_string='gone', by_peer=True,")


def test_a_frozen_record_refuses_assignment() -> None:
    event = Settled(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.handle = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del event.handle
    with pytest.raises(AttributeError):
        event.other = 1  # type: ignore[attr-defined]


def test_a_mutable_record_compares_by_its_fields_and_is_unhashable() -> None:
    entry = FilterEntry(7)
    assert entry == FilterEntry(7, [0, 0, 0])
    assert entry.counts is not FilterEntry(7).counts
    entry.strikes += 1
    assert entry != FilterEntry(7)
    with pytest.raises(TypeError):
        hash(entry)
    assert repr(entry) == "FilterEntry(sid=7, counts=[0, 0, 0], broker_qos=None, strikes=1)"
