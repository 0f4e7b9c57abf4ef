"""Worker processes on real Kafka, Redis and the schema registry: exact online values,
after SIGKILL and restart, and with two workers splitting the partitions."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from tests.conftest import Services
from tests.e2e.harness import (
    PARTITIONS,
    assigned_partitions,
    check_exact,
    make_events,
    produce_events,
    stream,
    wait_exact,
)
from tests.services.kafka_helpers import create_topic, group_caught_up, wait_until

__all__ = ["stream"]  # the fixture


async def test_worker_is_exact_after_sigkill_mid_stream_and_restart(
    services: Services, stream: dict[str, Any]
) -> None:
    topic, app_id = stream["topic"], stream["app_id"]
    await create_topic(services.kafka_bootstrap, topic, PARTITIONS)
    events = make_events(6_000, users=300, seed=11)
    await produce_events(
        services.kafka_bootstrap, services.schema_registry_url, topic, events[:3_000]
    )

    worker = stream["worker"]("w1")
    worker.start()

    async def caught_up() -> bool:
        worker.assert_alive()
        return await group_caught_up(services.kafka_bootstrap, app_id, topic)

    await wait_until(caught_up, 120, "first half processed")
    check_exact(services, app_id, topic, events[:3_000])

    # The second half streams in; the worker is killed in the middle of it and restarted.
    second = events[3_000:]
    for chunk in range(10):
        part = second[chunk * 300 : (chunk + 1) * 300]
        await produce_events(services.kafka_bootstrap, services.schema_registry_url, topic, part)
        if chunk == 4:
            worker.kill(signal.SIGKILL)
            worker.start()
        await asyncio.sleep(0.2)
    await wait_until(caught_up, 120, "everything processed after the restart")
    check_exact(services, app_id, topic, events)


async def test_two_workers_split_the_partitions_and_are_exact(
    services: Services, stream: dict[str, Any]
) -> None:
    topic, app_id = stream["topic"], stream["app_id"]
    await create_topic(services.kafka_bootstrap, topic, PARTITIONS)
    events = make_events(4_000, users=200, seed=5)
    first, second = stream["worker"]("a"), stream["worker"]("b")
    first.start()
    second.start()

    def split() -> bool:
        first.assert_alive()
        second.assert_alive()
        a, b = assigned_partitions(first.log, topic), assigned_partitions(second.log, topic)
        return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

    await wait_until(split, 90, "the two workers to split the partitions")
    await produce_events(services.kafka_bootstrap, services.schema_registry_url, topic, events)

    # Offsets are not the measure here: Faust drops acknowledgements that were pending
    # when a rebalance revoked a partition, so a worker that gets the same partitions
    # back commits them only with its next events. The values are what must be exact.
    await wait_exact(
        services, app_id, topic, events, [first, second], 120, "both workers' values exact"
    )
    # Both still own their share: the events (produced after the split) were processed
    # by the two of them, and nobody left the group while working.
    assert split()


async def test_state_moves_to_a_worker_with_an_empty_disk_through_the_changelog(
    services: Services, stream: dict[str, Any]
) -> None:
    """The worker writes its state table below Faust's per-key API (record batches to the
    changelog, then a RocksDB write batch): a worker on another disk must rebuild it."""
    topic, app_id = stream["topic"], stream["app_id"]
    await create_topic(services.kafka_bootstrap, topic, PARTITIONS)
    events = make_events(4_000, users=150, seed=23)
    await produce_events(
        services.kafka_bootstrap, services.schema_registry_url, topic, events[:2_000]
    )
    first = stream["worker"]("first-disk")
    first.start()

    async def caught_up(worker: Any) -> bool:
        worker.assert_alive()
        return await group_caught_up(services.kafka_bootstrap, app_id, topic)

    await wait_until(lambda: caught_up(first), 120, "first half processed")
    check_exact(services, app_id, topic, events[:2_000])
    first.kill(signal.SIGKILL)

    # Every entity of the second half already has state from the first: without the
    # changelog the new worker would start them from nothing and undercount.
    second = stream["worker"]("second-disk")
    second.start()
    await produce_events(
        services.kafka_bootstrap, services.schema_registry_url, topic, events[2_000:]
    )

    await wait_exact(
        services,
        app_id,
        topic,
        events,
        [second],
        150,
        "values exact over both halves on the new disk",
    )
    # Every event was handed to the agent once and acknowledged: the offsets reach the
    # end (an event skipped after the recovery's seek would hold its partition back).
    await wait_until(lambda: caught_up(second), 60, "second half committed")
