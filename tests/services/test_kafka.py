"""The local Kafka is real: keyed messages through aiokafka, none lost, none duplicated."""

from __future__ import annotations

import collections
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from tests.services.kafka_helpers import create_topic, produce

MESSAGES = 10_000


async def test_keyed_messages_across_four_partitions_arrive_once_each_in_key_order(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("roundtrip")
    await create_topic(kafka_bootstrap, topic, partitions=4)
    records = [(f"user-{i % 257}".encode(), str(i).encode()) for i in range(MESSAGES)]
    assert await produce(kafka_bootstrap, topic, records) == MESSAGES

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[int, bytes, int]] = []
    try:
        while len(received) < MESSAGES:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"no message for 10 s after {len(received)} of {MESSAGES}"
            for tp, messages in batches.items():
                received.extend((tp.partition, m.key, int(m.value)) for m in messages)
        await consumer.commit()
        # Nothing beyond what was sent.
        assert not await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()

    values = [value for _, _, value in received]
    duplicates = [v for v, n in collections.Counter(values).items() if n > 1]
    assert duplicates == []
    assert sorted(values) == list(range(MESSAGES))
    assert {partition for partition, _, _ in received} == {0, 1, 2, 3}
    # One key, one partition, and within it the order the producer sent.
    by_key: dict[bytes, list[int]] = collections.defaultdict(list)
    partition_of: dict[bytes, set[int]] = collections.defaultdict(set)
    for partition, key, value in received:
        by_key[key].append(value)
        partition_of[key].add(partition)
    assert all(len(p) == 1 for p in partition_of.values())
    assert all(v == sorted(v) for v in by_key.values())
