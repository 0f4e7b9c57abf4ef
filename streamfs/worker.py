"""``streamfs worker``: the Faust app that turns events into online features.

The only module that imports faust. Per source it runs one agent that takes batches
of events from the stream (:func:`take_batches`), and per batch:

1. per partition, validates and decodes the events (:mod:`streamfs.ingest`) and folds
   the valid ones into each entity's tiles, read from the partition's RocksDB with
   one multi-get (:mod:`streamfs.engine`);
2. hands the batch to the sinks at once and waits for all of them: the rejects to
   the dead-letter topic (broker acks), the events to the offline log, the touched
   entities to Redis (idempotent, retried with backoff while Redis is away);
3. stores the new state: per partition, the changelog messages go out as whole
   record batches and are acknowledged by the broker, then one RocksDB write batch
   applies them and the table's persisted changelog offset moves past them.

Only then does the agent take the next batch, and only then does Faust count the
batch's events as acknowledged and commit their offsets: sinks, then changelog,
then offsets (DESIGN §4).

The state table is a Faust table (RocksDB, changelog topic, recovery on
assignment), but the hot path reads and writes it below Faust's per-key API
(``table[key] = value`` costs a JSON key, a RocksDB put, a changelog
``FutureMessage`` and an ack callback per entity): it uses the store's per-partition
database (``_db_for_partition``) and key encoding (``_encode_key``), which are
private to faust-streaming 0.15, pinned in ``pyproject.toml``. What it writes is
exactly what Faust writes (same keys, same changelog topic and partition), so
Faust's recovery rebuilds it. An entity's state lives in its source partition's
database and changelog partition and moves with it on a rebalance; Faust revokes
partitions only after every taken event is acknowledged, so never mid-batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import faust
import rocksdict
import structlog
from aiokafka import AIOKafkaProducer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.types import TP

from streamfs.dlq import DeadLetterSink
from streamfs.engine import BatchResult, PartitionEngine, ViewPlan
from streamfs.ingest import Message
from streamfs.offline.log import OfflineSink
from streamfs.online import OnlineWriter

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

# RocksDB's defaults (2 GiB block cache, 3 x 64 MiB write buffers) are per partition;
# a worker owns many partitions, so each gets a few MiB.
ROCKSDB_OPTIONS = {
    "block_cache_size": 16 << 20,
    "write_buffer_size": 8 << 20,
    "max_write_buffer_number": 2,
}


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    app_id: str
    kafka_bootstrap: str
    redis_url: str
    data_dir: Path
    batch_size: int = 10_000
    batch_within_s: float = 0.1
    redis_retry_max_s: float = 5.0
    offline_root: str | None = None  # the Parquet event log; None: no offline sink


class SourceRuntime:
    """A source's engine plus the sinks a batch goes to."""

    def __init__(
        self,
        engine: PartitionEngine,
        table_io: TableIO,
        dlq: Callable[[], Awaitable[DeadLetterSink]],
        online: OnlineWriter,
        redis: Any,
        options: WorkerOptions,
        offline: OfflineSink | None = None,
    ) -> None:
        self.engine = engine
        self.table_io = table_io
        self._dlq = dlq
        self.online = online
        self.redis = redis  # redis.asyncio.Redis, the one ``online`` writes with
        self.offline = offline
        self.options = options
        if engine.seeds is None:  # entities without state start from a backfill's seed
            engine.seeds = self.read_seeds
        self.processed = 0

    async def process(self, events: Sequence[Any]) -> BatchResult:
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        total = BatchResult()
        states: list[tuple[int, dict[str, bytes]]] = []
        for partition, part_events in by_partition.items():
            messages = [_message(e) for e in part_events]
            result = await self.engine.process(partition, messages, self.table_io.reader(partition))
            total.writes += result.writes
            total.rejects += result.rejects
            total.skipped_replays += result.skipped_replays
            total.events += result.events
            total.tiles.update(result.tiles)
            states.append((partition, result.state))
        # Sinks first, all at once; the state (with its changelog) only once they accepted.
        await asyncio.gather(
            self._write_dead_letters(total),
            self._write_offline(total),
            self._write_online(total),
        )
        for partition, state in states:
            await self.table_io.store(partition, state)
        self.processed += len(events)
        return total

    async def _write_dead_letters(self, result: BatchResult) -> None:
        await (await self._dlq()).send(result.rejects)

    async def _write_offline(self, result: BatchResult) -> None:
        if self.offline is not None and result.events:
            # Files are named by partition and offset range: a replay replaces its file.
            # The snapshots read the batch's live tiles: the next batch waits for this.
            snapshots = [p.snapshot for p in self.engine.views if p.snapshot is not None]
            await asyncio.to_thread(
                self.offline.write_batch,
                self.engine.source,
                result.events,
                result.writes,
                snapshots,
                namespace=self.engine.namespace,
                tiles=result.tiles,
            )

    async def _write_online(self, result: BatchResult) -> None:
        await self._redis(self.online.write, result.writes)

    async def read_seeds(self, keys: Sequence[str]) -> list[bytes | None]:
        """The engine's seed reader: backfilled tiles of entities it has no state for."""
        return await self._redis(self._read_seeds, keys)

    async def _read_seeds(self, keys: Sequence[str]) -> list[bytes | None]:
        # Seeds are hashes of the online layout whose offset is negative (see
        # streamfs.offline.backfill.seed_offset). One pipelined round trip.
        if not keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "o", "t")
        return [
            tiles if offset is not None and int(offset) < 0 else None
            for offset, tiles in await pipe.execute()
        ]

    async def _redis(self, call: Callable[[Any], Awaitable[_T]], arg: Any) -> _T:
        """``await call(arg)``, retried with backoff while Redis is away (nothing of the
        batch is acknowledged meanwhile)."""
        delay = 0.1
        while True:
            try:
                return await call(arg)
            except (ConnectionError, OSError, TimeoutError) as exc:
                self._log_redis_retry(exc, delay)
            except Exception as exc:
                if type(exc).__module__.startswith("redis"):
                    self._log_redis_retry(exc, delay)
                else:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.redis_retry_max_s)

    def _log_redis_retry(self, exc: BaseException, delay: float) -> None:
        log.warning("redis_write_retry", error=repr(exc), retry_in_s=delay)


class TableIO:
    """One source's state table, read and written a partition batch at a time.

    Below Faust's per-key table API (see the module doc): multi-gets from the
    partition's RocksDB; stores as changelog record batches (acknowledged by the
    broker) followed by one RocksDB write batch and the persisted changelog offset.
    """

    def __init__(self, table: Any, producer: Callable[[], Awaitable[AIOKafkaProducer]]) -> None:
        self._table = table
        self._producer = producer

    def reader(self, partition: int) -> _PartitionReader:
        return _PartitionReader(self._table.data, partition)

    async def store(self, partition: int, state: dict[str, bytes]) -> None:
        if not state:
            return
        data = self._table.data
        items = [(data._encode_key(key), value) for key, value in state.items()]
        topic = self._table.changelog_topic.get_topic_name()
        last_offset = await send_records(await self._producer(), topic, partition, items)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        data._db_for_partition(partition).write(batch)
        data.set_persisted_offset(TP(topic, partition), last_offset)


class _PartitionReader:
    """The engine's view of one partition's state: one RocksDB multi-get per call."""

    def __init__(self, data: Any, partition: int) -> None:
        self._data = data
        self._partition = partition

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        encode = self._data._encode_key
        db = self._data._db_for_partition(self._partition)
        return list(db[[encode(key) for key in keys]])


async def send_records(
    producer: AIOKafkaProducer, topic: str, partition: int, items: Sequence[tuple[bytes, bytes]]
) -> int:
    """Produce ``items`` (key, value) to one partition as whole record batches, wait for the
    broker's acks, and return the offset of the last one."""
    futures = []
    batch = producer.create_batch()
    for key, value in items:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a {len(value)}-byte state for {topic} exceeds a record batch")
    last_count: int = batch.record_count()
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    sent = await asyncio.gather(*futures)
    base: int = sent[-1].offset
    return base + last_count - 1


def _message(event: Any) -> Message:
    m = event.message
    headers = tuple((k, bytes(v)) for k, v in (m.headers or ()))
    return Message(m.topic, m.partition, m.offset, m.key, m.value, headers, int(m.timestamp * 1000))


class WorkerConsumer(FaustKafkaConsumer):
    """Faust's aiokafka consumer with two changes: it hands each fetched batch to the
    streams in one task, and it never loses the records a rebalance drops.

    Faust's fetcher (``Consumer._drain_messages``, faust-streaming 0.15) delivers each
    message as ``wait_first(callback(message), suspend_flow.wait())``: four new tasks
    and an ``asyncio.wait`` per message, about a tenth of the worker's CPU. This loop
    fetches as Faust's does (``getmany``, never cancelled: records it took from the
    client must reach the loop), then delivers the whole fetch under one ``wait_first``:
    a rebalance that suspends the flow cancels the delivery where it is, and the rest
    of that fetch is dropped, as Faust's loop drops it (and :meth:`seek_to_committed`
    moves back to it). Read offsets, gaps and ``commit_every`` are kept per message as
    Faust keeps them.
    """

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may return at once, again and again
                if not self.should_stop:
                    records = [record async for record in fetched]
                    if records:
                        await self.wait_first(self._deliver(records), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every partition to its committed offset, and the source partitions that
        have none to their beginning.

        Faust drops records it fetched when a rebalance stops the flow, trusting this
        seek to move back to them. aiokafka's seek leaves a partition without a committed
        offset (or at 0) where its fetch position is: the dropped records were never
        re-read, and the offsets acknowledged after them covered them as a gap. A fresh
        consumer group whose first events arrive during its first rebalances lost them so.
        The beginning is where ``auto_offset_reset="earliest"`` starts such a partition.
        """
        committed = await self._thread.seek_to_committed()  # what Faust's own does
        acks_enabled_for = self.app.topics.acks_enabled_for  # the agents' topics, no changelog
        unread = [
            tp for tp, offset in committed.items() if not offset and acks_enabled_for(tp.topic)
        ]
        if unread:
            await self._thread.seek_to_beginning(*unread)
        return committed

    async def _deliver(self, records: Sequence[tuple[TP, Any]]) -> None:
        callback = self.callback
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        for tp, message in records:
            since_yield += 1
            if since_yield > 100:  # let other tasks run during a long fetch
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            read = read_offsets[tp]
            if read is not None and offset < read:
                continue  # before the read offset: already delivered (Faust drops it too)
            if read and offset - read > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, read + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await callback(message)
            read_offsets[tp] = offset


def build_app(
    options: WorkerOptions,
    plans: Sequence[ViewPlan],
    make_engine: Callable[[Sequence[ViewPlan]], PartitionEngine],
    partitions_of: Callable[[str], int],
    offline_sink: OfflineSink | None = None,
) -> tuple[faust.App, list[SourceRuntime]]:
    """A Faust app with one agent and one state table per source of ``plans``.

    ``offline_sink``: where events and snapshots go; default: a sink with the default
    roll policy at ``options.offline_root`` if that is set."""
    import redis.asyncio as redis_asyncio

    from streamfs.names import state_table

    app = faust.App(
        options.app_id,
        broker=f"kafka://{options.kafka_bootstrap}",
        store="rocksdb://",
        datadir=str(options.data_dir),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        stream_buffer_maxsize=max(4_096, options.batch_size * 2),
        producer_acks=-1,
    )
    cast(Any, app.transport).Consumer = WorkerConsumer  # a ClassVar to mypy
    # aiokafka logs every message it sends at debug level, formatting key and value:
    # several percent of the worker's time when a handler lets debug through.
    logging.getLogger("aiokafka").setLevel(logging.INFO)
    # Timeouts turn a hung Redis into an error the batch retries, not a stalled worker.
    redis_client = redis_asyncio.Redis.from_url(
        options.redis_url, socket_timeout=5, socket_connect_timeout=2
    )
    online = OnlineWriter(redis_client, wall_clock_ms)
    started: asyncio.Future[AIOKafkaProducer] | None = None

    async def producer() -> AIOKafkaProducer:
        # The changelog's and the dead-letter topic's: made and started on first use,
        # inside Faust's event loop (aiokafka needs one). Record batches up to 1 MiB.
        nonlocal started
        if started is None:
            started = asyncio.get_running_loop().create_future()
            kafka = AIOKafkaProducer(
                bootstrap_servers=options.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                max_batch_size=1 << 20,
                max_request_size=4 << 20,
            )
            await kafka.start()
            started.set_result(kafka)
        return await started

    dlq_sink: DeadLetterSink | None = None

    async def dlq() -> DeadLetterSink:
        nonlocal dlq_sink
        if dlq_sink is None:
            dlq_sink = DeadLetterSink(await producer(), wall_clock_ms)
        return dlq_sink

    if offline_sink is None and options.offline_root:
        offline_sink = OfflineSink(options.offline_root, background_merges=True)

    async def close_sinks(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The consumer has stopped: no batch is running. Merge the offline log's open
        # files, and let the changelog/dead-letter producer finish what it holds.
        if offline_sink is not None:
            await asyncio.to_thread(offline_sink.flush)
        if started is not None and started.done():
            await started.result().stop()

    app.on_before_shutdown.connect(cast(Any, close_sinks))  # mode types a union mypy cannot match

    async def hold_flow_until_seek(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent when a rebalance's table recovery is done. Faust 0.15.3 then resumes the
        # source partitions *before* it seeks them to their committed offsets, while the
        # flow it turned on to read the changelogs is still on: the fetcher hands the
        # agent events from positions that the seek then moves back, and the overlap
        # reaches the agent twice (the engine counts an offset once) or not at all
        # (never acknowledged either: the partition's commits stall there).
        # Stopping the flow here holds the fetcher; Faust resumes it after the seek.
        app.consumer.stop_flow()

    app.on_rebalance_complete.connect(cast(Any, hold_flow_until_seek))

    by_source: dict[str, list[ViewPlan]] = {}
    for plan in plans:
        by_source.setdefault(plan.source.name, []).append(plan)
    runtimes = []
    for source_plans in by_source.values():
        source = source_plans[0].source
        table = app.Table(
            state_table(source.name),
            partitions=partitions_of(source.topic),
            key_type=str,  # stored as JSON text
            value_type=bytes,  # Faust stores bytes values raw
            options=dict(ROCKSDB_OPTIONS),
        )
        runtime = SourceRuntime(
            make_engine(source_plans),
            TableIO(table, producer),
            dlq,
            online,
            redis_client,
            options,
            offline_sink,
        )
        runtimes.append(runtime)
        topic = app.topic(
            source.topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        _add_agent(app, topic, runtime, options)
    return app, runtimes


async def take_batches(
    stream: Any, max_events: int, interval_s: float
) -> AsyncGenerator[list[Any], None]:
    """Batches of the stream's events: at most ``max_events``, each ``interval_s`` after
    the previous one started, sooner when ``max_events`` wait, and at once when the
    previous batch took longer than ``interval_s``.

    Faust's ``take_events(max, within)`` waits ``within`` after each batch *ended*, and
    buffers nothing while a batch is out: a worker busy half the time idles that long
    between batches while events queue, which costs freshness at every rate and
    throughput near capacity. Here a stream processor buffers events in the background
    all the time (up to ``max_events``, then it waits), and a batch's events are
    acknowledged once the caller asks for the next batch: its offsets commit only then,
    and never when the caller raised out of it (``take_events`` acknowledges those too).
    """
    loop = asyncio.get_running_loop()
    events: list[Any] = []
    arrived, full, drained = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def add(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("a taken event has no current_event")
        events.append(event)
        arrived.set()
        if len(events) >= max_events:
            full.set()
            drained.clear()
            await stream.wait(drained)  # a batch holds at most max_events
        return value

    acks, stream.enable_acks = stream.enable_acks, False  # acknowledged here
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        next_at = loop.time()
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived)
            remaining = next_at - loop.time()
            if remaining > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=remaining)
            if not events:
                continue
            next_at = loop.time() + interval_s
            batch = events.copy()
            events.clear()
            arrived.clear()
            full.clear()
            drained.set()
            yield batch
            for event in batch:
                await stream.ack(event)
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)


def _add_agent(app: faust.App, topic: Any, runtime: SourceRuntime, options: WorkerOptions) -> None:
    async def ingest(stream: Any) -> None:
        async for events in take_batches(stream, options.batch_size, options.batch_within_s):
            await runtime.process(events)

    app.agent(topic, name=f"ingest-{runtime.engine.source.name}")(ingest)
