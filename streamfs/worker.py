"""``streamfs worker``: the Faust app that turns events into online features.

The only module that imports faust. Per source it runs one agent that takes batches
of events from the stream (``take_events``), and per batch, partition by partition:

1. validates and decodes them (:mod:`streamfs.ingest`), folds the valid ones into each
   entity's tiles read from a RocksDB-backed Faust table (:mod:`streamfs.engine`);
2. sends the rejects to the dead-letter topic and waits for the broker's acks;
3. writes the touched entities to Redis (idempotent, retried with backoff while Redis
   is away; nothing is acknowledged until Redis accepted the batch);
4. stores the new state in the table (which queues its changelog messages).

Only then does the agent take the next batch, and only then does Faust count the
batch's events as acknowledged. Faust commits acknowledged offsets after flushing
its producer, so the order is: sinks, then table changelog, then offsets (DESIGN §4).

Faust's RocksDB tables choose the partition of a key (its local database and its
changelog partition) from the *current event*. A batch spans partitions, so while
processing partition ``p`` the worker makes an event of ``p`` current; an entity's
state then always lives in its source partition and moves with it on a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import structlog
from faust.streams import _current_event  # private: see the module doc

from streamfs.dlq import DeadLetterSink
from streamfs.engine import BatchResult, PartitionEngine, ViewPlan
from streamfs.ingest import Message
from streamfs.offline.log import OfflineSink
from streamfs.online import OnlineWriter

log = structlog.get_logger(__name__)

# RocksDB's defaults (2 GiB block cache, 3 x 64 MiB write buffers) are per partition;
# a worker owns many partitions, so each gets a few MiB.
ROCKSDB_OPTIONS = {
    "block_cache_size": 16 << 20,
    "write_buffer_size": 8 << 20,
    "max_write_buffer_number": 2,
}


CHANGELOG_LINGER_MS = 20


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    app_id: str
    kafka_bootstrap: str
    redis_url: str
    data_dir: Path
    batch_size: int = 2_000
    batch_within_s: float = 0.1
    redis_retry_max_s: float = 5.0
    offline_root: str | None = None  # the Parquet event log; None: no offline sink


class SourceRuntime:
    """A source's engine plus the sinks a batch goes to."""

    def __init__(
        self,
        engine: PartitionEngine,
        table: Any,
        dlq: Callable[[], Awaitable[DeadLetterSink]],
        online: OnlineWriter,
        options: WorkerOptions,
        offline: OfflineSink | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self._dlq = dlq
        self.online = online
        self.offline = offline
        self.options = options
        self.processed = 0

    async def process(self, events: Sequence[Any]) -> BatchResult:
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        total = BatchResult()
        states: list[tuple[Any, dict[str, bytes]]] = []
        for partition, part_events in by_partition.items():
            messages = [_message(e) for e in part_events]
            with _current(part_events[-1]):
                result = await self.engine.process(partition, messages, _TableStore(self.table))
            total.writes += result.writes
            total.rejects += result.rejects
            total.skipped_replays += result.skipped_replays
            total.events += result.events
            states.append((part_events[-1], result.state))
        # Sinks first; the state (and with it the changelog) only once they accepted.
        await (await self._dlq()).send(total.rejects)
        if self.offline is not None and total.events:
            # Files are named by partition and offset range: a replay replaces its file.
            await asyncio.to_thread(self.offline.write, self.engine.source, total.events)
        await self._write_online(total)
        for event, state in states:
            with _current(event):
                for key, value in state.items():
                    self.table[key] = value
        self.processed += len(events)
        return total

    async def _write_online(self, result: BatchResult) -> None:
        delay = 0.1
        while True:
            try:
                await self.online.write(result.writes)
                return
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


class _TableStore:
    """The engine's key-value view of a Faust table whose values are raw bytes."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> bytes | None:
        # The table's store directly: ``table.get`` goes through ``UserDict`` and looks
        # the key up in RocksDB twice (``in``, then ``[]``); only its sensors are skipped.
        value = self._table.data.get(key)
        return None if value is None else bytes(value)


@contextlib.contextmanager
def _current(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _message(event: Any) -> Message:
    m = event.message
    headers = tuple((k, bytes(v)) for k, v in (m.headers or ()))
    return Message(m.topic, m.partition, m.offset, m.key, m.value, headers, int(m.timestamp * 1000))


def build_app(
    options: WorkerOptions,
    plans: Sequence[ViewPlan],
    make_engine: Callable[[Sequence[ViewPlan]], PartitionEngine],
    partitions_of: Callable[[str], int],
) -> tuple[faust.App, list[SourceRuntime]]:
    """A Faust app with one agent and one state table per source of ``plans``."""
    import redis.asyncio as redis_asyncio
    from aiokafka import AIOKafkaProducer

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
        # A batch stores one changelog message per touched entity: let the producer
        # gather them into few large requests instead of one request per message.
        producer_linger_ms=CHANGELOG_LINGER_MS,
        producer_max_batch_size=1 << 20,
        producer_max_request_size=4 << 20,
    )
    # Faust makes the agent wait whenever more than 100 changelog messages are queued
    # (``ProducerBuffer.max_messages``), i.e. many times per batch; let a whole batch in.
    app.producer.buffer.max_messages = max(10_000, options.batch_size * 2)
    # aiokafka logs every message it sends at debug level, formatting key and value:
    # several percent of the worker's time when a handler lets debug through.
    logging.getLogger("aiokafka").setLevel(logging.INFO)
    # Timeouts turn a hung Redis into an error the batch retries, not a stalled worker.
    redis_client = redis_asyncio.Redis.from_url(
        options.redis_url, socket_timeout=5, socket_connect_timeout=2
    )
    online = OnlineWriter(redis_client, wall_clock_ms)
    dlq_sink: asyncio.Future[DeadLetterSink] | None = None

    async def dlq() -> DeadLetterSink:
        # Made and started on first use, inside Faust's event loop (aiokafka needs one).
        nonlocal dlq_sink
        if dlq_sink is None:
            dlq_sink = asyncio.get_running_loop().create_future()
            dlq_producer = AIOKafkaProducer(
                bootstrap_servers=options.kafka_bootstrap, acks="all", enable_idempotence=True
            )
            await dlq_producer.start()
            dlq_sink.set_result(DeadLetterSink(dlq_producer, wall_clock_ms))
        return await dlq_sink

    offline_sink = OfflineSink(options.offline_root) if options.offline_root else None
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
            make_engine(source_plans), table, dlq, online, options, offline_sink
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


def _add_agent(app: faust.App, topic: Any, runtime: SourceRuntime, options: WorkerOptions) -> None:
    async def ingest(stream: Any) -> None:
        async for events in stream.take_events(options.batch_size, options.batch_within_s):
            await runtime.process(events)

    app.agent(topic, name=f"ingest-{runtime.engine.source.name}")(ingest)
