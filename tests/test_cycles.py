"""The worker's cycle collector: automatic collection off, cycles freed on its schedule."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from streamfs.cycles import CycleCollector


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _garbage_cycle() -> weakref.ref[_Node]:
    """Two objects that refer to each other and nothing else: only a cyclic collection
    frees them. Returns a weak reference to watch them by."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collector() -> Iterator[CycleCollector]:
    was_enabled = gc.isenabled()
    collector = CycleCollector(60.0, registry=CollectorRegistry())
    try:
        yield collector
    finally:
        collector.uninstall()
        if was_enabled:
            gc.enable()


def test_installed_a_cycle_outlives_any_amount_of_allocation_until_collect(
    collector: CycleCollector,
) -> None:
    gc.enable()
    collector.install()
    assert not gc.isenabled()
    cycle = _garbage_cycle()
    # Far past CPython's young threshold: the automatic collector would have run.
    churn = [[i] for i in range(200_000)]
    del churn
    assert cycle() is not None

    found = collector.collect()

    assert cycle() is None
    assert found >= 2  # the two nodes (and their attribute dicts)


def test_each_collection_is_timed_in_the_histogram() -> None:
    registry = CollectorRegistry()
    timed = CycleCollector(1.0, registry=registry)
    name = "streamfs_worker_cycle_collection_seconds"
    timed.collect()
    timed.collect()
    assert registry.get_sample_value(f"{name}_count") == 2
    total = registry.get_sample_value(f"{name}_sum")
    assert total is not None
    assert total > 0


def test_uninstall_gives_collection_back_only_if_it_was_on(collector: CycleCollector) -> None:
    gc.enable()
    collector.install()
    collector.install()  # twice: still remembers that it was on
    collector.uninstall()
    assert gc.isenabled()

    gc.disable()
    collector.install()
    collector.uninstall()
    assert not gc.isenabled()


@pytest.mark.parametrize("interval", [0.0, -5.0, float("nan")])
def test_an_interval_that_is_not_positive_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        CycleCollector(interval, registry=CollectorRegistry())
