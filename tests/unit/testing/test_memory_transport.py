"""The in-memory transport keeps the asyncio transport contract a real socket keeps."""

from __future__ import annotations

import asyncio

import pytest

from tars.mqtt.testing import MemoryTransport
from tars.mqtt.testing._memory_transport import memory_pipe


class Recorder(asyncio.Protocol):
    """Records every protocol callback, in order."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.events: list[tuple[str, object]] = []
        self.lost = asyncio.Event()
        self.got_data = asyncio.Event()
        self.got_eof = asyncio.Event()
        self.keep_open_on_eof = keep_open_on_eof

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))
        self.got_data.set()

    def eof_received(self) -> bool:
        self.events.append(("eof", None))
        self.got_eof.set()
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))
        self.lost.set()

    def pause_writing(self) -> None:
        self.events.append(("pause_writing", None))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing", None))

    def data(self) -> bytes:
        return b"".join(v for k, v in self.events if k == "data" and isinstance(v, bytes))


def pipe(
    a: Recorder | None = None, b: Recorder | None = None
) -> tuple[MemoryTransport, Recorder, MemoryTransport, Recorder]:
    a = a or Recorder()
    b = b or Recorder()
    ta, tb = memory_pipe(
        asyncio.get_running_loop(), a, b, name_a=("client", 1), name_b=("server", 0)
    )
    return ta, a, tb, b


async def test_writes_arrive_on_a_later_loop_turn_coalesced() -> None:
    ta, _, _, b = pipe()
    ta.write(b"one")
    ta.writelines([b"two", bytearray(b"three")])
    assert b.events == []  # never delivered from inside write()
    await asyncio.wait_for(b.got_data.wait(), 1)
    assert b.events == [("data", b"onetwothree")]


async def test_extra_info_names_both_ends() -> None:
    ta, _, tb, _ = pipe()
    assert ta.get_extra_info("sockname") == ("client", 1)
    assert ta.get_extra_info("peername") == ("server", 0)
    assert tb.get_extra_info("peername") == ("client", 1)
    assert ta.get_extra_info("socket") is None


async def test_paused_reading_holds_data_and_eof_until_resumed() -> None:
    ta, a, tb, b = pipe()
    tb.pause_reading()
    assert not tb.is_reading()
    ta.write(b"held")
    ta.close()
    await asyncio.wait_for(a.lost.wait(), 1)
    assert b.events == []
    tb.resume_reading()
    await asyncio.wait_for(b.lost.wait(), 1)
    assert b.events == [("data", b"held"), ("eof", None), ("lost", None)]


async def test_close_delivers_data_then_eof_and_both_sides_lose_once() -> None:
    ta, a, tb, b = pipe()
    ta.write(b"last words")
    ta.close()
    ta.close()
    assert ta.is_closing()
    ta.write(b"dropped after close")
    await asyncio.wait_for(asyncio.gather(a.lost.wait(), b.lost.wait()), 1)
    assert b.events == [("data", b"last words"), ("eof", None), ("lost", None)]
    assert a.events == [("lost", None)]
    assert tb.is_closing()


async def test_abort_resets_the_peer_after_the_data_already_written() -> None:
    ta, a, _, b = pipe()
    ta.write(b"partial")
    ta.abort()
    await asyncio.wait_for(asyncio.gather(a.lost.wait(), b.lost.wait()), 1)
    assert b.events[0] == ("data", b"partial")
    kind, exc = b.events[1]
    assert kind == "lost"
    assert isinstance(exc, ConnectionResetError)
    assert a.events == [("lost", None)]


async def test_half_close_keeps_the_other_direction_open() -> None:
    ta, a, tb, b = pipe(b=Recorder(keep_open_on_eof=True))
    assert ta.can_write_eof()
    ta.write_eof()
    with pytest.raises(RuntimeError):
        ta.write(b"after eof")
    await asyncio.wait_for(b.got_eof.wait(), 1)
    assert b.events == [("eof", None)]
    tb.write(b"reply")
    await asyncio.wait_for(a.got_data.wait(), 1)
    assert a.data() == b"reply"
    assert not tb.is_closing()


async def test_writer_is_paused_above_high_water_and_resumed_below_low() -> None:
    ta, a, tb, b = pipe()
    ta.set_write_buffer_limits(high=10, low=4)
    assert ta.get_write_buffer_limits() == (4, 10)
    tb.pause_reading()
    ta.write(b"x" * 8)
    assert ("pause_writing", None) not in a.events
    ta.write(b"x" * 8)
    assert a.events == [("pause_writing", None)]
    assert ta.get_write_buffer_size() == 16
    tb.resume_reading()
    await asyncio.wait_for(b.got_data.wait(), 1)
    assert a.events == [("pause_writing", None), ("resume_writing", None)]
    assert b.data() == b"x" * 16
    assert ta.get_write_buffer_size() == 0


async def test_bad_write_buffer_limits_are_refused() -> None:
    ta, _, _, _ = pipe()
    with pytest.raises(ValueError, match="high"):
        ta.set_write_buffer_limits(high=1, low=2)


async def test_protocol_can_be_swapped() -> None:
    ta, _, tb, _ = pipe()
    other = Recorder()
    tb.set_protocol(other)
    assert tb.get_protocol() is other
    ta.write(b"to the new protocol")
    await asyncio.wait_for(other.got_data.wait(), 1)
    assert other.data() == b"to the new protocol"
