"""The asyncio connection (session + transport) against a real Mosquitto.

Each test opens links with :func:`open_connection` and drives them as the client does: through
the :class:`LinkView` (publish, subscribe, the CONNACK) or by publishing into the session and
settling its events (:func:`settle`); Mosquitto, its command-line clients and a tiny
misbehaving server are the peers. The ``shared_mosquitto`` broker serves tests that leave it
running (each on topics of its own); tests that stop, kill or reconfigure a broker get one of
their own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import mqtt5
import pytest
from mqtt5 import ConnAckPacket, DisconnectPacket, DisconnectReasonCode, PublishPacket

from tars.mqtt._asyncio.connection import (
    Connection,
    Connector,
    MessageListener,
    open_connection,
    settle,
)
from tars.mqtt._asyncio.linkview import LinkView
from tars.mqtt._core.events import Ready
from tars.mqtt._core.liveness import Liveness
from tars.mqtt._core.session import Session
from tars.mqtt._errors import ClientStateError, ConnectError, ConnectionLostError, ProtocolError
from tars.mqtt.testing._mosquitto import MosquittoBroker

pytestmark = pytest.mark.mosquitto

_ids = itertools.count()


def unique(prefix: str) -> str:
    """A client id or topic no other test (or test run) on the shared broker uses."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


class Inbox:
    """A :data:`MessageListener` that keeps every message and lets a test wait for some."""

    def __init__(self) -> None:
        self.messages: list[PublishPacket] = []
        self._arrived = asyncio.Event()

    def __call__(self, message: PublishPacket) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[PublishPacket]:
        """The first ``count`` messages, once they are here."""
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages[:count]


class Link:
    """One open link: the connection, its session, and the ``.client`` view over them."""

    def __init__(self, conn: Connection, session: Session) -> None:
        self.conn = conn
        self.session = session
        self.view = LinkView(conn, session)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 0
    ) -> asyncio.Future[int] | None:
        """What ``MQTTClient.publish`` does without waiting: into the session, flush soon."""
        fut = asyncio.get_running_loop().create_future() if qos else None
        settle(self.session.publish(topic, payload, qos, handle=fut))
        self.conn.flush_soon()
        return fut

    async def disconnect(self) -> None:
        await self.conn.disconnect()


async def connect(
    broker: MosquittoBroker,
    session: Session | None = None,
    listeners: list[MessageListener] | None = None,
    **options: Any,
) -> Link:
    # The widest Receive Maximum: Mosquitto 2.0.11 sends a QoS 2 burst past a smaller one while
    # our PUBRECs wait for PUBREL, which the session (acknowledging on arrival) calls a protocol
    # error; these tests are about the link, not that window.
    session = session or Session(unique("conn"), receive_maximum=65535)
    conn = await open_connection(
        session,
        broker.host,
        broker.port,
        listeners=listeners if listeners is not None else [],
        timeout=5.0,
        **options,
    )
    return Link(conn, session)


class CountingTransport(asyncio.Transport):
    """A transport that counts the writes its protocol makes, then passes them on."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()


class Relay(asyncio.Protocol):
    """Sits between a TCP transport and the connection, handing it a :class:`CountingTransport`."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.transport: CountingTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transport is no subclass of asyncio.Transport
        self.transport = CountingTransport(cast(asyncio.Transport, transport))
        self.protocol.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self.protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


def counting_connector(broker: MosquittoBroker) -> tuple[Connector, list[CountingTransport]]:
    """A connector over TCP whose transports (one per link) count the connection's writes."""
    transports: list[CountingTransport] = []

    async def connector(factory: Callable[[], asyncio.Protocol]) -> tuple[Any, Any]:
        relay = Relay(factory())
        await asyncio.get_running_loop().create_connection(lambda: relay, broker.host, broker.port)
        assert relay.transport is not None
        transports.append(relay.transport)
        return relay.transport, relay.protocol

    return connector, transports


async def run(*argv: str, timeout: float = 10.0) -> tuple[int, str]:
    """Run a Mosquitto command-line client; returns its exit code and stdout."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    assert process.returncode == 0, err.decode()
    return process.returncode, out.decode()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``condition`` (each poll is a round trip to a peer) until it holds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


# --- connecting -----------------------------------------------------------------------------


async def test_connect_and_disconnect(shared_mosquitto: MosquittoBroker) -> None:
    link = await connect(shared_mosquitto, Session(unique("c"), keep_alive=30))
    assert link.conn.is_connected
    assert link.conn.state == "connected"
    assert link.view.connack is not None
    assert link.view.connack.reason_code == 0
    await link.disconnect()
    assert link.conn.state == "closed"
    assert not link.conn.is_connected
    assert link.conn.close_reason is None  # we ended it


async def test_nothing_listening_is_a_refused_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = Session(unique("c"))
    with pytest.raises(ConnectError) as info:
        await open_connection(session, "127.0.0.1", port, listeners=[], timeout=5.0)
    assert info.value.refused is True
    assert info.value.reason_code is None
    # The session is free for the next attempt.
    assert session.state.value == "disconnected"


async def test_a_broker_that_refuses_us_gives_its_reason_code() -> None:
    broker = MosquittoBroker(persistence=False, extra_config="allow_anonymous false")
    await broker.astart()
    try:
        with pytest.raises(ConnectError) as info:
            await connect(broker)
        assert info.value.reason_code == 0x87  # not authorized
        assert info.value.refused is False
    finally:
        await asyncio.to_thread(broker.close)


async def test_a_session_serves_one_link_at_a_time(shared_mosquitto: MosquittoBroker) -> None:
    session = Session(unique("one"))
    link = await connect(shared_mosquitto, session)
    try:
        with pytest.raises(ClientStateError):
            await connect(shared_mosquitto, session)
        assert link.conn.is_connected
    finally:
        await link.disconnect()
    second = await connect(shared_mosquitto, session)  # free again once the first has closed
    await second.disconnect()


async def test_tcp_nodelay_is_set_on_the_socket(shared_mosquitto: MosquittoBroker) -> None:
    transports: list[asyncio.BaseTransport] = []

    async def plain_tcp(factory: Callable[[], asyncio.Protocol]) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        host, port = shared_mosquitto.host, shared_mosquitto.port
        transport, protocol = await loop.create_connection(factory, host, port)
        transports.append(transport)
        return transport, protocol

    link = await connect(shared_mosquitto, connector=plain_tcp)
    try:
        sock = transports[0].get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await link.disconnect()


# --- publish and subscribe ------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_publish_to_our_own_subscription(shared_mosquitto: MosquittoBroker, qos: int) -> None:
    inbox = Inbox()
    topic = unique("own")
    link = await connect(shared_mosquitto, listeners=[inbox])
    try:
        assert await link.view.subscribe(topic, qos=2) == (2,)
        reason = await link.view.publish(topic, b"payload-%d" % qos, qos=qos, content_type="text/x")
        assert reason == 0
        [message] = await inbox.wait_for(1)
        assert (message.topic, message.payload, message.qos) == (topic, b"payload-%d" % qos, qos)
        assert message.content_type == "text/x"
    finally:
        await link.disconnect()


async def test_qos1_and_qos2_publishes_pipeline_and_all_complete(
    shared_mosquitto: MosquittoBroker,
) -> None:
    inbox = Inbox()
    topic = unique("pipe")
    link = await connect(shared_mosquitto, listeners=[inbox])
    try:
        await link.view.subscribe(topic, qos=2)
        futures = [link.publish_nowait(topic, b"%d" % n, qos=1 + n % 2) for n in range(500)]
        reasons = await asyncio.wait_for(asyncio.gather(*(f for f in futures if f)), 10)
        assert reasons == [0] * 500
        messages = await inbox.wait_for(500)
        assert sorted(int(m.payload) for m in messages) == list(range(500))
    finally:
        await link.disconnect()


async def test_unsubscribe_stops_the_messages(shared_mosquitto: MosquittoBroker) -> None:
    topic = unique("unsub")
    link = await connect(shared_mosquitto)
    try:
        await link.view.subscribe(topic, qos=1)
        assert await link.view.publish(topic, b"x", qos=1) == 0
        assert await link.view.unsubscribe(topic) == (0,)
        # The broker itself says nobody is subscribed any more (PUBACK 0x10).
        assert await link.view.publish(topic, b"x", qos=1) == 0x10
        assert await link.view.unsubscribe(topic) == (0x11,)  # no subscription existed
    finally:
        await link.disconnect()


async def test_our_qos2_publish_reaches_an_independent_subscriber_once(
    shared_mosquitto: MosquittoBroker,
) -> None:
    base = unique("peer")
    sub = asyncio.create_task(
        run(
            "mosquitto_sub", "-V", "mqttv5", "-h", shared_mosquitto.host,
            "-p", str(shared_mosquitto.port), "-q", "2", "-C", "1", "-v",
            "-t", f"{base}/#", "-T", f"{base}/probe",
        )
    )  # fmt: skip
    link = await connect(shared_mosquitto)
    try:

        async def subscribed() -> bool:
            # PUBACK 0 (not 0x10 "no matching subscribers") once mosquitto_sub is in.
            return await link.view.publish(f"{base}/probe", b"", qos=1) == 0

        await until(subscribed)
        assert await link.view.publish(f"{base}/data", b"exactly-once", qos=2) == 0
        _, out = await asyncio.wait_for(sub, 10)
        assert out == f"{base}/data exactly-once\n"
    finally:
        sub.cancel()
        await link.disconnect()


@pytest.mark.parametrize("qos", [1, 2])
async def test_a_mosquitto_pub_message_reaches_our_listener(
    shared_mosquitto: MosquittoBroker, qos: int
) -> None:
    inbox = Inbox()
    topic = unique("from-pub")
    link = await connect(shared_mosquitto, listeners=[inbox])
    try:
        await link.view.subscribe(topic, qos=2)
        await run(
            "mosquitto_pub", "-V", "mqttv5", "-h", shared_mosquitto.host,
            "-p", str(shared_mosquitto.port), "-q", str(qos), "-t", topic, "-m", "hello",
        )  # fmt: skip
        [message] = await inbox.wait_for(1)
        assert (message.payload, message.qos) == (b"hello", qos)
    finally:
        await link.disconnect()


async def test_a_failing_listener_does_not_stop_the_others(
    shared_mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: PublishPacket) -> None:
        raise RuntimeError("listener bug")

    inbox = Inbox()
    topic = unique("broken")
    link = await connect(shared_mosquitto, listeners=[broken, inbox])
    try:
        await link.view.subscribe(topic, qos=1)
        await link.view.publish(topic, b"a", qos=1)
        await link.view.publish(topic, b"b", qos=1)
        assert [m.payload for m in await inbox.wait_for(2)] == [b"a", b"b"]
        assert link.conn.is_connected
        assert "listener bug" in caplog.text
    finally:
        await link.disconnect()


# --- the link over time ---------------------------------------------------------------------


async def test_keep_alive_keeps_an_idle_link_up(shared_mosquitto: MosquittoBroker) -> None:
    connector, transports = counting_connector(shared_mosquitto)
    # A PINGRESP may take longer than the keep alive: the next PINGREQ still goes out on time.
    session = Session(unique("ka"), keep_alive=1, ping_timeout=2.5)
    link = await connect(shared_mosquitto, session, connector=connector)
    try:
        # Mosquitto drops a client silent for 1.5 x keep alive: that may not happen in 3 s.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(link.conn.wait_closed(), 3.0)
        assert link.conn.is_connected
        pings = [w for w in transports[0].writes if w == mqtt5.PingReqPacket().write()]
        assert len(pings) >= 2
    finally:
        await link.disconnect()


async def test_qos0_publishes_of_one_loop_turn_share_few_writes(
    shared_mosquitto: MosquittoBroker,
) -> None:
    inbox = Inbox()
    topic = unique("coalesce")
    connector, transports = counting_connector(shared_mosquitto)
    link = await connect(shared_mosquitto, listeners=[inbox], connector=connector)
    try:
        await link.view.subscribe(topic, qos=0)
        writes_before = len(transports[0].writes)
        for n in range(1000):
            link.publish_nowait(topic, b"%d" % n)
        messages = await inbox.wait_for(1000, timeout=10)
        assert [int(m.payload) for m in messages] == list(range(1000))
        assert len(transports[0].writes) - writes_before < 20
    finally:
        await link.disconnect()


async def test_a_persistent_session_gets_its_messages_after_a_broker_restart(
    mosquitto_broker: MosquittoBroker,
) -> None:
    topic = unique("queued")
    session = Session(unique("away"), clean_start=False, session_expiry_interval=300)
    subscriber = await connect(mosquitto_broker, session)
    assert await subscriber.view.subscribe(topic, qos=1) == (1,)
    await subscriber.disconnect()

    publisher = await connect(mosquitto_broker)
    for n in range(5):
        assert await publisher.view.publish(topic, b"%d" % n, qos=1) == 0
    await mosquitto_broker.arestart()  # graceful: the broker saves the queued messages
    await asyncio.wait_for(publisher.conn.wait_closed(), 5)
    assert isinstance(publisher.conn.close_reason, ConnectionLostError)  # not ours: not None

    inbox = Inbox()
    back = await connect(mosquitto_broker, session, listeners=[inbox])
    try:
        assert back.view.connack is not None
        assert back.view.connack.session_present is True
        messages = await inbox.wait_for(5)
        assert [(m.payload, m.qos) for m in messages] == [(b"%d" % n, 1) for n in range(5)]
    finally:
        await back.disconnect()


async def _saved(path: Path, text: str) -> bool:
    data = await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else b"")
    return text.encode() in data


async def test_a_qos1_publish_survives_a_broker_kill_on_a_resumed_session(
    mosquitto_broker: MosquittoBroker,
) -> None:
    topic = unique("survivor")
    inbox = Inbox()
    session = Session(unique("pub"), clean_start=False, session_expiry_interval=300)
    link = await connect(mosquitto_broker, session, listeners=[inbox])
    await link.view.subscribe(topic, qos=1)
    # Wait until the broker has written our session's subscription to disk.
    await until(lambda: _saved(mosquitto_broker.workdir / "mosquitto.db", topic))

    # Freeze the broker, so our PUBLISH reaches its socket but is never answered, then kill it.
    pid = mosquitto_broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        publish = asyncio.create_task(link.view.publish(topic, b"in-flight", qos=1))
    finally:
        await mosquitto_broker.akill()
    await asyncio.wait_for(link.conn.wait_closed(), 5)
    assert isinstance(link.conn.close_reason, ConnectionLostError)
    assert not publish.done()

    await mosquitto_broker.astart()
    again = await connect(mosquitto_broker, session, listeners=[inbox])
    try:
        assert again.view.connack is not None
        assert again.view.connack.session_present is True
        assert await asyncio.wait_for(publish, 5) == 0
        [message] = await inbox.wait_for(1)
        assert message.payload == b"in-flight"
    finally:
        await again.disconnect()


async def test_a_pending_subscribe_fails_when_the_broker_goes_away(
    mosquitto_broker: MosquittoBroker,
) -> None:
    link = await connect(mosquitto_broker)
    pid = mosquitto_broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the SUBSCRIBE will never be answered
    try:
        subscribe = asyncio.create_task(link.view.subscribe(unique("never"), qos=1))
    finally:
        await mosquitto_broker.akill()
    with pytest.raises(ConnectionLostError):
        await asyncio.wait_for(subscribe, 5)
    assert link.conn.state == "closed"
    with pytest.raises(ConnectionLostError):  # the view is valid for its one link
        await link.view.publish("t", b"x")


# --- a peer that breaks the protocol --------------------------------------------------------


async def _junk_server(first_reply: bytes) -> tuple[asyncio.Server, asyncio.Queue[bytes]]:
    """A server that answers the CONNECT with ``first_reply``, then records what it gets."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the CONNECT
        writer.write(first_reply)
        rest = await reader.read()  # everything until the client closes
        received.put_nowait(rest)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, received


async def test_junk_instead_of_connack_is_a_connect_error_caused_by_a_protocol_error() -> None:
    server, received = await _junk_server(b"\x00\x00garbage")
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectError) as info:
            await open_connection(Session("c"), "127.0.0.1", port, listeners=[], timeout=5.0)
        assert isinstance(info.value.__cause__, ProtocolError)
        assert info.value.__cause__.reason_code == 0x81
        rest = await asyncio.wait_for(received.get(), 5)
        assert rest == DisconnectPacket(reason_code=DisconnectReasonCode.MALFORMED_PACKET).write()
    finally:
        server.close()
        await server.wait_closed()


async def test_junk_after_connack_closes_the_link_with_a_protocol_error() -> None:
    server, received = await _junk_server(ConnAckPacket().write() + b"\xff\xff\xff\xff\xff")
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await open_connection(Session("c"), "127.0.0.1", port, listeners=[], timeout=5.0)
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert isinstance(conn.close_reason, ProtocolError)
        assert conn.close_reason.reason_code == 0x81
        rest = await asyncio.wait_for(received.get(), 5)
        assert rest == DisconnectPacket(reason_code=DisconnectReasonCode.MALFORMED_PACKET).write()
    finally:
        server.close()
        await server.wait_closed()


# --- what the session keeps across links, over a real broker ----------------------------------


async def test_wait_ready_comes_after_the_restore_and_messages_flow(
    shared_mosquitto: MosquittoBroker,
) -> None:
    inbox = Inbox()
    topic = unique("restored")
    session = Session(unique("ready"))
    session.add_subscription(topic, 1)  # no link yet: the restore plan sends it
    link = await connect(shared_mosquitto, session, listeners=[inbox])
    try:
        ready = await asyncio.wait_for(link.conn.wait_ready(), 5)
        assert ready == Ready(session_present=False, first=True)
        assert session.ready
        assert await link.view.publish(topic, b"after-ready", qos=1) == 0  # not 0x10
        [message] = await inbox.wait_for(1)
        assert message.payload == b"after-ready"
        assert message.subscription_ids == [session.subscription_id(topic)]
    finally:
        await link.disconnect()
    assert await link.conn.wait_ready() == Ready(False, True)  # still answered after the end


async def test_publishes_made_offline_are_sent_when_the_link_comes(
    shared_mosquitto: MosquittoBroker,
) -> None:
    inbox = Inbox()
    topic = unique("offline")
    observer = await connect(shared_mosquitto, listeners=[inbox])
    await observer.view.subscribe(topic, qos=1)
    session = Session(unique("outbox"))
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[int]] = []
    for n in range(3):
        fut: asyncio.Future[int] = loop.create_future()
        settle(session.publish(topic, b"%d" % n, 1, handle=fut, now=loop.time()))
        futures.append(fut)
    assert session.outgoing.store.offline_count == 3
    link = await connect(shared_mosquitto, session)
    try:
        assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [0, 0, 0]
        assert [m.payload for m in await inbox.wait_for(3)] == [b"0", b"1", b"2"]
    finally:
        await link.disconnect()
        await observer.disconnect()


async def test_a_link_whose_heartbeats_stop_coming_back_is_ended_as_stale(
    mosquitto_broker: MosquittoBroker,
) -> None:
    client_id = unique("stale")
    session = Session(
        client_id,
        keep_alive=60,
        liveness=Liveness(heartbeat_interval=0.2, missed=2),
        heartbeat=(f"system/keepalive/{client_id}", lambda: b"beat"),
    )
    link = await connect(mosquitto_broker, session)
    await asyncio.wait_for(link.conn.wait_ready(), 5)
    pid = mosquitto_broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # TCP stays up; nothing comes back any more
    try:
        # The connection's one timer drives the session's deadlines: no keep-alive needed.
        await asyncio.wait_for(link.conn.wait_closed(), 5)
    finally:
        await mosquitto_broker.akill()
    assert link.conn.stale
    assert isinstance(link.conn.close_reason, ConnectionLostError)
    assert "stale" in str(link.conn.close_reason)
    assert session.stats.stale_links == 1
    assert session.state.value == "disconnected"  # free for the next link
