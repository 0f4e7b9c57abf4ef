"""Small aiokafka helpers shared by the service tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError


async def create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    try:
        batch = []
        for key, value in records:
            batch.append(await producer.send(topic, key=key, value=value))
            sent += 1
        await asyncio.gather(*batch)
    finally:
        await producer.stop()
    return sent


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (none if it does not exist), asking the broker afresh."""
    await consumer._client.force_metadata_update()  # the consumer's cache may predate the topic
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def read_to_end(
    bootstrap: str, topic: str
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record now in ``topic``: (partition, offset, key, value), read without a group."""
    return [(r.partition, r.offset, r.key, r.value) for r in await read_records(bootstrap, topic)]


async def read_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record now in ``topic`` as aiokafka ``ConsumerRecord``s (headers included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        if not tps:
            return []  # the topic does not exist (yet)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                out.extend(messages)
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def wait_until(
    check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.5
) -> None:
    """Await ``check()`` (sync or async) until it is truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


async def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """True when ``group`` has committed offsets at the end of every partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError:
            return False  # e.g. the coordinator is still loading after a broker restart
        tps = await _partitions(consumer, topic)
        end = await consumer.end_offsets(tps)
        return bool(tps) and all(tp in committed and committed[tp].offset >= end[tp] for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()
