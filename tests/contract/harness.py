"""What the contract tests stand on: one broker under test, reached the same way for all three.

A :class:`Target` hides which broker a test runs against: the in-memory broker through its
``connector`` (no socket), the same broker over TCP (``serve_tcp``) or WebSockets
(``serve_ws``), a real Mosquitto over TCP or WebSockets, or a node of a real ejabberd or
RabbitMQ cluster over WebSockets (an :class:`Upstream` each). Tests
make clients, cut their links and watch topics only through it, so a test reads the same
whatever the broker, and a difference in outcome is a difference in the broker.

Cutting one client's link is a broker fault on the in-process broker (``drop_link``, whatever
the transport) and a network fault on a real broker: each of its clients goes through a
:class:`TcpFaultProxy` of its own (a WebSocket link too: it runs over TCP), and
``drop_connections`` resets it. Either way the client sees its connection reset and the broker
sees the client vanish without DISCONNECT.

What a real broker lacks (QoS 2, shared subscriptions...) is declared in :data:`LACKS`, with
the limitation as the reason; a test marked ``needs`` is skipped there (see conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Unpack

from support.mosquitto_cli import Inbox, unique
from tars.mqtt import ClientOptions, Message, MQTTClient
from tars.mqtt.testing import InMemoryBroker, TcpFaultProxy
from tars.mqtt.testing.pytest_plugin import MQTTClientFactory, TcpProxyFactory

__all__ = [
    "LACKS",
    "Feature",
    "Kind",
    "Target",
    "Upstream",
    "collect",
    "connections",
    "publish_many",
]

Kind = Literal["memory", "tcp", "ws", "mosquitto", "mosquitto-ws", "ejabberd-ws", "rabbitmq-ws"]

# What a test may need of the broker beyond what every target offers; a test says so with
# ``@pytest.mark.needs(feature, ...)``, and the ``target`` fixture skips it where it is lacking.
Feature = Literal["qos2", "shared_subscriptions", "dollar_topics", "will_discarded_on_disconnect"]

# Each target's lacks, with the broker limitation that is the reason (the skip message). Only a
# limitation of the broker belongs here, never a test that fails on the client: each was seen
# failing on that broker for that reason alone (docs/testing.md, "The contract suite").
LACKS: dict[str, dict[Feature, str]] = {
    "ejabberd-ws": {
        # Its CONNACK says shared_subscription_available=0, so the client refuses a $share
        # filter with SubscribeError 0x9E (ejabberd itself answers SUBACK 0x9E).
        "shared_subscriptions": "ejabberd 23.01 (mod_mqtt) has no shared subscriptions",
        # MQTT 5 (4.7.2) lets a server reserve "$" topics: PUBACK 0x90, "forbidden by policy".
        "dollar_topics": "ejabberd 23.01 refuses a client's PUBLISH to a topic starting with $",
    },
    "rabbitmq-ws": {
        # Its subscriptions are granted QoS 1 at most, and it answers a QoS 2 PUBLISH with
        # PUBACK (the client finishes it as taken at QoS 1: stats.qos2_downgraded, and
        # test_rabbitmq_cluster.py): exactly once cannot be checked there.
        "qos2": "RabbitMQ 3.10's MQTT plugin has no QoS 2 (it takes QoS 2 at QoS 1)",
        "shared_subscriptions": "RabbitMQ 3.10 speaks MQTT 3.1.1: no shared subscriptions",
        # Its WebSocket handler's termination calls rabbit_mqtt_processor:send_will whatever
        # ended the link (its log shows it after the DISCONNECT); over TCP it discards the will.
        "will_discarded_on_disconnect": (
            "RabbitMQ 3.10's rabbitmq_web_mqtt publishes the will when the WebSocket closes, "
            "even after a DISCONNECT"
        ),
    },
}

# Reconnect at once (well, within 0.1 s): the suite waits for every reconnection it causes.
_FAST_RECONNECT: ClientOptions = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.2}


@dataclass(frozen=True)
class Upstream:
    """A real broker's listener, which each client reaches through a fault proxy of its own."""

    host: str
    port: int
    scheme: Literal["mqtt", "ws"] = "mqtt"
    path: str = ""  # the WebSocket path: "/mqtt" (Mosquitto, ejabberd), "/ws" (RabbitMQ)
    userinfo: str = ""  # "user:password@" where the broker wants a login

    def url(self, proxy: TcpFaultProxy) -> str:
        """The URL a client gives to reach this listener through ``proxy``."""
        return f"{self.scheme}://{self.userinfo}{proxy.host}:{proxy.port}{self.path}"


@dataclass
class Target:
    """The broker of one contract test and how its clients reach it (see the module doc)."""

    kind: Kind
    factory: MQTTClientFactory
    memory: InMemoryBroker | None = None
    upstream: Upstream | None = None
    make_proxy: TcpProxyFactory | None = None
    protocol: Literal["5", "3.1.1"] | None = None  # every client's protocol option, when set
    # The broker queues QoS 0 messages for a session while its client is away (MQTT 5, 4.1,
    # allows it; Mosquitto does not by default, ejabberd and RabbitMQ do).
    queues_qos0: bool = False
    root: str = field(default_factory=lambda: unique("contract"))
    _proxies: dict[str, TcpFaultProxy] = field(default_factory=dict)

    def lacks(self, feature: Feature) -> bool:
        """True when this target's broker lacks ``feature`` (see :data:`LACKS`)."""
        return feature in LACKS.get(self.kind, {})

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
        if self.protocol is not None:
            merged.setdefault("protocol", self.protocol)
        if self.kind == "memory":
            assert self.memory is not None
            return await self.factory(client_id, broker=self.memory, connect=connect, **merged)
        if self.memory is not None:
            url = self.memory.tcp_url if self.kind == "tcp" else self.memory.ws_url
            assert url is not None
            return await self.factory(client_id, broker=url, connect=connect, **merged)
        assert self.upstream is not None
        assert self.make_proxy is not None
        proxy = await self.make_proxy(self.upstream.host, self.upstream.port)
        self._proxies[client_id] = proxy
        url = self.upstream.url(proxy)
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
