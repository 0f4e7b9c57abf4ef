"""The worker's batch path with fakes for Kafka, RocksDB and the sinks: a batch spanning
partitions reaches each sink once, and the offline snapshots get the live tiles of every
online write (so they never decode what the engine already holds)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from streamfs.online import OnlineWrite
from streamfs.schemas.sample import ShopEvents
from streamfs.worker import SourceRuntime, WorkerOptions
from tests.test_engine import NOW, DictStore, make_engine, messages


class FakeTableIO:
    def __init__(self) -> None:
        self.stores: dict[int, DictStore] = {}

    def reader(self, partition: int) -> DictStore:
        return self.stores.setdefault(partition, DictStore())

    async def store(self, partition: int, state: dict[str, bytes]) -> None:
        self.reader(partition).apply(state)


class FakeSinks:
    """Redis, the dead-letter topic and the offline log, recording what they were given."""

    def __init__(self) -> None:
        self.online: list[OnlineWrite] = []
        self.offline: list[dict[str, Any]] = []
        self.dead: list[Any] = []

    async def write(self, writes: Sequence[OnlineWrite]) -> int:
        self.online += writes
        return len(writes)

    async def send(self, rejects: Sequence[Any]) -> None:
        self.dead += rejects

    def write_batch(
        self, source: Any, events: Any, writes: Any, views: Any, **options: Any
    ) -> list[str]:
        self.offline.append({"events": list(events), "writes": list(writes), **options})
        return []


async def test_a_batch_over_partitions_reaches_each_sink_once_with_live_tiles() -> None:
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    engine = make_engine(topic, url)

    async def no_seeds(keys: Sequence[str]) -> list[bytes | None]:
        return [None] * len(keys)

    engine.seeds = no_seeds
    sinks, table_io = FakeSinks(), FakeTableIO()

    async def dlq() -> FakeSinks:
        return sinks

    options = WorkerOptions("app", "kafka:9092", "redis://", data_dir=Path("unused"))
    runtime = SourceRuntime(engine, table_io, dlq, sinks, None, options, sinks)  # type: ignore[arg-type]
    shop = ShopEvents(seed=5, entities=6, clock=lambda: NOW - 60_000)
    records = [shop.purchase() for _ in range(40)]
    events = [
        SimpleNamespace(
            message=SimpleNamespace(
                topic=m.topic, partition=i % 2, offset=i // 2, key=m.key, value=m.value,
                headers=(), timestamp=NOW / 1000,
            )
        )
        for i, m in enumerate(messages(topic, url, records))
    ]  # fmt: skip

    result = await runtime.process(events)

    assert result.rejects == []
    assert len(result.events) == len(records)
    assert sorted(table_io.stores) == [0, 1]  # state stored for both partitions
    assert sinks.online
    assert len(sinks.offline) == 1
    (offline,) = sinks.offline
    assert len(offline["events"]) == len(records)
    # Every write's tiles are handed over, from both partitions.
    assert set(offline["tiles"]) == {w.key for w in sinks.online}
