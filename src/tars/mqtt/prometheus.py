"""The client's counters for Prometheus: ``register(client)`` and scrape.

Needs the ``prometheus`` extra (``pip install 'tars-core[prometheus]'``), the standard
``prometheus_client`` library. Built as a custom collector: the counters are read from
:attr:`MQTTClient.stats <tars.mqtt.MQTTClient.stats>` when Prometheus scrapes, so metrics cost
nothing per message and can never disagree with ``stats``::

    from prometheus_client import start_http_server
    from tars.mqtt.prometheus import register

    register(client)            # every ClientStats counter, labelled with the client id
    start_http_server(9100)

Exposed (prefix ``tars_mqtt_``, label ``client_id``): one counter per :class:`ClientStats`
counter (``published_total``, ``received_total``, ``handled_total``, ``failed_total``,
``dropped_total``, ``deduplicated_total``, ``connects_total``, ``stale_links_total``, ...), and
the gauges ``connected`` (1 while a link is up), ``outbox_depth`` and ``inflight``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "tars.mqtt.prometheus needs the prometheus extra: pip install 'tars-core[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from .client import MQTTClient

__all__ = ["ClientCollector", "register"]

_GAUGES = {
    "outbox_depth": "Messages waiting in the outbox for a link.",
    "inflight": "QoS 1/2 publishes sent and not yet acknowledged.",
}


class ClientCollector(Collector):
    """A Prometheus collector over one client's :attr:`~tars.mqtt.MQTTClient.stats`."""

    def __init__(self, client: MQTTClient, *, prefix: str = "tars_mqtt") -> None:
        self._client = client
        self._prefix = prefix

    def collect(self) -> Iterator[Any]:
        """Called by ``prometheus_client`` at every scrape."""
        client = self._client
        stats = client.stats
        labels = [client.client_id]
        for field in dataclasses.fields(stats):
            value = getattr(stats, field.name)
            if field.name in _GAUGES:
                gauge = GaugeMetricFamily(
                    f"{self._prefix}_{field.name}", _GAUGES[field.name], labels=["client_id"]
                )
                gauge.add_metric(labels, value)
                yield gauge
                continue
            counter = CounterMetricFamily(
                f"{self._prefix}_{field.name}",
                f"MQTTClient.stats.{field.name}",
                labels=["client_id"],
            )
            counter.add_metric(labels, value)
            yield counter
        connected = GaugeMetricFamily(
            f"{self._prefix}_connected", "1 while a link to the broker is up.", labels=["client_id"]
        )
        connected.add_metric(labels, 1.0 if client.connected else 0.0)
        yield connected


def register(
    client: MQTTClient, registry: CollectorRegistry = REGISTRY, *, prefix: str = "tars_mqtt"
) -> ClientCollector:
    """Register ``client``'s counters with ``registry`` (the default one unless given)."""
    collector = ClientCollector(client, prefix=prefix)
    registry.register(collector)
    return collector
