"""The registry in Kafka: a compacted, single-partition topic of immutable version records.

Every version has its own key (:mod:`streamfs.registry.records`), so compaction
never drops history; one partition keeps the log in order. Every worker, server and
notebook that reads the topic to its end holds the same definitions.

Reading: one consumer per backend (``read_committed``), assigned to the partition;
each :meth:`KafkaBackend.load` reads from where the last one stopped to the
partition's last stable offset and folds the records into the cached state.

Writing, and what happens with two concurrent writers: every writer uses one
transactional producer with the same ``transactional.id``
(:func:`streamfs.names.registry_transactional_id`). Starting it fences every other
producer with that id and completes or aborts their open transaction; the writer
then reads to the end, plans against that state, and writes the plan's records in
one transaction. If another writer started in between, this one's commit fails
(``ProducerFenced``): it starts a new producer, re-reads and re-plans, a bounded
number of times. So two concurrent applies are serialised: the second plans
against the first's result (and, for the same topology, finds nothing to do);
neither can interleave records with the other, nor write a version number twice.
A plan's records are all committed or none (nothing applied half-way).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamfs.names import REGISTRY_TOPIC, registry_transactional_id
from streamfs.registry.plan import Plan
from streamfs.registry.records import RegistryError, decode, encode
from streamfs.registry.state import RegistryState

# aiokafka leaves a fenced producer's errors in futures nobody awaits; the schema
# registry's store already has the (defensive, private-attribute) workaround.
from streamfs.schemas.registry.kafka_store import (
    _retrieve_exception,
    _retrieve_parked_errors,
)

log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS: Final = 36
_WRITE_ATTEMPTS: Final = 10


class KafkaBackend:
    """Registry records in ``topic`` on the Kafka at ``bootstrap`` (see the module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = REGISTRY_TOPIC,
        *,
        replication_factor: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._tp = TopicPartition(topic, 0)
        self._replication_factor = replication_factor
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._state = RegistryState()

    @property
    def topic(self) -> str:
        return self._topic

    async def load(self) -> RegistryState:
        try:
            consumer = await self._consumer_ready()
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            deadline = asyncio.get_running_loop().time() + self._timeout_s
            while await consumer.position(self._tp) < end:
                if asyncio.get_running_loop().time() > deadline:
                    raise RegistryError(
                        f"registry topic {self._topic!r} not read to offset {end} within"
                        f" {self._timeout_s}s"
                    )
                batches = await consumer.getmany(self._tp, timeout_ms=200)
                for message in batches.get(self._tp, []):
                    self._apply(message.offset, message.key, message.value)
        except KafkaError as exc:
            raise RegistryError(
                f"cannot read registry topic {self._topic!r} from Kafka at {self._bootstrap}:"
                f" {exc!r}"
            ) from exc
        return self._state

    async def commit(self, make: Callable[[RegistryState], Plan]) -> Plan:
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                producer = await self._producer_ready()
                plan = make(await self.load())  # a refused definition propagates from here
                if plan.empty:
                    return plan
                await producer.begin_transaction()
                sent: list[asyncio.Future[Any]] = []
                try:
                    for record in plan.records:
                        key, value = encode(record)
                        sent.append(
                            await producer.send(self._topic, value=value, key=key, partition=0)
                        )
                    await producer.commit_transaction()
                except BaseException:
                    for future in sent:  # they fail with the transaction, raised here already
                        future.add_done_callback(_retrieve_exception)
                    await self._drop_producer()  # the next InitProducerId aborts what is open
                    raise
            except KafkaError as exc:  # fenced by another writer, mostly: start over
                log.info(
                    "registry_write_retry", topic=self._topic, attempt=attempt, error=repr(exc)
                )
                await self._drop_producer()
                await asyncio.sleep(random.uniform(0.0, 0.05 * attempt))  # noqa: S311  # jitter
                continue
            log.info(
                "registry_records_written",
                topic=self._topic,
                records=len(plan.records),
                steps=[f"{s.action} {s.kind} {s.name} v{s.version}" for s in plan.steps],
            )
            return plan
        raise RegistryError(
            f"could not write to registry topic {self._topic!r}: fenced by another writer"
            f" {_WRITE_ATTEMPTS} times in a row"
        )

    async def close(self) -> None:
        await self._drop_producer()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def _apply(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            log.warning(
                "registry_record_skipped", topic=self._topic, offset=offset, reason="no key"
            )
            return
        try:
            record = decode(key, value)
        except RegistryError as exc:  # one bad record must not hide every other definition
            log.warning(
                "registry_record_skipped", topic=self._topic, offset=offset, reason=str(exc)
            )
            return
        if record is not None:
            self._state.apply(record)

    async def _consumer_ready(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            await self._ensure_topic()
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            self._consumer = consumer
        return self._consumer

    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self._ensure_topic()
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                transactional_id=registry_transactional_id(self._topic),
                enable_idempotence=True,
                acks="all",
                transaction_timeout_ms=10_000,
            )
            try:
                await producer.start()  # InitProducerId: fences the previous writer
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # a fenced producer may fail to close cleanly
                await producer.stop()
            _retrieve_parked_errors(producer)

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        try:
            await admin.start()
            if self._topic in await admin.list_topics():
                return
            response: Any = await admin.create_topics(
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
                    raise RegistryError(f"cannot create topic {topic!r}: Kafka error code {code}")
            log.info("registry_topic_created", topic=self._topic)
        except KafkaError as exc:
            raise RegistryError(
                f"cannot set up registry topic {self._topic!r} on Kafka at {self._bootstrap}:"
                f" {exc!r}"
            ) from exc
        finally:
            await admin.close()
