"""How :class:`~tars.mqtt.MQTTClient` builds its parts from its configuration (once)."""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ._config import MQTTClientConfig
from ._core.incoming import Incoming
from ._core.liveness import Liveness
from ._core.session import Session
from ._health import encode_health, encode_heartbeat, health_topic, keepalive_topic
from ._message import Message
from ._tls import make_ssl_context

if TYPE_CHECKING:
    from ._core.outgoing import Journal

__all__ = ["ignore", "make_session", "tls_factory"]

_PACKET_OVERHEAD: Final = 128 * 1024
_MQTT_MAX_PACKET: Final = 268_435_455 + 5


def make_session(cfg: MQTTClientConfig) -> Session:
    """The client's one session, for its whole life (every link, every connect())."""
    client_id = cfg.effective_client_id
    heartbeat = None
    if cfg.enable_heartbeat:
        heartbeat = (keepalive_topic(client_id), lambda: encode_heartbeat(time.time()))
    announce = None
    if cfg.enable_health:

        def announce(first: bool) -> tuple[str, bytes]:
            event = "ready" if first else "reconnected"
            _, payload = encode_health(True, event, None, source=cfg.source, timestamp=time.time())
            return health_topic(client_id), payload

    journal: Callable[[], Journal] | None = None
    path = cfg.outbox_file
    if path is not None:
        from ._core.journal import DurableJournal  # sqlite3 is loaded only by those who use it

        def journal() -> Journal:
            return DurableJournal(path)

    return Session(
        client_id,
        keep_alive=cfg.keepalive,
        clean_start=cfg.clean_start,
        session_expiry_interval=cfg.session_expiry_interval,
        receive_maximum=cfg.receive_maximum,
        # The broker must not send us more (MQTT 5 Maximum Packet Size): room for the largest
        # accepted payload plus the longest topic and generous properties.
        max_packet_size=min(cfg.max_payload_size + _PACKET_OVERHEAD, _MQTT_MAX_PACKET),
        outbox_max_messages=cfg.outbox_max_messages,
        outbox_max_bytes=cfg.outbox_max_bytes,
        outbox_ttl=cfg.outbox_message_ttl,
        outbox_policy=cfg.outbox_policy,
        queue_qos0_offline=cfg.queue_qos0_offline,
        liveness=Liveness(
            heartbeat_interval=cfg.heartbeat_interval if cfg.enable_heartbeat else None,
            missed=cfg.watchdog_missed_heartbeats,
            publish_timeout=cfg.publish_timeout,
        ),
        heartbeat=heartbeat,
        announce=announce,
        ack_after_handling=cfg.acknowledge == "after_handling",
        journal=journal,
        incoming=Incoming(unrouted_timeout=cfg.unrouted_timeout),
    )


def tls_factory(
    cfg: MQTTClientConfig, given: ssl.SSLContext | None
) -> Callable[[], ssl.SSLContext]:
    """The TLS context of ``mqtts://`` links: the one given, or one built from the config on
    first use (and kept)."""
    if given is not None:
        return lambda: given
    return functools.cache(lambda: make_ssl_context(cfg))


def ignore(msg: Message) -> None:
    """The internal consumer of our own heartbeat (the session's liveness already saw it)."""
