"""A TCP proxy that breaks the network on demand, for fault tests.

Put :class:`TcpFaultProxy` between a client and a broker, point the client at its ``url``, and
cut the path in the ways real networks fail:

- :meth:`~TcpFaultProxy.blackhole`: packets vanish but no socket closes (a dead NAT entry, a
  pulled cable behind a switch). Only keep-alive timeouts can notice it.
- :meth:`~TcpFaultProxy.drop_connections`: every link is reset at once (a broker crash seen from
  the client, a restarted load balancer).
- :meth:`~TcpFaultProxy.refuse`: nothing listens any more (the broker host is up, the broker is
  not): connection attempts fail with "connection refused".

It is built on asyncio protocols, not streams: bytes are forwarded from the callbacks, so the
only tasks are one short connect task per accepted connection, each named and owned.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from types import TracebackType
from typing import Self, cast

from .._argcheck import check_int, check_str

__all__ = ["TcpFaultProxy"]

# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


def _reset(transport: asyncio.Transport) -> None:
    """Abort a TCP transport with a RST, as a crashed peer or middlebox would."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class _Side(asyncio.Protocol):
    """One end of a proxied connection: hands what it reads to the link."""

    def __init__(self, link: _Link, *, client: bool) -> None:
        self._link = link
        self._client = client
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport by asyncio's contract, whatever its class (uvloop's is not a
        # subclass of asyncio.Transport): a cast, never a check.
        self.transport = cast(asyncio.Transport, transport)
        if self._client:
            self._link.client_connected()

    def data_received(self, data: bytes) -> None:
        self._link.forward(data, from_client=self._client)

    def eof_received(self) -> bool:
        self._link.side_ended(from_client=self._client)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._link.side_lost(from_client=self._client)

    def pause_writing(self) -> None:
        self._link.set_reading(not self._client, reading=False)

    def resume_writing(self) -> None:
        self._link.set_reading(not self._client, reading=True)


class _Link:
    """A client connection and its upstream connection to the target.

    A stalled link forwards nothing, ever again, and closes nothing on its own: it stays as
    useless as a TCP connection across a blackholed path.
    """

    def __init__(self, proxy: TcpFaultProxy, number: int) -> None:
        self.proxy = proxy
        self.number = number
        self.client = _Side(self, client=True)
        self.upstream: _Side | None = None
        self.stalled = proxy.blackholed
        self.doomed = False  # reset as soon as the client side exists (drop or close)
        # What the client sent before the upstream connection existed. pause_reading() in
        # connection_made is not enough: uvloop starts reading right after that callback.
        self._early = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def client_connected(self) -> None:
        assert self.client.transport is not None
        if self.doomed:
            _reset(self.client.transport)
            return
        if self.stalled:
            return  # a stale path: accepted here, never seen by the target
        # Hold the client's bytes in the kernel until the upstream connection exists.
        self.client.transport.pause_reading()
        self.proxy._connect_upstream(self)

    def upstream_connected(self, upstream: _Side) -> None:
        self.upstream = upstream
        if self.doomed:
            self.close(reset=True)
        elif self.client.lost and not self.stalled:
            self.close(reset=False)
        elif not self.stalled and self.client.transport is not None:
            if self._early and upstream.transport is not None:
                upstream.transport.write(bytes(self._early))
                self._early.clear()
            self.client.transport.resume_reading()

    def upstream_failed(self) -> None:
        if self.client.transport is not None and not self.client.lost:
            _reset(self.client.transport)
        self._check_done()

    def forward(self, data: bytes, *, from_client: bool) -> None:
        if self.stalled:
            return  # discarded, as a blackhole does
        peer = self.upstream if from_client else self.client
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.write(data)
        elif from_client and peer is None:
            self._early += data  # sent on as soon as the upstream connection exists

    def side_ended(self, *, from_client: bool) -> None:
        """One side sent FIN: close the other after flushing what it still has to send."""
        if self.stalled:
            return
        peer = self.upstream if from_client else self.client
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    def side_lost(self, *, from_client: bool) -> None:
        if not self.stalled:
            peer = self.upstream if from_client else self.client
            if peer is not None and peer.transport is not None:
                peer.transport.close()
        self._check_done()

    def set_reading(self, client: bool, *, reading: bool) -> None:
        """Back-pressure: stop reading one side while the other cannot take more bytes."""
        side = self.client if client else self.upstream
        if side is None or side.transport is None or side.lost:
            return
        if reading:
            side.transport.resume_reading()
        else:
            side.transport.pause_reading()

    def close(self, *, reset: bool) -> None:
        self.doomed = self.doomed or reset
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None and not side.lost:
                if reset:
                    _reset(side.transport)
                else:
                    side.transport.close()

    def _check_done(self) -> None:
        upstream_gone = self.upstream is None or self.upstream.lost
        if self.client.lost and upstream_gone and not self.proxy._is_connecting(self):
            self.proxy._links.discard(self)
            if not self.done.done():
                self.done.set_result(None)


class TcpFaultProxy:
    """An asyncio TCP proxy in front of a broker, with switches for network faults.

    ``target_host``/``target_port`` is the broker; the proxy listens on ``host``/``port``
    (port 0: a free port, read :attr:`port` after :meth:`start`). Use it as an async context
    manager, or the ``make_tcp_proxy`` pytest fixture. Call it from its event loop only.

    Raises :class:`~tars.mqtt.InvalidArgumentTypeError` for a host that is not a ``str`` or a
    port that is not an ``int``.
    """

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        check_str("target_host", target_host)
        check_int("target_port", target_port)
        check_str("host", host)
        check_int("port", port)
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.blackholed = False
        self.total_connections = 0
        self._links: set[_Link] = set()
        self._connecting: dict[_Link, asyncio.Task[None]] = {}
        self._server: asyncio.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._numbers = itertools.count(1)
        self._refusing = False
        self._started = False
        self._closed = False

    @property
    def url(self) -> str:
        """The ``mqtt://host:port`` URL a client should connect to instead of the broker's."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def active_connections(self) -> int:
        """Client connections accepted and not yet closed (stalled ones included)."""
        return sum(1 for link in self._links if not link.client.lost)

    async def start(self) -> None:
        """Listen for clients. Raises :class:`OSError` when the port cannot be bound."""
        if self._started:
            raise RuntimeError("TcpFaultProxy.start() called twice")
        self._started = True
        await self._serve(self._listen())

    def _listen(self) -> socket.socket:
        """Bind and listen synchronously, so connections queue in the kernel from now on."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, sock=sock)

    def _accept(self) -> _Side:
        link = _Link(self, next(self._numbers))
        self._links.add(link)
        self.total_connections += 1
        return link.client

    def _connect_upstream(self, link: _Link) -> None:
        task = asyncio.get_running_loop().create_task(
            self._open_upstream(link), name=f"tars-tcp-proxy-{self.port}-upstream-{link.number}"
        )
        self._connecting[link] = task

    def _is_connecting(self, link: _Link) -> bool:
        return link in self._connecting

    async def _open_upstream(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        side: _Side | None = None
        try:
            _, side = await loop.create_connection(
                lambda: _Side(link, client=False), self.target_host, self.target_port
            )
        except OSError:
            pass  # the target is down: the client sees its connection reset
        finally:  # also when cancelled by drop_connections()
            del self._connecting[link]
            if side is None:
                link.upstream_failed()
            else:
                link.upstream_connected(side)

    def blackhole(self) -> None:
        """Stop forwarding in both directions, closing nothing; arriving bytes are discarded.

        Every current connection stays stalled for good. New connections are accepted but
        never reach the target until :meth:`restore`.
        """
        self.blackholed = True
        for link in self._links:
            link.stalled = True

    def restore(self) -> None:
        """Forward again, for new connections (stalled ones stay useless, like a real path)."""
        self.blackholed = False

    async def drop_connections(self) -> None:
        """Reset every proxied connection at once (RST both ways) and wait until they are gone."""
        links = list(self._links)
        for link in links:
            link.close(reset=True)
        connecting = list(self._connecting.values())
        for task in connecting:
            task.cancel()
        if connecting:
            await asyncio.wait(connecting)
        if links:
            await asyncio.wait([link.done for link in links])

    def refuse(self, on: bool = True) -> None:
        """Stop (``on``) or resume listening: meanwhile connecting fails with "refused".

        Established connections are not touched. Resuming binds the same port again at once
        (connections queue in the kernel until the loop accepts them); it raises
        :class:`OSError` if another process took the port in between.
        """
        if not self._started or self._closed:
            raise RuntimeError("refuse() needs a started, open TcpFaultProxy")
        if on == self._refusing:
            return
        self._refusing = on
        if self._serve_task is not None:
            return  # the pending listen task reads _refusing when it is done
        if on:
            if self._server is not None:
                self._server.close()
                self._server = None
        else:
            self._serve_task = asyncio.get_running_loop().create_task(
                self._serve_again(self._listen()), name=f"tars-tcp-proxy-{self.port}-listen"
            )

    async def _serve_again(self, sock: socket.socket) -> None:
        """Serve a socket bound by refuse(False); never cancelled, so it cannot leak it."""
        try:
            await self._serve(sock)
        finally:
            self._serve_task = None
        if (self._refusing or self._closed) and self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        """Stop listening, reset every connection and wait until no task is left. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._serve_task is not None:
            await asyncio.wait([self._serve_task])
        server, self._server = self._server, None
        if server is not None:
            server.close()
        while self._links or self._connecting:
            await self.drop_connections()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"<TcpFaultProxy {self.url} -> {self.target_host}:{self.target_port} "
            f"active={self.active_connections} blackholed={self.blackholed}>"
        )
