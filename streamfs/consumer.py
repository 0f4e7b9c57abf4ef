"""The ingest loop: consume a source topic in batches, validate, dead-letter, hand over, commit.

One batch at a time, in this order:

1. poll up to ``max_records`` messages (aiokafka ``getmany``);
2. validate them (:mod:`streamfs.ingest`), with the current watermarks;
3. send the rejects to ``<topic>.dlq`` and wait until the broker acknowledged all;
4. await ``on_events(events)`` (the worker's aggregation plugs in here);
5. commit the next offsets, then adopt the batch's watermarks.

So a committed offset means its event was handed over or dead-lettered, never
neither (at least once; a crash between 3 and 5 repeats the batch). A bad event
never stops the loop: it is a reject like any other. What does stop it is
``on_events`` raising, since that is a bug or an outage of the caller's, and
committing past it would lose events; nothing of that batch is committed.
A registry or broker that cannot be reached (schema fetch, dead-letter send) is
waited out: the same batch is retried with a growing pause, nothing committed.

Watermarks live in memory here, seeded from ``watermarks=`` (restore what you
persisted with the offsets) and dropped for partitions taken away in a rebalance
(their new owner has its own). A later Faust worker keeps them in a table instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streamfs.definitions import Source
from streamfs.dlq import DeadLetterSink
from streamfs.ingest import Event, IngestCounter, Message, Reject, Validator
from streamfs.names import ingest_group
from streamfs.schemas.client import SchemaRegistry
from streamfs.schemas.codec import Decoder
from streamfs.schemas.errors import RegistryUnavailableError

log = structlog.get_logger(__name__)

EventHandler = Callable[[Sequence[Event]], Awaitable[None]]
RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class DeadLetters(Protocol):
    async def send(self, rejects: Sequence[Reject]) -> None: ...


def message_of(record: Any) -> Message:
    """An aiokafka ``ConsumerRecord`` as an ingest :class:`Message`."""
    return Message(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        tuple(record.headers),
        record.timestamp,
    )


class IngestBatches:
    """Steps 2-4 of the module doc for one batch, without Kafka: testable on its own."""

    def __init__(
        self,
        validator: Validator,
        dead_letters: DeadLetters,
        on_events: EventHandler,
        watermarks: Mapping[int, int] | None = None,
    ) -> None:
        self.validator = validator
        self._dead_letters = dead_letters
        self._on_events = on_events
        self.watermarks: dict[int, int] = dict(watermarks or {})

    async def process(self, messages: Sequence[Message]) -> dict[int, int]:
        """Validate, dead-letter and hand over ``messages``; the watermarks it would leave.

        The caller adopts them (``self.watermarks = ...``) once the offsets are committed.
        """
        validated = await self.validator.validate(messages, self.watermarks)
        await self._dead_letters.send(validated.rejects)
        if validated.events:
            await self._on_events(validated.events)
        return validated.watermarks

    def forget(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self.watermarks.pop(partition, None)


class _DropRevoked(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base class
    def __init__(self, batches: IngestBatches) -> None:
        self._batches = batches

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._batches.forget([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("ingest_assigned", partitions=sorted(tp.partition for tp in assigned))


class IngestConsumer:
    """Runs the loop of the module doc for one :class:`Source` until :meth:`stop`."""

    def __init__(
        self,
        source: Source,
        *,
        bootstrap: str,
        registry: SchemaRegistry,
        on_events: EventHandler,
        clock: Callable[[], int],
        group_id: str | None = None,
        counter: IngestCounter | None = None,
        watermarks: Mapping[int, int] | None = None,
        max_records: int = 500,
        poll_timeout_ms: int = 1_000,
    ) -> None:
        self.source = source
        self.group_id = group_id or ingest_group(source.name)
        self._bootstrap = bootstrap
        self._registry = registry
        self._on_events = on_events
        self._clock = clock
        self._counter = counter
        self._initial_watermarks = dict(watermarks or {})
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._stopping = asyncio.Event()
        self.batches: IngestBatches | None = None
        self.committed_batches = 0

    @property
    def watermarks(self) -> dict[int, int]:
        """The watermarks of the last committed batch, partition -> event time ms."""
        return dict(self.batches.watermarks if self.batches else self._initial_watermarks)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand."""
        self._stopping.set()

    async def run(self) -> None:
        decoder = Decoder(self._registry, self.source.reader_schema)
        validator = Validator(self.source, decoder, self._clock, self._counter)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        sink = DeadLetterSink(producer, self._clock)
        batches = IngestBatches(validator, sink, self._on_events, self._initial_watermarks)
        self.batches = batches
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumer.subscribe([self.source.topic], listener=_DropRevoked(batches))
        await producer.start()
        try:
            await consumer.start()
            try:
                log.info("ingest_started", topic=self.source.topic, group=self.group_id)
                while not self._stopping.is_set():
                    records = await consumer.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                    )
                    messages = [message_of(r) for rs in records.values() for r in rs]
                    if messages:
                        await self._process_and_commit(consumer, batches, messages)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
            log.info("ingest_stopped", topic=self.source.topic, group=self.group_id)

    async def _process_and_commit(
        self, consumer: Any, batches: IngestBatches, messages: list[Message]
    ) -> None:
        watermarks = await self._retrying(batches, messages)
        if watermarks is None:
            return  # stopped while waiting for the registry or broker; nothing committed
        offsets: dict[TopicPartition, int] = {}
        for message in messages:
            tp = TopicPartition(message.topic, message.partition)
            offsets[tp] = max(offsets.get(tp, 0), message.offset + 1)
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions: their new owner repeats the batch.
            log.warning("ingest_commit_failed", topic=self.source.topic, error=str(exc))
            return
        batches.watermarks = watermarks
        self.committed_batches += 1

    async def _retrying(
        self, batches: IngestBatches, messages: list[Message]
    ) -> dict[int, int] | None:
        attempt = 0
        while True:
            try:
                return await batches.process(messages)
            except (RegistryUnavailableError, KafkaError) as exc:
                pause_s = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                attempt += 1
                log.warning(
                    "ingest_batch_retry",
                    topic=self.source.topic,
                    attempt=attempt,
                    pause_s=pause_s,
                    error=str(exc),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause_s)
                if self._stopping.is_set():
                    return None
