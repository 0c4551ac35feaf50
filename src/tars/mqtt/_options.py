"""Typed keyword options of :class:`~tars.mqtt.MQTTClient` (every config field but the two
positional ones), so ``MQTTClient(url, client_id, keepalive=30)`` is checked by type checkers and
completed by editors without repeating the defaults, which live in
:class:`~tars.mqtt.MQTTClientConfig` only. A test keeps both in step."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypedDict

__all__ = ["ClientOptions"]


class ClientOptions(TypedDict, total=False):
    """See :class:`~tars.mqtt.MQTTClientConfig` for each option's meaning and default."""

    source_name: str | None
    broker_order: Literal["in_order", "shuffle"]
    instance: str | None
    keepalive: int
    enable_health: bool
    enable_heartbeat: bool
    heartbeat_interval: float
    dedupe_ttl: float
    dedupe_max_entries: int
    reconnect_min_delay: float
    reconnect_max_delay: float
    connect_timeout: float
    protocol: Literal["5", "3.1.1", "auto"]
    wait_for_broker: bool
    clean_start: bool
    session_expiry_interval: int
    max_payload_size: int
    receive_maximum: int
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_insecure: bool
    ws_headers: dict[str, str] | None
    queue_size: int
    overflow: Literal["block", "drop_oldest", "drop_newest"]
    handler_concurrency: int
    handler_timeout: float | None
    watchdog_missed_heartbeats: int
    publish_timeout: float
    outbox_max_messages: int
    outbox_max_bytes: int
    outbox_message_ttl: float | None
    outbox_policy: Literal["drop_oldest", "drop_newest", "block", "raise"]
    queue_qos0_offline: bool
    acknowledge: Literal["after_handling", "on_arrival"]
    outbox_path: Path | None
    correlation_format: Literal["native", "original"]
