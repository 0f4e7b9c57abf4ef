"""A compacted, single-partition Kafka topic with one writer at a time: the registries' log.

Both registries (the schema registry's ``_schemas``, the feature registry's topic)
keep their state as records in such a topic. :class:`CompactedLog` owns the Kafka
side; each owner keeps its record format, its state, and the argument for why its
plans stay consistent.

Reading: one consumer (``isolation_level=read_committed``, no group), assigned to
partition 0 from the beginning. :meth:`CompactedLog.read` fetches once and hands each
record to the owner's ``apply(key, value)``; :meth:`CompactedLog.read_to_end` reads up
to the last stable offset as it is when called. One partition keeps the log in order.
A record without a key, or one ``apply`` refuses (raises the owner's error), is
skipped with a warning: one bad record must not hide the rest of the log.

Writing: one writer at a time, by Kafka transactional fencing. Every writer of the
topic uses a transactional producer with the same fixed ``transactional.id`` (the
owner builds it; it persists). Starting such a producer (InitProducerId) bumps the
id's epoch, which (a) fences every older producer with that id, so their later
``AddPartitionsToTxn``/``Produce``/``EndTxn`` fail with ``ProducerFenced``, and (b)
completes or aborts the previous holder's transaction before it returns.
:meth:`CompactedLog.write`, under a local lock, then:

1. makes sure this writer has a producer (starting one fences the others);
2. calls the owner's ``plan``, which reads the topic to its end (the last stable
   offset) and plans records against that state;
3. sends them in one transaction and commits.

Why a committed plan was made from complete state: a commit in step 3 succeeds only
if no other producer was started since ours (else we are fenced). Every other
transaction that committed did so with an older epoch, so before our producer
started, and (b) means its records were then below the last stable offset read in
step 2. A fenced writer drops its producer, starts a new one (fencing the other in
turn), re-reads and re-plans. Concurrent writers can fence each other repeatedly;
attempts are bounded, with random backoff, and then fail with the owner's error.
A plan's records are all committed or none.

Errors: the log raises its owner's error class (:class:`Owner`), from the Kafka
error where there is one, so each registry's callers see that registry's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamfs.errors import StreamfsError

T = TypeVar("T")
Record = tuple[bytes, bytes | None]
"""A record as written: key, value (``None``: a tombstone)."""
Apply = Callable[[bytes, bytes | None], None]
"""Folds one record read, ``(key, value)``, into the owner's state."""

log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS: Final = 36


@dataclass(frozen=True, slots=True)
class Owner:
    """What a log's owner decides: its error class, its log events, how hard to retry."""

    error: type[StreamfsError]  # raised for every failure; from ``apply``: a bad record
    topic_created: str  # the structured log events, by name: the owner's callers know them
    write_retry: str
    record_skipped: str
    writer_started: str | None = None  # None: not logged
    write_attempts: int = 10
    backoff_s: float = 0.05  # the random backoff before attempt n is up to n * this


class CompactedLog:
    """``topic`` on the Kafka at ``bootstrap``, written as ``transactional_id``; see above."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        transactional_id: str,
        owner: Owner,
        *,
        replication_factor: int = 1,
        poll_ms: int = 200,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._tp = TopicPartition(topic, 0)
        self._transactional_id = transactional_id
        self._owner = owner
        self._error = owner.error
        self._replication_factor = replication_factor
        self._poll_ms = poll_ms
        self._topic_ready = False
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the topic if missing and start reading it from the beginning."""
        if self._consumer is not None:
            return
        await self.ensure_topic()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=self._poll_ms,
        )
        try:
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
        except BaseException as exc:
            await consumer.stop()
            if isinstance(exc, KafkaError):
                raise self._error(
                    f"cannot read topic {self.topic!r} from Kafka at {self.bootstrap}: {exc!r}"
                ) from exc
            raise
        self._consumer = consumer

    async def end_offset(self) -> int:
        """The last stable offset: every record committed before this call is below it."""
        consumer = self._opened()
        try:
            return int((await consumer.end_offsets([self._tp]))[self._tp])
        except KafkaError as exc:
            raise self._error(f"cannot read the end of topic {self.topic!r}: {exc!r}") from exc

    async def read(self, apply: Apply) -> int:
        """Fetch once (waiting up to ``poll_ms``), apply each record; the position after."""
        consumer = self._opened()
        try:
            batches = await consumer.getmany(self._tp, timeout_ms=self._poll_ms)
            for message in batches.get(self._tp, []):
                self._fold(apply, message.offset, message.key, message.value)
            return int(await consumer.position(self._tp))
        except KafkaError as exc:
            raise self._error(
                f"cannot read topic {self.topic!r} from Kafka at {self.bootstrap}: {exc!r}"
            ) from exc

    async def read_to_end(self, apply: Apply, timeout_s: float) -> None:
        """Apply every record committed before this call that was not read yet."""
        await self.open()
        end = await self.end_offset()
        deadline = asyncio.get_running_loop().time() + timeout_s
        position = await self._position()
        while position < end:
            if asyncio.get_running_loop().time() > deadline:
                raise self._error(
                    f"topic {self.topic!r} not read to offset {end} within {timeout_s}s"
                    f" (at {position})"
                )
            position = await self.read(apply)

    async def write(
        self, plan: Callable[[], Awaitable[tuple[T, Sequence[Record]]]]
    ) -> tuple[T, int | None]:
        """Append what ``plan`` returns in one transaction, as the only writer.

        ``plan`` runs once this writer's producer has started (so it fenced the
        others); it reads to the end and returns its result and the records to write.
        It runs again whenever the commit is fenced; its own errors propagate. Returns
        its result and the offset after the last record written (``None``: none).
        """
        async with self._write_lock:
            for attempt in range(1, self._owner.write_attempts + 1):
                try:
                    producer = await self._producer_ready()
                    result, records = await plan()
                    if not records:
                        return result, None
                    return result, await self._append(producer, records)
                except KafkaError as exc:  # fenced by another writer, mostly: start over
                    log.info(
                        self._owner.write_retry, topic=self.topic, attempt=attempt, error=repr(exc)
                    )
                    await self._drop_producer()
                    await asyncio.sleep(random.uniform(0.0, self._owner.backoff_s * attempt))  # noqa: S311  # jitter, not crypto
        raise self._error(
            f"could not write to {self.topic!r}: fenced by another writer"
            f" {self._owner.write_attempts} times in a row"
        )

    async def close(self) -> None:
        await self._drop_producer()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def ensure_topic(self) -> None:
        """Create the topic (one partition, compacted) if missing; check it has one partition."""
        if self._topic_ready:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            if self.topic not in await admin.list_topics():
                topic = NewTopic(
                    name=self.topic,
                    num_partitions=1,
                    replication_factor=self._replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                )
                response = await admin.create_topics([topic])
                for name, code, *_ in response.topic_errors:
                    if code not in (0, _TOPIC_ALREADY_EXISTS):
                        raise self._error(f"cannot create topic {name!r}: Kafka error code {code}")
                log.info(self._owner.topic_created, topic=self.topic)
            # A topic another instance created a moment ago may describe with no
            # partitions until its metadata has spread: ask again for a few seconds.
            for _ in range(50):
                described = await admin.describe_topics([self.topic])
                if described and described[0]["partitions"]:
                    break
                await asyncio.sleep(0.1)
        except KafkaError as exc:
            raise self._error(
                f"cannot set up topic {self.topic!r} on Kafka at {self.bootstrap}: {exc!r}"
            ) from exc
        finally:
            await admin.close()
        partitions = len(described[0]["partitions"]) if described else 0
        if partitions != 1:
            raise self._error(
                f"topic {self.topic!r} has {partitions} partitions; it needs exactly 1"
            )
        self._topic_ready = True

    def _fold(self, apply: Apply, offset: int, key: bytes | None, value: bytes | None) -> None:
        skipped = self._owner.record_skipped
        if key is None:
            log.warning(skipped, topic=self.topic, offset=offset, reason="no key")
            return
        try:
            apply(key, value)
        except self._error as exc:  # one bad record must not take the owner down
            log.warning(skipped, topic=self.topic, offset=offset, reason=str(exc))

    def _opened(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise self._error(f"topic {self.topic!r} is not open for reading")
        return self._consumer

    async def _position(self) -> int:
        try:
            return int(await self._opened().position(self._tp))
        except KafkaError as exc:
            raise self._error(f"cannot read topic {self.topic!r}: {exc!r}") from exc

    async def _append(self, producer: AIOKafkaProducer, records: Sequence[Record]) -> int:
        """Send ``records`` in one transaction; the offset after the last one."""
        await producer.begin_transaction()
        futures: list[asyncio.Future[Any]] = []
        try:
            for key, value in records:
                futures.append(await producer.send(self.topic, value=value, key=key, partition=0))
            await producer.commit_transaction()
        except BaseException:
            for future in futures:  # they fail with the transaction; that error is raised here
                future.add_done_callback(_retrieve_exception)
            # Fenced, or cancelled mid-transaction: the next producer's InitProducerId aborts it.
            await self._drop_producer()
            raise
        metadata = [await future for future in futures]
        return int(metadata[-1].offset) + 1

    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self.ensure_topic()
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                transactional_id=self._transactional_id,
                enable_idempotence=True,
                acks="all",
                # A writer that dies mid-write holds back readers' last stable offset
                # until the coordinator aborts its transaction: keep that short.
                transaction_timeout_ms=10_000,
            )
            try:
                await producer.start()  # InitProducerId: fences the previous writer
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            if self._owner.writer_started is not None:
                log.info(self._owner.writer_started, topic=self.topic)
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with contextlib.suppress(Exception):  # a fenced producer may fail to close cleanly
            await producer.stop()
        _retrieve_parked_errors(producer)


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
