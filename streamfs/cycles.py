"""When a worker looks for reference cycles: on a timer, not by CPython's allocation counts.

Reference counting frees the worker's per-event objects (decoded tiles, events,
batches) as soon as they are dropped; none of them form cycles. CPython's cyclic
collector still walks them. It runs a young collection when allocations minus
deallocations of tracked objects pass a threshold, and in a worker that count
misleads: every batch frees about as many old objects (an entity cache's evicted
tiles) as it makes new ones, so the count stays low while the youngest generation
grows to 100,000-150,000 objects, and each collection that finally runs takes
about 300 ms. On the 1,000,000-event ingest bench (100,000 entities, 2026-11-28) the
collector took 30 s of a 217 s run; with it on this timer instead, alternating runs
of the same build went from 4,845-4,963 to 5,469-5,678 events/s.

:class:`CycleCollector` turns the automatic collector off and runs one full
collection every ``interval_s`` seconds instead. The garbage that only the
collector frees (cycles from libraries: exceptions with their tracebacks, closed
clients) waits at most that long: about 1,000 objects every 30 s on that bench. A
full collection of its worker paused the event loop for 1.0-1.25 s; each one is
logged (``cycles_collected``) and timed in ``streamfs_worker_cycle_collection_seconds``.
"""

from __future__ import annotations

import gc
import time
from typing import Final

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S: Final = 300.0


class CycleCollector:
    """Full cyclic collections on a schedule, with the automatic collector off.

    :meth:`install` turns the automatic collector off and :meth:`uninstall` turns it
    back on. The caller calls :meth:`collect` every :attr:`interval_s` seconds (the
    worker uses a Faust timer, so collections run on its event loop, between batch
    steps; its offline writer child collects between requests, once one is due).
    """

    def __init__(self, interval_s: float, registry: CollectorRegistry = REGISTRY) -> None:
        if not interval_s > 0:
            raise ValueError(f"a cycle collection interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.pause_seconds = Histogram(
            "streamfs_worker_cycle_collection_seconds",
            "How long each of the worker's scheduled full cyclic collections took.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self._was_enabled: bool | None = None

    def install(self) -> None:
        """Turn CPython's automatic collector off (collections are this object's now)."""
        if self._was_enabled is None:
            self._was_enabled = gc.isenabled()
        gc.disable()

    def uninstall(self) -> None:
        """Give collections back to CPython (if they were its before :meth:`install`)."""
        if self._was_enabled:
            gc.enable()
        self._was_enabled = None

    def collect(self) -> int:
        """One full collection, timed and logged; returns the unreachable objects found."""
        start = time.perf_counter()
        found = gc.collect()
        seconds = time.perf_counter() - start
        self.pause_seconds.observe(seconds)
        log.info("cycles_collected", unreachable=found, seconds=round(seconds, 3))
        return found
