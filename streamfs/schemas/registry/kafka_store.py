"""The registry's durable store: a compacted, single-partition Kafka topic (``_schemas``).

Reading. Each instance reads the topic from the beginning with
``isolation_level=read_committed`` and folds every record into its
:class:`RegistryState`; :meth:`KafkaStore.start` returns once it has read to the end,
so ids survive restarts, and instances reading the same topic hold the same state.
A background task keeps reading; :meth:`KafkaStore.sync` waits until the state has
caught up with the topic's end as it is now (the server calls it before answering
"not found", so a schema registered through another instance is found at once).

Writing: one writer at a time, by Kafka transactional fencing. Every instance
writes through a transactional producer with the same fixed ``transactional.id``
(``names.transactional_id(topic)``). Starting such a producer (InitProducerId) bumps
the id's epoch, which (a) fences every older producer with that id, so their
later ``AddPartitionsToTxn``/``Produce``/``EndTxn`` fail with ``ProducerFenced``, and
(b) completes or aborts the previous holder's transaction before it returns. A
write, under a local lock, then:

1. makes sure this instance has a producer (starting one fences the others);
2. reads the topic to its end (the last stable offset);
3. plans the records against that state (pure, ``commands``);
4. sends them in one transaction and commits;
5. waits until its own reader has applied them.

Why ids cannot be assigned twice: a commit in step 4 succeeds only if no other
producer was started since ours (else we are fenced). Every other transaction that
committed did so with an older epoch, so before our producer started, and (b)
means its records were then below the last stable offset we read to in step 2. So
the state a committed plan was made from held every committed record: the next id
and version it picked were free. A fenced writer drops its producer, starts a new
one (fencing the other in turn), re-reads and re-plans; re-planning also makes a
retried request idempotent (the same schema finds its id and writes nothing).
Concurrent writers can fence each other repeatedly; attempts are bounded, with
random backoff, and then fail with :class:`StoreError` (HTTP 500, code 50001).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamfs.schemas.registry.commands import Outcome
from streamfs.schemas.registry.errors import StoreError
from streamfs.schemas.registry.names import DEFAULT_TOPIC, transactional_id
from streamfs.schemas.registry.records import decode, encode
from streamfs.schemas.registry.state import RegistryState

T = TypeVar("T")
log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_WRITE_ATTEMPTS = 12


class KafkaStore:
    """Registry state backed by ``topic``; see the module docstring for the write protocol."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        sync_timeout_s: float = 30.0,
        poll_ms: int = 50,
        replication_factor: int = 1,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._tp = TopicPartition(topic, 0)
        self._sync_timeout_s = sync_timeout_s
        self._poll_ms = poll_ms
        self._replication_factor = replication_factor
        self._state = RegistryState()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None
        self._position = 0
        self._progress = asyncio.Condition()
        self._write_lock = asyncio.Lock()

    @property
    def state(self) -> RegistryState:
        return self._state

    async def start(self) -> None:
        """Create the topic if missing, then read it to its end."""
        try:
            await self._ensure_topic()
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
                fetch_max_wait_ms=self._poll_ms,
            )
            self._consumer = consumer
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            self._reader = asyncio.create_task(self._read_loop(consumer), name="schemas-reader")
            await self.sync()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, KafkaError):
                raise StoreError(
                    f"cannot read topic {self._topic!r} from Kafka at {self._bootstrap}: {exc!r}"
                ) from exc
            raise
        log.info(
            "schema_store_ready",
            topic=self._topic,
            offset=self._position,
            subjects=len(self._state.subjects(include_deleted=True)),
        )

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._drop_producer()
        if self._consumer is not None:
            await self._consumer.stop()

    async def sync(self) -> None:
        """Wait until every record committed to the topic before this call is applied."""
        if self._consumer is None:
            raise StoreError("the schema store is not started")
        try:
            end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        except KafkaError as exc:
            raise StoreError(f"cannot read the end of topic {self._topic!r}: {exc!r}") from exc
        await self._wait_applied(end)

    async def execute(self, plan: Callable[[RegistryState], Outcome[T]]) -> T:
        """Run ``plan`` on current state and append its records, as the only writer."""
        async with self._write_lock:
            for attempt in range(1, _WRITE_ATTEMPTS + 1):
                try:
                    producer = await self._producer_ready()
                    await self.sync()
                    outcome = plan(self._state)  # registry errors propagate from here
                    if not outcome.records:
                        return outcome.result
                    end = await self._append(producer, outcome)
                except KafkaError as exc:  # fenced by another instance, mostly: start over
                    log.info(
                        "schema_write_retry", topic=self._topic, attempt=attempt, error=repr(exc)
                    )
                    await self._drop_producer()
                    await asyncio.sleep(random.uniform(0.0, 0.02 * attempt))  # noqa: S311  # jitter, not crypto
                    continue
                await self._wait_applied(end)
                log.info(
                    "schema_records_written",
                    topic=self._topic,
                    records=len(outcome.records),
                    end_offset=end,
                )
                return outcome.result
        raise StoreError(
            f"could not write to {self._topic!r}: fenced by another writer "
            f"{_WRITE_ATTEMPTS} times in a row"
        )

    async def _append(self, producer: AIOKafkaProducer, outcome: Outcome[Any]) -> int:
        """Send ``outcome``'s records in one transaction; the offset after the last one."""
        await producer.begin_transaction()
        futures: list[asyncio.Future[Any]] = []
        try:
            for record in outcome.records:
                key, value = encode(record)
                futures.append(await producer.send(self._topic, value=value, key=key, partition=0))
            await producer.commit_transaction()
        except BaseException as exc:
            for future in futures:  # they fail with the transaction; that error is raised here
                future.add_done_callback(_retrieve_exception)
            if not isinstance(exc, KafkaError):
                # Cancelled mid-transaction: the next producer's InitProducerId aborts it.
                await self._drop_producer()
            raise
        metadata = [await future for future in futures]
        return int(metadata[-1].offset) + 1

    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                transactional_id=transactional_id(self._topic),
                enable_idempotence=True,
                acks="all",
                # An instance that dies mid-write holds back readers' last stable offset
                # until the coordinator aborts its transaction: keep that short.
                transaction_timeout_ms=10_000,
            )
            try:
                await producer.start()  # InitProducerId: fences the previous writer
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            log.info("schema_writer_started", topic=self._topic)
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with contextlib.suppress(Exception):  # a fenced producer may fail to close cleanly
            await producer.stop()
        _retrieve_parked_errors(producer)

    async def _wait_applied(self, offset: int) -> None:
        def reached() -> bool:
            return self._position >= offset or self._reader_error is not None

        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(reached), self._sync_timeout_s)
            except TimeoutError as exc:
                raise StoreError(
                    f"topic {self._topic!r} not read to offset {offset} within "
                    f"{self._sync_timeout_s}s (at {self._position})"
                ) from exc
        if self._reader_error is not None:
            raise StoreError(f"reading {self._topic!r} failed: {self._reader_error!r}")

    async def _read_loop(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(self._tp, timeout_ms=self._poll_ms)
                for message in batches.get(self._tp, []):
                    self._apply(message.offset, message.key, message.value)
                position = await consumer.position(self._tp)
                async with self._progress:
                    self._position = position
                    self._progress.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("schema_reader_failed", topic=self._topic, error=repr(exc))
            async with self._progress:
                self._reader_error = exc
                self._progress.notify_all()

    def _apply(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            log.warning("schema_record_skipped", topic=self._topic, offset=offset, reason="no key")
            return
        try:
            record = decode(key, value)
            if record is not None:
                self._state.apply(record)
        except StoreError as exc:  # one bad record must not take the registry down
            log.warning("schema_record_skipped", topic=self._topic, offset=offset, reason=str(exc))

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        try:
            await admin.start()
            if self._topic not in await admin.list_topics():
                response = await admin.create_topics(
                    [
                        NewTopic(
                            name=self._topic,
                            num_partitions=1,
                            replication_factor=self._replication_factor,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                    ]
                )
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, _TOPIC_ALREADY_EXISTS):
                        raise StoreError(f"cannot create topic {topic!r}: Kafka error code {code}")
                log.info("schema_topic_created", topic=self._topic)
            described = await admin.describe_topics([self._topic])
        except KafkaError as exc:
            raise StoreError(f"cannot set up topic {self._topic!r}: {exc!r}") from exc
        finally:
            await admin.close()
        partitions = len(described[0]["partitions"]) if described else 0
        if partitions != 1:
            raise StoreError(
                f"topic {self._topic!r} has {partitions} partitions; the registry needs exactly 1"
            )


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _retrieve_parked_errors(producer: AIOKafkaProducer) -> None:
    """Mark as seen the errors aiokafka 0.14 leaves in futures nobody awaits once fenced.

    Its accumulator fails each unsent batch's internal drain waiter, and the
    transaction manager parks the error in a fresh waiter; unretrieved, asyncio logs
    "Future exception was never retrieved" for each at garbage collection. The error
    itself was raised to us already. Private attributes, read defensively: if they
    move, this does nothing and only the log noise returns.
    """
    waiters: list[Any] = []
    accumulator = getattr(producer, "_message_accumulator", None)
    batches = [b for queue in getattr(accumulator, "_batches", {}).values() for b in queue]
    batches += list(getattr(accumulator, "_pending_batches", ()))
    waiters += [getattr(batch, "_drain_waiter", None) for batch in batches]
    manager = getattr(producer, "_txn_manager", None)
    waiters.append(getattr(manager, "_transaction_waiter", None))
    for waiter in waiters:
        if isinstance(waiter, asyncio.Future) and waiter.done():
            _retrieve_exception(waiter)
