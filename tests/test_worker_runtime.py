"""The worker's batch path with fakes for Kafka, RocksDB and the sinks: a batch spanning
partitions reaches each sink once, and an in-process offline log gets the live tiles of
every online write (so it never decodes what the engine already holds); with the offline
log written beside the batches, the next batch is staged on the unfinished one's state,
ends exactly as one batch after another would, and nothing is stored or acknowledged
before its offline write. And the worker's changes to Faust's consumer: batch
delivery, the flow held after a rebalance, and the seek back for partitions that have
no committed offset."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from faust.types import TP, ConsumerMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfs.engine import PartitionEngine
from streamfs.offline.log import OfflineSink, OfflineWriteError
from streamfs.online import OnlineWrite
from streamfs.schemas.errors import RegistryUnavailableError
from streamfs.schemas.sample import ShopEvents
from streamfs.worker import (
    CHUNK_RECORDS,
    FETCH_MAX_WAIT_MS,
    FETCH_MIN_BYTES,
    BatchTaker,
    ChunkMessage,
    SourceRuntime,
    TableIO,
    WorkerConsumer,
    WorkerOptions,
    _add_agent,
    acknowledge,
    build_app,
    hiredis_packed_connection,
    records_of,
    run_batches,
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
        self.dead: list[Any] = []

    async def write(self, writes: Sequence[OnlineWrite]) -> int:
        self.online += writes
        return len(writes)

    async def send(self, rejects: Sequence[Any]) -> None:
        self.dead += rejects


class FakeOfflineSink(OfflineSink):
    """An in-process offline log that records its batches."""

    def __init__(self) -> None:  # no files
        self.batches: list[dict[str, Any]] = []

    def write_batch(  # type: ignore[override]  # records what it is given
        self, source: Any, events: Any, writes: Any, views: Any, **options: Any
    ) -> list[str]:
        self.batches.append({"events": list(events), "writes": list(writes), **options})
        return []


def runtime_of(engine: PartitionEngine, offline: Any, table_io: Any = None) -> SourceRuntime:
    async def no_seeds(keys: Sequence[str]) -> list[bytes | None]:
        return [None] * len(keys)

    engine.seeds = no_seeds
    sinks = FakeSinks()

    async def dlq() -> FakeSinks:
        return sinks

    options = WorkerOptions("app", "kafka:9092", "redis://", data_dir=Path("unused"))
    table_io = FakeTableIO() if table_io is None else table_io
    return SourceRuntime(engine, table_io, dlq, sinks, options, offline)  # type: ignore[arg-type]


def stream_events(topic: str, url: str, records: list[dict[str, Any]]) -> list[Any]:
    """Faust's events as the runtime reads them, over partitions 0 and 1."""
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                topic=m.topic, partition=i % 2, offset=i // 2, key=m.key, value=m.value,
                headers=(), timestamp=NOW / 1000,
            )
        )
        for i, m in enumerate(messages(topic, url, records))
    ]  # fmt: skip


async def test_a_batch_over_partitions_reaches_each_sink_once_with_live_tiles() -> None:
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    offline = FakeOfflineSink()
    runtime = runtime_of(make_engine(topic, url), offline)
    table_io, sinks = cast(FakeTableIO, runtime.table_io), cast(FakeSinks, runtime.online)
    shop = ShopEvents(seed=5, entities=6, clock=lambda: NOW - 60_000)
    records = [shop.purchase() for _ in range(40)]

    result = await runtime.process(stream_events(topic, url, records))

    assert result.rejects == []
    assert len(result.events) == len(records)
    assert sorted(table_io.stores) == [0, 1]  # state stored for both partitions
    assert sinks.online
    assert len(offline.batches) == 1
    (batch,) = offline.batches
    assert len(batch["events"]) == len(records)
    # Every write's tiles are handed over, from both partitions.
    assert set(batch["tiles"]) == {w.key for w in sinks.online}


class BesideOffline:
    """An offline writer working beside the batches (as the child process does): write
    n completes only once ``gates[n]`` is set, where there is one. :func:`pipelined`
    sets it when batch n+1 is staged, so a pipeline that waited for the write before
    staging the next batch would stall (and fail the wait here)."""

    def __init__(self, log: list[str], gates: dict[int, asyncio.Event], fail: int = 0) -> None:
        self.log, self.gates, self.fail = log, gates, fail
        self.written = 0

    async def write_batch(
        self, source: Any, events: Any, writes: Any = (), views: Any = (), **options: Any
    ) -> list[str]:
        self.written += 1
        n = self.written
        if n in self.gates:
            await asyncio.wait_for(self.gates[n].wait(), 5)
        if n == self.fail:
            raise OfflineWriteError("disk full")
        self.log.append(f"offline {n} done")
        return []

    async def close(self) -> None:
        pass


class LoggingTableIO(FakeTableIO):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def store(self, partition: int, state: dict[str, bytes]) -> None:
        self.log.append("store")
        await super().store(partition, state)


async def pipelined(
    url: str, batches: list[list[Any]], fail: int = 0
) -> tuple[SourceRuntime, list[str], Exception | None]:
    """Run ``batches`` through :func:`run_batches` with an offline log beside them."""
    topic = batches[0][0].message.topic
    log: list[str] = []
    # Offline write n waits for batch n+1 to be staged, where there is one.
    staged = {n: asyncio.Event() for n in range(1, len(batches))}
    engine = make_engine(topic, url)
    runtime = runtime_of(engine, BesideOffline(log, staged, fail), LoggingTableIO(log))
    stage = runtime.stage

    async def logged_stage(events: Sequence[Any], unfinished: Any = None) -> Any:
        result = await stage(events, unfinished)
        n = batches.index(list(events)) + 1
        log.append(f"stage {n}")
        if n - 1 in staged:
            staged[n - 1].set()
        return result

    runtime.stage = logged_stage  # type: ignore[method-assign]
    sinks = cast(FakeSinks, runtime.online)
    write_online = sinks.write
    online_writes = 0

    async def logged_online(writes: Sequence[OnlineWrite]) -> int:
        nonlocal online_writes
        online_writes += 1
        log.append(f"online {online_writes}")
        return await write_online(writes)

    sinks.write = logged_online  # type: ignore[method-assign]

    async def take() -> AsyncIterator[list[Any]]:
        for batch in batches:
            yield batch

    async def ack(events: Sequence[Any]) -> None:
        log.append(f"ack {batches.index(list(events)) + 1}")

    error = None
    try:
        await run_batches(take(), runtime, ack)
    except OfflineWriteError as exc:
        error = exc
    return runtime, log, error


async def one_by_one(url: str, batches: list[list[Any]]) -> SourceRuntime:
    runtime = runtime_of(make_engine(batches[0][0].message.topic, url), None)
    for batch in batches:
        result = await runtime.process(batch)
        assert result.rejects == []
    return runtime


def stored(runtime: SourceRuntime) -> dict[int, dict[str, bytes]]:
    return {p: store.data for p, store in cast(FakeTableIO, runtime.table_io).stores.items()}


def served(runtime: SourceRuntime) -> dict[str, tuple[int, bytes]]:
    """The last online write of each key: what Redis holds."""
    return {w.key: (w.offset, w.tiles) for w in cast(FakeSinks, runtime.online).online}


async def test_the_next_batch_is_staged_beside_the_offline_write_and_ends_exact() -> None:
    # The same 6 entities in every batch: a batch folded onto anything but the unfinished
    # batch's state would lose events, and the state and Redis would differ below.
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    shop = ShopEvents(seed=7, entities=6, clock=lambda: NOW - 60_000)
    events = stream_events(topic, url, [shop.purchase() for _ in range(60)])
    batches = [events[0:20], events[20:40], events[40:60]]

    runtime, log, error = await pipelined(url, batches)

    assert error is None
    # Batch 2 is staged while offline 1 is still being written, and goes online before
    # batch 1 is finished: Redis never waits for the offline log of the batch before.
    assert log.index("stage 2") < log.index("offline 1 done")
    assert log.index("online 2") < log.index("ack 1")
    finishing = [entry for entry in log if not entry.startswith(("stage", "online"))]
    assert finishing == [
        "offline 1 done",
        "store",  # partitions 0 and 1, only after the offline log holds the batch
        "store",
        "ack 1",
        "offline 2 done",
        "store",
        "store",
        "ack 2",
        "offline 3 done",  # nothing buffered behind it: finished at once
        "store",
        "store",
        "ack 3",
    ]
    expected = await one_by_one(url, batches)
    assert len(served(expected)) == 6  # every entity folded in
    assert stored(runtime) == stored(expected)
    assert served(runtime) == served(expected)


async def test_a_batch_whose_offline_write_failed_is_neither_stored_nor_acknowledged() -> None:
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    shop = ShopEvents(seed=8, entities=6, clock=lambda: NOW - 60_000)
    events = stream_events(topic, url, [shop.purchase() for _ in range(60)])
    batches = [events[0:20], events[20:40], events[40:60]]

    runtime, log, error = await pipelined(url, batches, fail=2)

    assert isinstance(error, OfflineWriteError)
    assert [entry for entry in log if entry.startswith("ack")] == ["ack 1"]
    assert log.count("store") == 2  # batch 1's two partitions only
    assert stored(runtime) == stored(await one_by_one(url, batches[:1]))


class GatedBatches:
    """Batches handed out as a stream would, then nothing more (the stream goes quiet);
    the offline write of batch n ends when ``release(n)`` is called, failing for
    ``fail``. ``log`` records takes, offline writes done and acknowledgements."""

    def __init__(self, fail: int = 0, count: int = 4) -> None:
        topic, self.url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
        shop = ShopEvents(seed=9, entities=6, clock=lambda: NOW - 60_000)
        events = stream_events(topic, self.url, [shop.purchase() for _ in range(20 * count)])
        self.batches = [events[i : i + 20] for i in range(0, len(events), 20)]
        self.log: list[str] = []
        self.released = {n: asyncio.Event() for n in range(1, count + 1)}
        self.runtime = runtime_of(
            make_engine(topic, self.url), BesideOffline(self.log, self.released, fail)
        )
        self.quiet = asyncio.Event()  # never set: no event after the last batch

    async def take(self) -> AsyncIterator[list[Any]]:
        for n, batch in enumerate(self.batches, 1):
            self.log.append(f"take {n}")
            yield batch
        await self.quiet.wait()

    async def ack(self, events: Sequence[Any]) -> None:
        self.log.append(f"ack {self.batches.index(list(events)) + 1}")

    def release(self, n: int) -> None:
        self.released[n].set()


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0.002)


async def test_batches_go_online_up_to_depth_ahead_of_the_offline_log_and_finish_in_order() -> None:
    # The same 6 entities in every batch: batch 3 folds onto the state of batches 1 and
    # 2, neither stored yet; reading an older one's would lose events (checked below).
    run = GatedBatches()
    running = asyncio.ensure_future(run_batches(run.take(), run.runtime, run.ack, depth=3))
    await settle()
    # Offline 1 is being written: batches 2 and 3 are staged and online beside it, and
    # batch 4 is taken only once a batch is finished.
    assert run.log == ["take 1", "take 2", "take 3"]
    assert max(w.offset for w in cast(FakeSinks, run.runtime.online).online) >= 20  # batch 3
    run.release(2)  # the child writes in order: 2 is not done before 1
    await settle()
    assert run.log == ["take 1", "take 2", "take 3"]
    run.release(1)
    await settle()
    assert run.log[3:] == ["offline 1 done", "ack 1", "offline 2 done", "take 4", "ack 2"]
    run.release(3)
    run.release(4)
    await settle()
    assert run.log[8:] == ["offline 3 done", "ack 3", "offline 4 done", "ack 4"]
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    expected = await one_by_one(run.url, run.batches)
    assert stored(run.runtime) == stored(expected)
    assert served(run.runtime) == served(expected)


async def test_a_pipeline_depth_below_one_is_refused_before_any_batch_is_taken() -> None:
    run = GatedBatches(count=1)
    with pytest.raises(ValueError, match="depth is at least 1 batch, got 0"):
        await run_batches(run.take(), run.runtime, run.ack, depth=0)
    assert run.log == []


async def test_a_batch_is_finished_once_written_though_no_next_batch_comes() -> None:
    # Its offsets must not wait for traffic that may not come: a rebalance waits for
    # every taken event to be acknowledged.
    run = GatedBatches(count=1)
    running = asyncio.ensure_future(run_batches(run.take(), run.runtime, run.ack))
    await settle()
    assert run.log == ["take 1"]
    run.release(1)
    await settle()
    assert run.log == ["take 1", "offline 1 done", "ack 1"]
    assert not running.done()  # still waiting for the stream
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert stored(run.runtime) == stored(await one_by_one(run.url, run.batches))


async def test_a_failed_offline_write_stops_the_batches_while_the_stream_is_quiet() -> None:
    run = GatedBatches(fail=1, count=1)
    running = asyncio.ensure_future(run_batches(run.take(), run.runtime, run.ack))
    await settle()
    run.release(1)
    error = await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 5)
    assert [type(e) for e in error] == [OfflineWriteError]
    assert run.log == ["take 1"]  # neither written nor acknowledged
    assert not any(stored(run.runtime).values())


class FakeFetchConsumer:
    """What :meth:`WorkerConsumer._deliver` uses of Faust's consumer."""

    _deliver_chunk = WorkerConsumer._deliver_chunk

    def __init__(self, read_offsets: dict[TP, int | None], fail_at: int | None = None) -> None:
        self.delivered: list[tuple[TP, list[int]]] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self._read_offset: dict[TP, int | None] = read_offsets
        self._commit_every: int | None = None
        self._n_acked = 0
        self.fail_at = fail_at  # the delivery that is cancelled (a rebalance stops the flow)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: t != "log"))

    async def callback(self, message: Any) -> None:
        if len(self.delivered) == self.fail_at:
            raise asyncio.CancelledError
        offsets = [m.offset for m in records_of(SimpleNamespace(message=message))]
        assert isinstance(message, ChunkMessage) == (message.topic != "log")
        assert message.offset == offsets[-1]  # a chunk stands at its last record
        self.delivered.append((message.tp, offsets))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))


def record(tp: TP, offset: int) -> tuple[TP, ConsumerMessage]:
    message = ConsumerMessage(tp.topic, tp.partition, offset, 1.0, 0, None, b"k", b"v", None)
    return tp, message


A, B, LOG = TP("t", 0), TP("t", 1), TP("log", 0)


async def test_a_fetch_reaches_the_sources_streams_in_chunks_per_partition() -> None:
    # Faust's per-message rules, kept per record: offsets below a partition's read
    # offset are dropped, a jump past it is recorded as a gap (its offsets count as
    # acknowledged), and the read offset moves past what was delivered. A source
    # partition's records go as one message; another topic's (no acks) one at a time.
    fetched = [record(A, 4), record(A, 5), record(LOG, 7), record(B, 0), record(A, 9)]
    consumer = FakeFetchConsumer({A: 4, B: None, LOG: None})
    await WorkerConsumer._deliver(cast(Any, consumer), cast(Any, fetched))
    assert consumer.delivered == [(LOG, [7]), (A, [4, 5, 9]), (B, [0])]
    assert consumer.gaps == [(A, 6, 9)]
    assert consumer._read_offset == {A: 9, B: 0, LOG: 7}

    consumer = FakeFetchConsumer({A: 5})
    replayed = [record(A, 3), record(A, 5), record(A, 6)]
    await WorkerConsumer._deliver(cast(Any, consumer), cast(Any, replayed))
    assert consumer.delivered == [(A, [5, 6])]  # 3 was read already
    assert consumer.gaps == []


async def test_chunks_are_bounded_and_a_cancelled_one_leaves_the_read_offset_before_it() -> None:
    count = 2 * CHUNK_RECORDS + 3
    fetched = [record(A, offset) for offset in range(count)]
    consumer = FakeFetchConsumer({A: None})
    await WorkerConsumer._deliver(cast(Any, consumer), cast(Any, fetched))
    assert [len(offsets) for _, offsets in consumer.delivered] == [CHUNK_RECORDS, CHUNK_RECORDS, 3]
    assert [o for _, offsets in consumer.delivered for o in offsets] == list(range(count))

    # A rebalance cancels the delivery of the second chunk: the read offset stays at the
    # end of the first (Faust's seek then moves back to the committed offset).
    consumer = FakeFetchConsumer({A: None}, fail_at=1)
    with pytest.raises(asyncio.CancelledError):
        await WorkerConsumer._deliver(cast(Any, consumer), cast(Any, fetched))
    assert consumer._read_offset[A] == CHUNK_RECORDS - 1


async def test_acknowledging_a_chunk_acknowledges_each_of_its_records_once() -> None:
    acked: list[int] = []
    stream_acked: list[Any] = []
    consumer = SimpleNamespace(ack=lambda m: acked.append(m.offset))

    async def stream_ack(event: Any) -> None:
        stream_acked.append(event)

    stream = SimpleNamespace(app=SimpleNamespace(consumer=consumer), ack=stream_ack)
    chunk = ChunkMessage([m for _, m in (record(A, 10), record(A, 11), record(A, 13))])
    event = SimpleNamespace(message=chunk)
    await acknowledge(stream, event)
    # The chunk's own offset (its last record's) is acknowledged through the stream.
    assert (acked, stream_acked) == ([10, 11], [event])

    plain = SimpleNamespace(message=record(B, 3)[1])
    await acknowledge(stream, plain)
    assert (acked, stream_acked) == ([10, 11], [event, plain])
    assert [m.offset for m in records_of(plain)] == [3]


def test_the_worker_app_fetches_with_batch_delivery_and_keeps_no_per_event_stats(
    tmp_path: Path,
) -> None:
    options = WorkerOptions(
        app_id=f"test-{uuid.uuid4().hex[:8]}",
        kafka_bootstrap="127.0.0.1:9",
        redis_url="redis://127.0.0.1:9/0",
        data_dir=tmp_path,
    )
    app, _ = build_app(options, [], lambda plans: cast(Any, None), lambda topic: 1)
    assert issubclass(app.transport.Consumer, WorkerConsumer)
    # Faust's sensors see every message and event; the worker's monitor skips them.
    tp = TP("t", 0)
    message, stream = SimpleNamespace(time_in=None), SimpleNamespace(task_owner=None)
    monitor = app.monitor
    monitor.on_message_in(tp, 1, cast(Any, message))
    state = monitor.on_stream_event_in(tp, 1, cast(Any, stream), cast(Any, None))
    monitor.on_stream_event_out(tp, 1, cast(Any, stream), cast(Any, None), state)
    monitor.on_message_out(tp, 1, cast(Any, message))
    assert app.monitor.messages_received_total == 0
    assert app.monitor.events_total == 0
    assert message.time_in is None


async def test_the_worker_consumer_holds_a_fetch_a_tenth_of_a_second_not_faust_s_one_and_a_half(
    tmp_path: Path,
) -> None:
    # aiokafka has one fetch in flight per broker; one that asks only idle partitions
    # (Faust's assignor topic) is held this long while new source records wait behind
    # it: with Faust's 1,500 ms a busy worker took its events in bursts 1.5 s apart.
    options = WorkerOptions(f"fetch-{uuid.uuid4().hex[:8]}", "127.0.0.1:9", "redis://", tmp_path)
    app, _ = build_app(options, [], lambda plans: cast(Any, None), lambda topic: 1)
    consumer: Any = app.consumer
    kafka = consumer._thread._create_worker_consumer(app.transport)
    try:
        assert kafka._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
        # ... and the broker answers it once 32 KiB wait, not at the first byte.
        assert kafka._fetch_min_bytes == FETCH_MIN_BYTES == 32 << 10
    finally:
        await kafka.stop()


async def test_a_worker_s_fetches_wait_for_the_bytes_its_options_name(tmp_path: Path) -> None:
    # Two apps in one process: each consumer takes its own app's option.
    kafkas = []
    for size in (1, 4096):
        options = WorkerOptions(
            f"fetch-{uuid.uuid4().hex[:8]}",
            "127.0.0.1:9",
            "redis://",
            tmp_path / str(size),
            fetch_min_bytes=size,
        )
        app, _ = build_app(options, [], lambda plans: cast(Any, None), lambda topic: 1)
        consumer: Any = app.consumer
        kafkas.append(consumer._thread._create_worker_consumer(app.transport))
    try:
        assert [kafka._fetch_min_bytes for kafka in kafkas] == [1, 4096]
    finally:
        for kafka in kafkas:
            await kafka.stop()


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


async def test_batches_are_taken_without_idling_behind_a_slow_one_and_left_to_acknowledge() -> None:
    # Faust's own take_events waits its whole interval after every batch, with events
    # queued; the taker hands over a full buffer at once, a partial one when the interval
    # since the previous batch's start has passed, counts what it buffered meanwhile, and
    # acknowledges nothing: the caller does, once a batch is finished (run_batches).
    app = faust.App(f"take-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9")
    channel = app.channel()
    taken: list[tuple[float, list[int]]] = []
    waiting_after_slow_batch: list[int] = []
    acked: list[int] = []
    done = asyncio.Event()
    interval_s = 2.0

    async def ingest(stream: Any) -> None:
        ack = stream.ack

        async def spy(event: Any) -> bool:
            acked.append(event.value)
            return cast(bool, await ack(event))

        stream.ack = spy
        taker = BatchTaker(stream, 5, interval_s)
        async with aclosing(taker.batches()) as batches:
            async for events in batches:
                values = [e.value for e in events]
                taken.append((time.monotonic(), values))
                if values[0] == 0:
                    await asyncio.sleep(0.3)  # a slow first batch: 12 more queue
                    waiting_after_slow_batch.append(taker.waiting)
                if 14 in values:
                    done.set()

    agent = app.agent(channel)(ingest)
    async with agent.test_context() as context:
        for value in range(3):
            await context.put(value)
        await asyncio.sleep(0.1)
        for value in range(3, 15):
            await context.put(value)
        await asyncio.wait_for(done.wait(), 10)

    assert [values for _, values in taken] == [
        [0, 1, 2],
        [3, 4, 5, 6, 7],  # full: right after the slow batch, not an interval later
        [8, 9, 10, 11, 12],
        [13, 14],  # partial: the interval after the previous batch started
    ]
    assert waiting_after_slow_batch == [5]  # buffered up to a batch, the rest held back
    first_done = taken[0][0] + 0.3
    assert taken[1][0] - first_done < interval_s / 2
    assert taken[3][0] - taken[2][0] >= interval_s * 0.95
    assert acked == []


async def test_a_batch_counts_the_records_of_its_chunks_not_its_messages() -> None:
    # A source partition's records come as chunks; --batch-size counts records, and a
    # batch ends with a whole chunk (so with up to CHUNK_RECORDS - 1 records more).
    app = faust.App(f"chunks-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9")
    taken: list[tuple[float, list[int]]] = []
    waiting: list[int] = []
    first, done = asyncio.Event(), asyncio.Event()

    async def ingest(stream: Any) -> None:
        taker = BatchTaker(stream, 1_000, 60.0)
        async with aclosing(taker.batches()) as batches:
            async for events in batches:
                taken.append((time.monotonic(), [len(records_of(e)) for e in events]))
                if len(taken) == 1:
                    first.set()
                    await asyncio.sleep(0.3)  # the next chunks queue meanwhile
                    waiting.append(taker.waiting)
                else:
                    done.set()

    agent = app.agent(app.channel())(ingest)
    sizes, offsets = iter((10, 400, 400, 450, 300)), itertools.count()

    def chunk(key: Any, value: Any, **_: Any) -> ChunkMessage:
        generation = app.consumer_generation_id  # a stream skips other generations' messages
        return ChunkMessage(
            [
                ConsumerMessage(
                    "t", 0, next(offsets), 1.0, 0, None, key, value, None, generation_id=generation
                )
                for _ in range(next(sizes))
            ]
        )

    async with agent.test_context() as context:
        context.to_message = chunk
        await context.put(0)
        await asyncio.wait_for(first.wait(), 10)
        for _ in range(4):
            await context.put(0)
        await asyncio.wait_for(done.wait(), 10)

    # Full at 1,250 records (3 messages): taken at once, not the 60 s interval later;
    # the last chunk waits for the next batch (the one the agent's stop hands over).
    assert [sizes for _, sizes in taken][:2] == [[10], [400, 400, 450]]
    assert waiting == [1_250]  # records, not messages
    assert taken[1][0] - taken[0][0] < 5.0


def test_the_worker_packs_redis_commands_with_hiredis_into_the_same_bytes() -> None:
    import redis.asyncio as redis_asyncio

    args: list[Any] = [
        "EVALSHA",
        "f" * 40,
        2,
        "k1",
        "k2",
        1_790_000_000_000,
        7,
        b"\x00tiles",
        1.5,
        10**9,
    ]
    ours = hiredis_packed_connection()().pack_command(*args)
    theirs = redis_asyncio.Connection().pack_command(*args)
    assert b"".join(ours) == b"".join(theirs)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_state_keys_are_encoded_as_faust_encodes_them(key: str) -> None:
    # The worker writes the table below Faust's API; Faust's recovery must find the
    # same keys it would have written itself.
    assert KEY_TABLE_IO.encode_key()(key) == cast(Any, KEY_TABLE).data._encode_key(key)


KEY_APP = faust.App(f"keys-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9", store="memory://")
KEY_TABLE = KEY_APP.Table("keys", key_type=str, value_type=bytes, partitions=1)
KEY_TABLE_IO = TableIO(KEY_TABLE, producer=cast(Any, None))


async def test_a_batch_is_staged_again_while_the_registry_cannot_be_asked() -> None:
    topic, url = f"p{uuid.uuid4().hex[:6]}", f"mock://{uuid.uuid4().hex}"
    runtime = runtime_of(make_engine(topic, url), None)
    validate = runtime.engine.validator.validate
    attempts = 0

    async def flaky(messages: Any, watermarks: Any) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RegistryUnavailableError("connection refused", error_code=50301, status=503)
        return await validate(messages, watermarks)

    runtime.engine.validator.validate = flaky  # type: ignore[method-assign]
    shop = ShopEvents(seed=9, entities=6, clock=lambda: NOW - 60_000)
    events = stream_events(topic, url, [shop.purchase() for _ in range(10)])[::2]  # partition 0

    staged = await runtime.stage(events)

    assert attempts == 3
    assert len(staged.result.events) == len(events)
    assert staged.result.rejects == []


async def test_a_failed_batch_stops_the_worker_rather_than_the_agent_going_on() -> None:
    # Faust restarts a crashed agent, which would go on past the failed batch; the
    # worker crashes the app instead (the process exits 1 and its restart replays).
    app = faust.App(f"crash-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:9")
    crashed: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashed.append(reason)

    app.crash = crash  # type: ignore[method-assign]

    class FailingRuntime:
        engine = SimpleNamespace(source=SimpleNamespace(name="purchases"))

        async def stage(self, events: Any, unfinished: Any = None) -> Any:
            raise OfflineWriteError("disk full")

    options = WorkerOptions("app", "kafka:9092", "redis://", data_dir=Path("unused"))
    _add_agent(app, app.channel(), cast(Any, FailingRuntime()), options)
    (agent,) = app.agents.values()
    async with agent.test_context() as context:
        await context.put(b"event")
        for _ in range(100):
            if crashed:
                break
            await asyncio.sleep(0.05)

    assert [str(reason) for reason in crashed] == ["disk full"]
