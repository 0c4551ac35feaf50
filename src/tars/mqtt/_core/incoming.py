"""Acknowledgements of received QoS 1/2 messages, withheld until their handlers are done.

Pure. With acknowledgement after handling (the default), a QoS 1 message is PUBACK-ed, and a
QoS 2 message PUBREC-ed, only once every subscription it reached has finished with it (handled,
or failed and counted: a poison message must not come back for ever). Until then the broker
still owns it: a worker that dies, or a link that drops, gets it redelivered.

MQTT 5 (4.6) wants acknowledgements in the order the messages arrived, so a finished message
waits here for the ones before it. The broker's Receive Maximum (ours, from the CONNECT) bounds
how many are outstanding, which is the flow control: a slow handler holds the window, and the
broker holds the rest of the backlog instead of us.
"""

from __future__ import annotations

from collections import deque

__all__ = ["IncomingAcks"]


class IncomingAcks:
    """Received QoS 1/2 packet ids of one link, in arrival order, until acknowledged."""

    __slots__ = ("_done", "_order", "_qos")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._qos: dict[int, int] = {}
        self._done: set[int] = set()

    def __len__(self) -> int:
        return len(self._qos)

    def __contains__(self, packet_id: object) -> bool:
        return packet_id in self._qos

    def hold(self, packet_id: int, qos: int) -> None:
        """A message arrived and is being handled: its acknowledgement waits."""
        self._order.append(packet_id)
        self._qos[packet_id] = qos

    def finish(self, packet_id: int) -> list[tuple[int, int]]:
        """The message is done with; return the (packet id, qos) now due, in arrival order."""
        if packet_id not in self._qos:
            return []
        self._done.add(packet_id)
        due: list[tuple[int, int]] = []
        order, done = self._order, self._done
        while order and order[0] in done:
            head = order.popleft()
            done.discard(head)
            due.append((head, self._qos.pop(head)))
        return due

    def clear(self) -> None:
        """The link is gone: the broker redelivers whatever was not acknowledged."""
        self._order.clear()
        self._qos.clear()
        self._done.clear()
