"""What the contract tests stand on: one broker under test, reached the same way for all three.

A :class:`Target` hides which broker a test runs against: the in-memory broker through its
``connector`` (no socket), the same broker over TCP (``serve_tcp``) or WebSockets
(``serve_ws``), or a real Mosquitto over TCP or WebSockets. Tests
make clients, cut their links and watch topics only through it, so a test reads the same
whatever the broker, and a difference in outcome is a difference in the broker.

Cutting one client's link is a broker fault on the in-process broker (``drop_link``, whatever
the transport) and a network fault on Mosquitto: each Mosquitto client goes through a
:class:`TcpFaultProxy` of its own (a WebSocket link too: it runs over TCP), and
``drop_connections`` resets it. Either way the client sees its connection reset and the broker
sees the client vanish without DISCONNECT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Unpack

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ClientOptions, Message, MQTTClient
from tars.mqtt.testing import InMemoryBroker, MosquittoBroker, TcpFaultProxy
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory, TcpProxyFactory

__all__ = ["Kind", "Target", "collect", "connections", "publish_many"]

Kind = Literal["memory", "tcp", "ws", "mosquitto", "mosquitto-ws"]

# Reconnect at once (well, within 0.1 s): the suite waits for every reconnection it causes.
_FAST_RECONNECT: ClientOptions = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2}


@dataclass
class Target:
    """The broker of one contract test and how its clients reach it (see the module doc)."""

    kind: Kind
    factory: MQTTClientFactory
    memory: InMemoryBroker | None = None
    mosquitto: MosquittoBroker | None = None
    make_proxy: TcpProxyFactory | None = None
    root: str = field(default_factory=lambda: unique("contract"))
    _proxies: dict[str, TcpFaultProxy] = field(default_factory=dict)

    def topic(self, *levels: str) -> str:
        """A topic under this test's own root: nothing else on a shared broker uses it."""
        return "/".join((self.root, *levels))

    async def client(
        self,
        prefix: str,
        *,
        client_id: str | None = None,
        connect: bool = True,
        **options: Unpack[ClientOptions],
    ) -> MQTTClient:
        """A client (``client_id``, else a fresh id from ``prefix``), shut down after the test."""
        client_id = client_id or unique(prefix)
        merged: ClientOptions = {**_FAST_RECONNECT, **options}
        if self.kind == "memory":
            assert self.memory is not None
            return await self.factory(client_id, broker=self.memory, connect=connect, **merged)
        if self.memory is not None:
            url = self.memory.tcp_url if self.kind == "tcp" else self.memory.ws_url
            assert url is not None
            return await self.factory(client_id, broker=url, connect=connect, **merged)
        assert self.mosquitto is not None
        assert self.make_proxy is not None
        if self.kind == "mosquitto-ws":
            assert self.mosquitto.ws_port is not None
            proxy = await self.make_proxy(self.mosquitto.host, self.mosquitto.ws_port)
            url = f"ws://{proxy.host}:{proxy.port}/mqtt"
        else:
            proxy = await self.make_proxy(self.mosquitto.host, self.mosquitto.port)
            url = proxy.url
        self._proxies[client_id] = proxy
        return await self.factory(client_id, broker=url, connect=connect, **merged)

    def halt(self, client: MQTTClient) -> None:
        """From this instant nothing more passes between ``client`` and the broker, either way,
        and nothing is closed (a half-open link). Synchronous, so it can be called from a
        message listener: the acknowledgement of the message being read never arrives."""
        if self.memory is not None:
            self.memory.stall(client.client_id)
        else:
            proxy = self._proxies[client.client_id]
            proxy.blackhole()  # the current connection stays dead for good...
            proxy.restore()  # ...while the next one (the reconnection) goes through

    def inflight(self, client: MQTTClient) -> int | None:
        """QoS 1/2 deliveries to ``client`` the broker awaits an ack for; None on Mosquitto,
        which does not tell. Only to check a test's premise, never as the contract itself."""
        if self.memory is None:
            return None
        return self.memory.sessions()[client.client_id].inflight

    async def drop(self, client: MQTTClient) -> None:
        """Cut ``client``'s link abruptly, as a network failure would (no DISCONNECT)."""
        if self.memory is not None:
            await self.memory.drop_link(client.client_id)
        else:
            await self._proxies[client.client_id].drop_connections()


async def collect(client: MQTTClient, topic_filter: str, qos: int = 0) -> Inbox[Message]:
    """Subscribe ``client`` to ``topic_filter``; every message it receives lands in the inbox."""
    inbox: Inbox[Message] = Inbox()

    async def keep(message: Message) -> None:
        inbox.add(message)

    await client.subscribe(topic_filter, keep, qos=qos)
    return inbox


def connections(client: MQTTClient) -> Inbox[int]:
    """Count ``client``'s (re)connections from now on: item ``n`` is its ``n``-th connect.

    The hook runs once the subscriptions are restored and the client is usable again, so
    ``await connections(c).wait_for(1)`` after a dropped link means "reconnected and ready".
    """
    inbox: Inbox[int] = Inbox()

    async def connected() -> None:
        inbox.add(len(inbox.items) + 1)

    client.on_connect(connected)
    return inbox


async def publish_many(client: MQTTClient, topic: str, payloads: list[bytes], qos: int) -> None:
    """Publish each payload in order, each acknowledged before the next (ordered on any broker)."""
    for payload in payloads:
        await client.publish(topic, payload, qos=qos)
