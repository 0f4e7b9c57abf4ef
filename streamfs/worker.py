"""``streamfs worker``: the Faust app that turns events into online features.

The only module that imports faust. Per source it runs one agent that takes batches
of events from the stream (:class:`BatchTaker`), and per batch:

1. per partition, validates and decodes the events (:mod:`streamfs.ingest`) and folds
   the valid ones into each entity's tiles, read from the partition's RocksDB with
   one multi-get (:mod:`streamfs.engine`);
2. hands the batch to the sinks and waits for all of them: the rejects to the
   dead-letter topic (broker acks), the touched entities to Redis (idempotent, retried
   with backoff while Redis is away), the events and feature snapshots to the offline
   log;
3. stores the new state: per partition, the changelog messages go out as whole
   record batches and are acknowledged by the broker, then one RocksDB write batch
   applies them and the table's persisted changelog offset moves past them;
4. acknowledges the batch's events, and Faust commits their offsets: sinks, then
   changelog, then offsets (DESIGN §4).

The offline log is written by a child process (:mod:`streamfs.offline.process`), so
the worker does not wait for it: while the child writes batch n, the worker already
does step 1 of the batches after it, reading the state the batches before left (not
stored yet) in place of the stored one, and writes them to Redis; a second task does
steps 3 and 4 of batch n once the child has written it (:func:`run_batches`). The child
writes one batch at a time; steps 3 and 4 keep batch order.

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
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, cast

import faust
import orjson
import rocksdict
import structlog
from aiokafka import AIOKafkaProducer
from faust.sensors.monitor import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.types import TP, ConsumerMessage

from streamfs.definitions import Source
from streamfs.dlq import DeadLetterSink
from streamfs.engine import BatchResult, PartitionEngine, StateStore, ViewPlan
from streamfs.ingest import Event, Message
from streamfs.offline.log import OfflineSink
from streamfs.offline.process import OfflineProcess
from streamfs.online import OnlineWrite, OnlineWriter
from streamfs.schemas.errors import RegistryUnavailableError

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


# How many bytes a fetch waits for (at most FETCH_MAX_WAIT_MS) before the broker answers
# it. With 1 (aiokafka's default), every new record answered the fetch in flight at once:
# freshness bench, 2026-11-28 10:49-10:57, the worker took 0.38 cores at 100 events/s and
# 0.71 at 2,000/s with 1 byte, 0.15 and 0.45 with 32 KiB (0.78 against 0.81 at 5,000/s).
# The price: a quiet stream's records wait up to FETCH_MAX_WAIT_MS for company (p50 at
# 100 events/s 126 ms against 72).
FETCH_MIN_BYTES = 32 << 10


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    app_id: str
    kafka_bootstrap: str
    redis_url: str
    data_dir: Path
    batch_size: int = 10_000
    batch_within_s: float = 0.1
    retry_max_s: float = 5.0  # the longest wait between retries (Redis, the registry)
    # Most batches staged (and online) but not finished (offline log, state, offsets).
    pipeline_depth: int = 3
    offline_root: str | None = None  # the Parquet event log; None: no offline sink
    fetch_min_bytes: int = FETCH_MIN_BYTES  # what a fetch waits for (at most 100 ms)


class OfflineWriter(Protocol):
    """An offline log writer that works beside the worker's batches, such as
    :class:`~streamfs.offline.process.OfflineProcess`: :meth:`write_batch` is awaited
    only before the batch's state is stored, so the next batch is staged meanwhile.
    (An :class:`OfflineSink` writes in this process and is awaited with the other sinks.)
    """

    async def write_batch(
        self,
        source: Source,
        events: Sequence[Event],
        writes: Sequence[OnlineWrite] = (),
        views: Sequence[Any] = (),
        *,
        namespace: str = ...,
    ) -> list[str]: ...

    async def close(self) -> None:
        """Flush what is open and stop (the worker is shutting down)."""
        ...


@dataclass(slots=True)
class StagedBatch:
    """A batch through the engine, on its way through the sinks (:class:`SourceRuntime`)."""

    events: Sequence[Any]  # the stream's events, to acknowledge once the batch is finished
    result: BatchResult  # over all its partitions
    states: dict[int, dict[str, bytes]]  # per partition, the state to store last
    offline: asyncio.Task[Any] | None = None  # the offline write, while in a child process


class SourceRuntime:
    """A source's engine plus the sinks a batch goes to.

    A batch goes through four steps: :meth:`stage` (validate and fold, no writes),
    :meth:`write_sinks` (dead letters and Redis, and the offline log when it is
    written in this process), :meth:`start_offline` (hand the batch to the offline
    writer child, when there is one, without waiting) and :meth:`finish` (wait for the
    offline log, then store the state). The worker stages and writes the next batch
    to Redis before it finishes this one (:func:`run_batches`), so the child writes
    one batch's offline log while this process folds the next.
    """

    def __init__(
        self,
        engine: PartitionEngine,
        table_io: TableIO,
        dlq: Callable[[], Awaitable[DeadLetterSink]],
        online: OnlineWriter,
        options: WorkerOptions,
        offline: OfflineSink | OfflineWriter | None = None,
    ) -> None:
        self.engine = engine
        self.table_io = table_io
        self._dlq = dlq
        self.online = online
        self.offline = offline
        self.options = options
        if engine.seeds is None:  # entities without state start from a backfill's seed
            engine.seeds = self.read_seeds
        self.processed = 0

    async def process(self, events: Sequence[Any]) -> BatchResult:
        """One batch from start to end, nothing overlapped."""
        staged = await self.stage(events)
        await self.write_sinks(staged)
        self.start_offline(staged)
        await self.finish(staged)
        return staged.result

    async def stage(
        self, events: Sequence[Any], unfinished: Sequence[StagedBatch] = ()
    ) -> StagedBatch:
        """Validate ``events`` and fold them into the state, writing nothing.

        ``unfinished``: the batches whose state is not stored yet, oldest first; their
        state is read in place of the stored one, so this batch folds onto it.
        """
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        total = BatchResult()
        states: dict[int, dict[str, bytes]] = {}
        for partition, part_events in by_partition.items():
            messages = [_message(m) for e in part_events for m in records_of(e)]
            reader: StateStore = self.table_io.reader(partition)
            pending = [s for b in unfinished if (s := b.states.get(partition))]
            if pending:
                reader = _PendingReader(reader, pending)
            result = await self._process(partition, messages, reader)
            total.writes += result.writes
            total.rejects += result.rejects
            total.skipped_replays += result.skipped_replays
            total.events += result.events
            if isinstance(self.offline, OfflineSink):
                # Only an offline log written in this process values its snapshots from
                # the live tiles (the child decodes the written bytes). Kept by a batch
                # waiting for the child, they would outlive the entity cache.
                total.tiles.update(result.tiles)
            states[partition] = result.state
        return StagedBatch(events, total, states)

    async def _process(
        self, partition: int, messages: list[Message], reader: StateStore
    ) -> BatchResult:
        """The engine's batch, retried with backoff while the schema registry cannot be
        asked (a new writer schema id to fetch): the events may well be valid, and the
        engine writes nothing until it returns."""
        return await self._retried(
            lambda: self.engine.process(partition, messages, reader),
            lambda exc: isinstance(exc, RegistryUnavailableError),
            "registry_retry",
        )

    async def write_sinks(self, staged: StagedBatch) -> None:
        """Dead letters and Redis, and an offline log written in this process, at once."""
        result = staged.result
        writes: list[Awaitable[Any]] = [
            self._write_dead_letters(result),
            self._write_online(result),
        ]
        if isinstance(self.offline, OfflineSink):
            writes.append(self._write_offline(self.offline, result))
        await asyncio.gather(*writes)

    def start_offline(self, staged: StagedBatch) -> None:
        """Send the batch to an offline writer that works beside the worker (the child
        process), and leave it running: :meth:`finish` waits for it. Once a batch."""
        if (
            self.offline is not None
            and not isinstance(self.offline, OfflineSink)
            and staged.offline is None
        ):
            staged.offline = asyncio.ensure_future(
                self._write_offline_beside(self.offline, staged.result)
            )

    async def finish(self, staged: StagedBatch) -> None:
        """Wait for the offline log to hold the batch, then store its state: the sinks
        before the state."""
        await self.offline_written(staged)
        await self.store(staged)

    async def offline_written(self, staged: StagedBatch) -> None:
        """Wait for the batch's offline write in the child, if it has one; raises its
        error. A cancelled wait leaves the write running."""
        if staged.offline is not None:
            await asyncio.wait([staged.offline])
            staged.offline.result()

    async def store(self, staged: StagedBatch) -> None:
        """Store the batch's state: changelog acknowledged by the broker, then RocksDB."""
        for partition, state in staged.states.items():
            await self.table_io.store(partition, state)
        self.processed += sum(len(records_of(e)) for e in staged.events)

    async def _write_dead_letters(self, result: BatchResult) -> None:
        await (await self._dlq()).send(result.rejects)

    async def _write_offline(self, sink: OfflineSink, result: BatchResult) -> None:
        if result.events:
            # Files are named by partition and offset range: a replay replaces its file.
            # The snapshots read the batch's live tiles: the next batch waits for this.
            await asyncio.to_thread(
                sink.write_batch,
                self.engine.source,
                result.events,
                result.writes,
                self._snapshot_views(),
                namespace=self.engine.namespace,
                tiles=result.tiles,
            )

    async def _write_offline_beside(self, writer: OfflineWriter, result: BatchResult) -> None:
        # Files are named by partition and offset range: a replay replaces its file.
        await writer.write_batch(
            self.engine.source,
            result.events,
            result.writes,
            self._snapshot_views(),
            namespace=self.engine.namespace,
        )

    def _snapshot_views(self) -> list[Any]:
        return [p.snapshot for p in self.engine.views if p.snapshot is not None]

    async def _write_online(self, result: BatchResult) -> None:
        await self._redis(self.online.write, result.writes)

    async def read_seeds(self, keys: Sequence[str]) -> list[bytes | None]:
        """The engine's seed reader: backfilled tiles of entities it has no state for."""
        return await self._redis(self.online.seeds, keys)

    async def _redis(self, call: Callable[[Any], Awaitable[_T]], arg: Any) -> _T:
        """``await call(arg)``, retried with backoff while Redis is away."""
        return await self._retried(lambda: call(arg), _redis_away, "redis_write_retry")

    async def _retried(
        self,
        attempt: Callable[[], Awaitable[_T]],
        retryable: Callable[[Exception], bool],
        event: str,
    ) -> _T:
        """``await attempt()``, retried with backoff (0.1 s, doubling up to
        ``retry_max_s``) while it raises what ``retryable`` accepts, each retry logged as
        ``event``; nothing of the batch is acknowledged meanwhile."""
        delay = 0.1
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not retryable(exc):
                    raise
                log.warning(event, error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_max_s)


def _redis_away(exc: Exception) -> bool:
    """A connection failure, a timeout or any redis-py error: Redis is away for now."""
    return isinstance(exc, ConnectionError | OSError | TimeoutError) or type(
        exc
    ).__module__.startswith("redis")


class TableIO:
    """One source's state table, read and written a partition batch at a time.

    Below Faust's per-key table API (see the module doc): multi-gets from the
    partition's RocksDB; stores as changelog record batches (acknowledged by the
    broker) followed by one RocksDB write batch and the persisted changelog offset.
    """

    def __init__(self, table: Any, producer: Callable[[], Awaitable[AIOKafkaProducer]]) -> None:
        self._table = table
        self._producer = producer
        self._encode_key: Callable[[str], bytes] | None = None

    def encode_key(self) -> Callable[[str], bytes]:
        """The table's key encoding: Faust's (``Store._encode_key``: its serializer
        registry, about 1 µs a key), or ``orjson.dumps`` (0.1 µs) where that gives the
        same bytes, as it does for Faust 0.15's JSON keys (checked on keys with quotes,
        control characters and non-ASCII letters)."""
        if self._encode_key is None:
            faust_encode = self._table.data._encode_key
            probes = ("user_purchases@1:u000123", "\x00p:topic:3", 'q"uote\\', "ü:ключ 🙂")
            same = all(faust_encode(k) == orjson.dumps(k) for k in probes)
            self._encode_key = orjson.dumps if same else faust_encode
        return self._encode_key

    def reader(self, partition: int) -> _PartitionReader:
        return _PartitionReader(self._table.data, partition, self.encode_key())

    async def store(self, partition: int, state: dict[str, bytes]) -> None:
        if not state:
            return
        data = self._table.data
        encode = self.encode_key()
        items = [(encode(key), value) for key, value in state.items()]
        topic = self._table.changelog_topic.get_topic_name()
        last_offset = await send_records(await self._producer(), topic, partition, items)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        data._db_for_partition(partition).write(batch)
        data.set_persisted_offset(TP(topic, partition), last_offset)


class _PartitionReader:
    """The engine's view of one partition's state: one RocksDB multi-get per call."""

    def __init__(self, data: Any, partition: int, encode_key: Callable[[str], bytes]) -> None:
        self._data = data
        self._partition = partition
        self._encode_key = encode_key

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        encode = self._encode_key
        db = self._data._db_for_partition(self._partition)
        return list(db[[encode(key) for key in keys]])


class _PendingReader:
    """A partition's state as batches that are not stored yet leave it (oldest first):
    each key's value from the newest of them that holds it, else the store's."""

    def __init__(self, store: StateStore, pending: Sequence[Mapping[str, bytes]]) -> None:
        self._store = store
        self._pending = pending

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = self._store.get_many(keys)
        for state in self._pending:  # newer ones overwrite
            values = [state.get(key, raw) for key, raw in zip(keys, values, strict=True)]
        return values


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


def hiredis_packed_connection() -> type:
    import redis.asyncio as redis_asyncio
    from redis.connection import HiredisRespSerializer

    serializer = HiredisRespSerializer()

    class HiredisPackedConnection(redis_asyncio.Connection):
        """redis-py's asyncio connection packs commands in Python, argument by argument
        (its sync one uses hiredis): a batch's Redis write packs 5 arguments an entity,
        about 3% of the worker's CPU. hiredis packs the same bytes about 3x faster."""

        def pack_command(self, *args: Any) -> list[bytes]:
            packed: list[bytes] = serializer.pack(*args)
            return packed

    return HiredisPackedConnection


class QuietMonitor(Monitor):
    """Faust's monitor without its per-message and per-event bookkeeping: counters, a
    clock read and a stream lookup for each event (about 2.5% of the worker's thread in
    a profile), shown only by Faust's web views, which the worker does not run. Its
    commit, send and assignment figures stay."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        pass


class ChunkMessage(ConsumerMessage):
    """Records of one source partition, in offset order, that reach the agent's stream
    as one message: Faust's per-message path (an event, a queue hop, the stream's
    bookkeeping, an acknowledgement) runs once a chunk, not once a record. Of Faust's
    consumer, the chunk is its last record: that offset, tracked until acknowledged
    (so a rebalance still waits for it); :func:`acknowledge` acknowledges the others.
    """

    __slots__ = ("records",)

    def __init__(self, records: Sequence[Any]) -> None:
        last = records[-1]
        super().__init__(
            last.topic,
            last.partition,
            last.offset,
            last.timestamp,
            last.timestamp_type,
            last.headers,
            last.key,
            last.value,
            last.checksum,
            last.serialized_key_size,
            last.serialized_value_size,
            last.tp,
            generation_id=last.generation_id,
        )
        self.records = records


def records_of(event: Any) -> Sequence[Any]:
    """The Faust messages an event of the stream stands for: a chunk's records, or its
    own message."""
    message = event.message
    return message.records if isinstance(message, ChunkMessage) else (message,)


async def acknowledge(stream: Any, event: Any) -> None:
    """Acknowledge an event of the stream and every record it stands for."""
    if isinstance(event.message, ChunkMessage):
        ack = stream.app.consumer.ack
        for record in event.message.records[:-1]:  # the last one is the chunk's own offset
            ack(record)
    await stream.ack(event)


def _message(m: Any) -> Message:
    headers = tuple((k, bytes(v)) for k, v in (m.headers or ()))
    return Message(m.topic, m.partition, m.offset, m.key, m.value, headers, int(m.timestamp * 1000))


# How long the broker may hold a fetch that finds no new record. aiokafka keeps one
# fetch in flight per broker, for the partitions whose fetched records are all taken: a
# fetch sent while the source partitions still had records buffered asks only for idle
# ones (Faust's assignor topic, a quiet partition), and the broker holds it this long,
# while the source partitions' new records wait behind it.
FETCH_MAX_WAIT_MS = 100

# Records of one partition per message to the stream (ChunkMessage). A fetch during a
# backlog holds thousands a partition; the stream's buffer is sized in chunks.
CHUNK_RECORDS = 500


class WorkerConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, its fetches held at most :data:`FETCH_MAX_WAIT_MS`
    where Faust 0.15 fixes 1,500 ms: with that, a busy worker took its events in bursts
    1.5 s apart at 5,000 events/s (measured), though the broker had them all along.
    A fetch waits for its consumer's ``fetch_min_bytes`` (see :data:`FETCH_MIN_BYTES`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Both read by start(), for its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._fetch_min_bytes = cast(WorkerConsumer, self.consumer).fetch_min_bytes
        return consumer


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

    The records of the agents' topics (the sources) go to their streams in chunks per
    partition (:class:`ChunkMessage`), so Faust's per-message machinery, about a fifth
    of the worker's thread when it ran per record (py-spy), runs once a chunk. A chunk
    is delivered whole or not at all, and its partition's read offset moves past it only
    once it is.
    """

    # What a fetch waits for; build_app sets it per app (WorkerOptions.fetch_min_bytes).
    fetch_min_bytes: ClassVar[int] = FETCH_MIN_BYTES

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return WorkerConsumerThread(self, loop=self.loop, beacon=self.beacon)

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
        # An agent's topic (acknowledged; in the worker, a source) gets its records in
        # chunks per partition, up to CHUNK_RECORDS; other topics one message at a time.
        chunks: dict[TP, list[Any]] = {}
        since_yield = 0
        for tp, message in records:
            since_yield += 1
            if since_yield > 100:  # let other tasks run during a long fetch
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            chunk = chunks.get(tp)
            read = chunk[-1].offset if chunk else read_offsets[tp]
            if read is not None and offset < read:
                continue  # before the read offset: already delivered (Faust drops it too)
            acked_topic = acks_enabled_for(message.topic)
            if read and offset - read > 1 and acked_topic:
                await self._add_gap(tp, read + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            if not acked_topic:
                await callback(message)
                read_offsets[tp] = offset
            elif chunk is None:
                chunks[tp] = [message]
            else:
                chunk.append(message)
                if len(chunk) >= CHUNK_RECORDS:
                    del chunks[tp]
                    await self._deliver_chunk(tp, chunk)
        for tp, chunk in chunks.items():
            await self._deliver_chunk(tp, chunk)

    async def _deliver_chunk(self, tp: TP, chunk: Sequence[Any]) -> None:
        await self.callback(ChunkMessage(chunk))
        self._read_offset[tp] = chunk[-1].offset


def build_app(
    options: WorkerOptions,
    plans: Sequence[ViewPlan],
    make_engine: Callable[[Sequence[ViewPlan]], PartitionEngine],
    partitions_of: Callable[[str], int],
    offline_sink: OfflineSink | OfflineWriter | None = None,
) -> tuple[faust.App, list[SourceRuntime]]:
    """A Faust app with one agent and one state table per source of ``plans``.

    ``offline_sink``: where events and snapshots go, written in this process (an
    :class:`OfflineSink`) or a child (an :class:`OfflineProcess`); default: a child
    with the default roll policy at ``options.offline_root`` if that is set."""
    import redis.asyncio as redis_asyncio
    from redis.utils import HIREDIS_AVAILABLE

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
        # Records a fetch hands over at most. Unbounded (Faust's default), one getmany
        # returned all that the fetcher had buffered, and during a backlog the worker
        # held about 490,000 fetched records waiting for the stream's buffer (a count
        # of live objects, 1,000,000-event ingest bench).
        broker_max_poll_records=options.batch_size,
        producer_acks=-1,
        Monitor=QuietMonitor,
    )
    # Faust makes the consumer itself: a class of this app's own carries the option.
    consumer_class = type(
        "WorkerConsumer",
        (WorkerConsumer,),
        {"fetch_min_bytes": options.fetch_min_bytes, "__module__": __name__},
    )
    cast(Any, app.transport).Consumer = consumer_class  # a ClassVar to mypy
    # aiokafka logs every message it sends at debug level, formatting key and value:
    # several percent of the worker's time when a handler lets debug through.
    logging.getLogger("aiokafka").setLevel(logging.INFO)
    # Timeouts turn a hung Redis into an error the batch retries, not a stalled worker.
    redis_client = redis_asyncio.Redis.from_url(
        options.redis_url, socket_timeout=5, socket_connect_timeout=2
    )
    pool = redis_client.connection_pool
    if HIREDIS_AVAILABLE and pool.connection_class is redis_asyncio.Connection:  # plain TCP
        pool.connection_class = hiredis_packed_connection()
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
        offline_sink = OfflineProcess(options.offline_root)

    async def close_sinks(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The consumer has stopped: no batch is running. Merge the offline log's open
        # files, and let the changelog/dead-letter producer finish what it holds.
        if isinstance(offline_sink, OfflineSink):
            await asyncio.to_thread(offline_sink.flush)
        elif offline_sink is not None:
            await offline_sink.close()
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
            # Its records come in chunks (ChunkMessage): about two batches of them.
            maxsize=max(8, -(-options.batch_size * 2 // CHUNK_RECORDS)),
        )
        _add_agent(app, topic, runtime, options)
    return app, runtimes


class BatchTaker:
    """Batches of a Faust stream's events: about ``max_events`` records at most, each
    ``interval_s`` after the previous one started, sooner when ``max_events`` wait, and
    at once when the previous batch took longer than ``interval_s``. Records are counted
    with :func:`records_of`: a batch ends with a whole chunk, so it may hold up to
    :data:`CHUNK_RECORDS` - 1 records more.

    Faust's ``take_events(max, within)`` waits ``within`` after each batch *ended*, and
    buffers nothing while a batch is out: a worker busy half the time idles that long
    between batches while events queue, which costs freshness at every rate and
    throughput near capacity. Here a stream processor buffers events in the background
    all the time (up to ``max_events``, then it waits; :attr:`waiting` counts them).

    Nothing is acknowledged here (``take_events`` acknowledges a batch when the next is
    asked for, even one the caller raised out of): the caller acknowledges each event
    with :func:`acknowledge` once its batch is finished, so its offsets commit only then.
    """

    def __init__(self, stream: Any, max_events: int, interval_s: float) -> None:
        self.stream = stream
        self.max_events = max_events
        self.interval_s = interval_s
        self._events: list[Any] = []
        self._records = 0

    @property
    def waiting(self) -> int:
        """Records buffered for the next batch."""
        return self._records

    async def batches(self) -> AsyncGenerator[list[Any], None]:
        stream, max_events, events = self.stream, self.max_events, self._events
        loop = asyncio.get_running_loop()
        arrived, full, drained = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def add(value: Any) -> Any:
            event = stream.current_event
            if event is None:
                raise RuntimeError("a taken event has no current_event")
            events.append(event)
            self._records += len(records_of(event))
            arrived.set()
            if self._records >= max_events:
                full.set()
                drained.clear()
                await stream.wait(drained)  # a batch holds about max_events records
            return value

        acks, stream.enable_acks = stream.enable_acks, False  # the caller acknowledges
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
                next_at = loop.time() + self.interval_s
                batch = events.copy()
                events.clear()
                self._records = 0
                arrived.clear()
                full.clear()
                drained.set()
                yield batch
        finally:
            stream.enable_acks = acks
            stream._processors.remove(add)


async def run_batches(
    batches: AsyncIterator[list[Any]],
    runtime: SourceRuntime,
    ack: Callable[[Sequence[Any]], Awaitable[None]],
    depth: int = 3,
) -> None:
    """Run every batch through ``runtime``, each finished before its events are ``ack``ed.

    Two tasks share the work. This one stages each batch (on the state of the batches
    not finished yet) and writes it to Redis, then takes the next. A finisher task
    finishes the batches in order: offline log, then state, then acknowledgement, as
    DESIGN §4 asks. So a batch's values go online without waiting for the offline log
    of the batches before it; at most ``depth`` batches are staged and not finished,
    which bounds how far Redis runs ahead of the offline log and of the commits.

    With the offline log in a child process, the child writes one batch while this
    process stages the next ones. The finisher hands the child its next batch as soon
    as the child is free, and finishes each batch as soon as the child has written it:
    no batch waits on traffic that may not come (a rebalance waits for every taken
    event to be acknowledged, for one), and none is taken later for the child.
    """
    if depth < 1:
        raise ValueError(f"a pipeline depth is at least 1 batch, got {depth}")
    pending: deque[StagedBatch] = deque()  # staged and online, not finished, in order
    changed = asyncio.Event()  # a batch was staged or finished, or taking ended
    taking = True

    async def finish_in_order() -> None:
        while pending or taking:
            if not pending:
                changed.clear()
                await changed.wait()
                continue
            staged = pending[0]
            runtime.start_offline(staged)
            await runtime.offline_written(staged)
            if len(pending) > 1:
                runtime.start_offline(pending[1])  # the child is free: it goes on at once
            await runtime.store(staged)
            await ack(staged.events)
            pending.popleft()
            changed.set()

    finisher = asyncio.ensure_future(finish_in_order())
    try:
        while True:
            while len(pending) >= depth:
                changed.clear()
                await _unless_failed(changed.wait(), finisher)
            events = await _unless_failed(anext(batches, None), finisher)
            if events is None:
                break
            staged = await runtime.stage(events, list(pending))
            await runtime.write_sinks(staged)
            pending.append(staged)
            changed.set()
        taking = False
        changed.set()
        await finisher  # every batch taken is finished
    finally:
        # Raised out (or cancelled): the batches not finished are not acknowledged, their
        # offsets not committed. Let an offline write settle, so the child is not left
        # mid-request; the finisher's own waits never cancel it.
        finisher.cancel()
        settling: list[asyncio.Future[Any]] = [finisher]
        settling += [b.offline for b in pending if b.offline is not None]
        await asyncio.wait(settling)


async def _unless_failed(step: Awaitable[_T], finisher: asyncio.Future[None]) -> _T:
    """``await step``, unless ``finisher`` fails first: then ``step`` is cancelled and
    the finisher's error raised."""
    task = asyncio.ensure_future(step)
    either: list[asyncio.Future[Any]] = [task, finisher]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and finisher.done():
            finisher.result()  # raises its error
        return await task
    finally:
        task.cancel()


def _add_agent(app: faust.App, topic: Any, runtime: SourceRuntime, options: WorkerOptions) -> None:
    async def ingest(stream: Any) -> None:
        taker = BatchTaker(stream, options.batch_size, options.batch_within_s)

        async def ack(events: Sequence[Any]) -> None:
            for event in events:
                await acknowledge(stream, event)

        try:
            async with aclosing(taker.batches()) as batches:
                await run_batches(batches, runtime, ack, options.pipeline_depth)
        except Exception as exc:
            # Faust would restart the agent, which goes on with the events after the
            # failed batch: their state would cover its offsets (the engine skips
            # offsets at or below a partition's last processed one), and the replay
            # after the next restart would skip its events. The worker stops instead
            # (exit code 1) and its restart replays from the committed offsets.
            log.critical("worker_batch_failed", source=runtime.engine.source.name, error=repr(exc))
            await app.crash(exc)
            raise

    app.agent(topic, name=f"ingest-{runtime.engine.source.name}")(ingest)
