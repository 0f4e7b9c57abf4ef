"""The worker's batch path with fakes for Kafka, RocksDB and the sinks: a batch spanning
partitions reaches each sink once, and the offline snapshots get the live tiles of every
online write (so they never decode what the engine already holds). And the worker's
changes to Faust's consumer: batch delivery, the flow held after a rebalance, and
the seek back for partitions that have no committed offset."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
from faust.types import TP

from streamfs.online import OnlineWrite
from streamfs.schemas.sample import ShopEvents
from streamfs.worker import (
    SourceRuntime,
    WorkerConsumer,
    WorkerOptions,
    build_app,
    take_batches,
)
from tests.test_engine import NOW, DictStore, make_engine, messages
from tests.worker_fixtures import purchase_plan, purchase_source


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


class FakeFetchConsumer:
    """What :meth:`WorkerConsumer._deliver` uses of Faust's consumer."""

    def __init__(self, read_offsets: dict[str, int | None]) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.gaps: list[tuple[str, int, int]] = []
        self._read_offset: dict[str, int | None] = read_offsets
        self._commit_every: int | None = None
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

    async def callback(self, message: Any) -> None:
        self.delivered.append((message.tp, message.offset))

    async def _add_gap(self, tp: str, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))


async def test_batch_delivery_hands_over_a_fetch_in_order_as_faust_would() -> None:
    # Faust's per-message rules, kept per message in one task: offsets below a
    # partition's read offset are dropped, a jump past it is recorded as a gap (its
    # offsets count as acknowledged), and each delivered offset becomes the read offset.
    def message(tp: str, offset: int) -> tuple[str, Any]:
        return tp, SimpleNamespace(tp=tp, topic="t", offset=offset)

    fetched = [message("a", 4), message("a", 5), message("b", 0), message("a", 9)]
    consumer = FakeFetchConsumer({"a": 4, "b": None})
    await WorkerConsumer._deliver(cast(Any, consumer), cast(Any, fetched))
    assert consumer.delivered == [("a", 4), ("a", 5), ("b", 0), ("a", 9)]
    assert consumer.gaps == [("a", 6, 9)]
    assert consumer._read_offset == {"a": 9, "b": 0}

    consumer = FakeFetchConsumer({"a": 5})

    replayed = [message("a", 3), message("a", 5), message("a", 6)]
    await WorkerConsumer._deliver(cast(Any, consumer), cast(Any, replayed))
    assert consumer.delivered == [("a", 5), ("a", 6)]  # 3 was read already
    assert consumer.gaps == []


def test_the_worker_app_fetches_with_batch_delivery(tmp_path: Path) -> None:
    options = WorkerOptions(
        app_id=f"test-{uuid.uuid4().hex[:8]}",
        kafka_bootstrap="127.0.0.1:9",
        redis_url="redis://127.0.0.1:9/0",
        data_dir=tmp_path,
    )
    app, _ = build_app(options, [], lambda plans: cast(Any, None), lambda topic: 1)
    assert app.transport.Consumer is WorkerConsumer


async def test_the_consumer_flow_stays_off_until_faust_has_seeked_after_a_rebalance(
    tmp_path: Path,
) -> None:
    # Faust 0.15.3 resumes the source partitions before it seeks them to their committed
    # offsets; the worker holds the flow when recovery completes, Faust resumes it after.
    source = purchase_source("purchases")
    options = WorkerOptions("flow-test", "127.0.0.1:9", "redis://127.0.0.1:9/0", tmp_path)
    app, _ = build_app(
        options,
        [purchase_plan(source)],
        lambda _plans: make_engine("purchases", "http://127.0.0.1:9"),
        partitions_of=lambda _topic: 4,
    )
    consumer: Any = app.consumer  # faust's ConsumerT leaves out the flow switches
    consumer.resume_flow()
    await app.on_rebalance_complete.send()
    assert not consumer.flow_active


async def test_source_partitions_without_a_committed_offset_are_sought_to_their_beginning() -> None:
    # Faust drops fetched records when a rebalance stops the flow and seeks back to the
    # committed offsets; a partition with none must go back to its start, or the records
    # fetched before the drop are never read again.
    class FakeThread:
        def __init__(self) -> None:
            self.to_beginning: list[TP] = []

        async def seek_to_committed(self) -> dict[TP, int | None]:
            return {source(0): 120, source(1): None, source(2): 0, changelog(1): None}

        async def seek_to_beginning(self, *partitions: TP) -> None:
            self.to_beginning.extend(partitions)

    def source(partition: int) -> TP:
        return TP("purchases", partition)

    def changelog(partition: int) -> TP:
        return TP("state-changelog", partition)

    consumer: Any = SimpleNamespace(
        _thread=FakeThread(),
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: t == "purchases")),
    )
    committed = await WorkerConsumer.seek_to_committed(consumer)
    assert committed[source(0)] == 120  # Faust's read offsets still come from these
    # Partition 0 stays at its commit; the changelog is the table recovery's to place.
    assert consumer._thread.to_beginning == [source(1), source(2)]


async def test_batches_are_taken_without_idling_behind_a_slow_one_and_acked_after_it() -> None:
    # Faust's own take_events waits its whole interval after every batch, with events
    # queued; take_batches hands over a full buffer at once, a partial one when the
    # interval since the previous batch's start has passed, and acknowledges a batch's
    # events only once the caller asks for the next (never those of a batch that raised).
    app = faust.App(f"take-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9")
    channel = app.channel()
    taken: list[tuple[float, list[int]]] = []
    acked: list[int] = []
    failed = asyncio.Event()
    interval_s = 2.0

    async def ingest(stream: Any) -> None:
        ack = stream.ack

        async def spy(event: Any) -> bool:
            acked.append(event.value)
            return cast(bool, await ack(event))

        stream.ack = spy
        try:
            async with aclosing(take_batches(stream, 5, interval_s)) as batches:
                async for events in batches:
                    values = [e.value for e in events]
                    taken.append((time.monotonic(), values))
                    if values[0] == 0:
                        await asyncio.sleep(0.3)  # a slow first batch: 12 more queue
                    if 13 in values:
                        raise RuntimeError("the sink failed")
        except RuntimeError:
            failed.set()

    agent = app.agent(channel)(ingest)
    async with agent.test_context() as context:
        for value in range(3):
            await context.put(value)
        await asyncio.sleep(0.1)
        for value in range(3, 15):
            await context.put(value)
        await asyncio.wait_for(failed.wait(), 10)

    assert [values for _, values in taken] == [
        [0, 1, 2],
        [3, 4, 5, 6, 7],  # full: right after the slow batch, not an interval later
        [8, 9, 10, 11, 12],
        [13, 14],  # partial: the interval after the previous batch started
    ]
    first_done = taken[0][0] + 0.3
    assert taken[1][0] - first_done < interval_s / 2
    assert taken[3][0] - taken[2][0] >= interval_s * 0.95
    assert acked == list(range(13))  # 13 and 14 were in the batch that raised
