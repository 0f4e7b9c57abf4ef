"""The server's Prometheus metrics, on a registry of its own (one per app, so tests can
build many apps in one process), exposed at ``/metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets for a server whose reads take well under a millisecond.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


class ServerMetrics:
    def __init__(self) -> None:
        # (route, method, status) -> its latency and request children: ``labels()`` takes a
        # lock and builds a key on every call, too much for every request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streamfs_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "streamfs_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.pushed = Counter(
            "streamfs_push_events",
            "Events accepted by POST /v1/push and produced to Kafka, by source.",
            ["source"],
            registry=self.registry,
        )
        self.push_rejected = Counter(
            "streamfs_push_rejected_batches",
            "Push batches rejected whole for bad events, by source.",
            ["source"],
            registry=self.registry,
        )
        self.registry_loaded = Gauge(
            "streamfs_registry_loaded_timestamp_ms",
            "When the server last loaded the registry (epoch ms).",
            registry=self.registry,
        )
        self.topic_end_offsets = Gauge(
            "streamfs_topic_end_offsets",
            "Sum of the end offsets of a source topic or its dead-letter topic.",
            ["topic"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request: counted, and its time in the route's latency histogram."""
        children = self._children.get((route, method, status))
        if children is None:
            children = self._children[(route, method, status)] = (
                self.latency.labels(route),
                self.requests.labels(route, method, str(status)),
            )
        children[0].observe(seconds)
        children[1].inc()
