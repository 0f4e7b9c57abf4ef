"""Prometheus metrics of streamfs, defined here so every metric name is in one place.

Metrics register on a :class:`~prometheus_client.CollectorRegistry` (the process-wide
default unless one is given): tests pass their own registry and read values back
with ``registry.get_sample_value``. Exposing them over HTTP is the caller's choice
(``prometheus_client.start_http_server`` or the serving app), not this module's.
"""

from __future__ import annotations

import functools

from prometheus_client import REGISTRY, CollectorRegistry, Counter


class IngestMetrics:
    """Counts of ingested events: accepted per topic, rejected per (topic, reason).

    Implements :class:`streamfs.ingest.RejectCounter`.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.rejected_total = Counter(
            "streamfs_ingest_rejected_events",
            "Events sent to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.accepted_total = Counter(
            "streamfs_ingest_accepted_events",
            "Events that passed validation, by source topic.",
            ["topic"],
            registry=registry,
        )

    def rejected(self, topic: str, reason: str, count: int) -> None:
        self.rejected_total.labels(topic=topic, reason=reason).inc(count)

    def accepted(self, topic: str, count: int) -> None:
        self.accepted_total.labels(topic=topic).inc(count)


@functools.cache
def default_ingest_metrics() -> IngestMetrics:
    """The one :class:`IngestMetrics` on the default registry (a name registers only once)."""
    return IngestMetrics()
