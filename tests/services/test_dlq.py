"""The ingest loop on the real Kafka and schema registry: bad events to the DLQ, good ones
to the callback exactly once, and the loop keeps going."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streamfs import dlq
from streamfs.consumer import IngestConsumer
from streamfs.definitions import Source
from streamfs.ingest import Event
from streamfs.names import dlq_topic
from streamfs.schemas import wire
from streamfs.schemas.client import connect
from streamfs.schemas.codec import Encoder, value_subject
from tests.services.kafka_helpers import (
    create_topic,
    group_caught_up,
    read_records,
    wait_until,
)

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro_schemas"
PURCHASE = (AVRO_DIR / "purchase.avsc").read_text()
NOW_MS = 1_700_000_000_000
LATENESS_MS = 60_000
SKEW_MS = 5_000


def schema_with(change: dict[str, Any] | None = None, drop: str | None = None) -> str:
    schema = json.loads(PURCHASE)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != drop]
    for field in schema["fields"]:
        if change and field["name"] in change:
            field.update(change[field["name"]])
    return json.dumps(schema)


# The source reads user_id as nullable, so a null key decodes and ingestion rejects it.
READER = schema_with({"user_id": {"type": ["null", "string"], "default": None}})


def purchase(order: str, created_at: int, **overrides: Any) -> dict[str, Any]:
    return {
        "user_id": "u000001",
        "order_id": order,
        "amount": 10.0,
        "currency": "EUR",
        "category": "books",
        "created_at": created_at,
        "coupon": None,
        "items": 1,
        "payment_method": "card",
    } | overrides


async def test_bad_events_go_to_the_dlq_good_ones_to_the_callback_once_and_it_keeps_running(
    kafka_bootstrap: str, schema_registry_url: str, unique: Callable[[str], str]
) -> None:
    topic = unique("purchases")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    registry = connect(schema_registry_url)
    good = await Encoder.registered(registry, value_subject(topic), PURCHASE)
    no_time = await Encoder.registered(
        registry, value_subject(unique("no-time")), schema_with(drop="created_at")
    )
    null_key = await Encoder.registered(
        registry,
        value_subject(unique("null-key")),
        schema_with({"user_id": {"type": ["null", "string"]}}),
    )
    t0 = NOW_MS - 10_000
    sample = good.encode(purchase("sample", t0))
    # (partition, value, expected reason or None for a good event with this order id)
    plan: list[tuple[int, bytes, str]] = [
        (0, good.encode(purchase("g1", t0)), "g1"),
        (0, b"\x07\x13", "too_short"),
        (0, b"\x01" + sample[1:], "bad_magic"),
        (1, good.encode(purchase("g2", t0 - 5)), "g2"),
        (1, wire.frame(wire.MAX_SCHEMA_ID, sample[5:]), "unknown_schema"),
        (1, sample[:20], "truncated"),
        (0, sample[:5] + b"\xff" * 30, "undecodable"),
        (
            0,
            no_time.encode({k: v for k, v in purchase("x", 0).items() if k != "created_at"}),
            "missing_field",
        ),
        (1, null_key.encode(purchase("x", t0, user_id=None)), "missing_field"),
        (0, good.encode(purchase("future", NOW_MS + SKEW_MS + 1)), "future"),
        (0, good.encode(purchase("g3", t0 + 1_000)), "g3"),
        (0, good.encode(purchase("late", t0 + 1_000 - LATENESS_MS - 1)), "late"),
        (1, good.encode(purchase("g4", t0 - LATENESS_MS)), "g4"),  # lateness bound inclusive
    ]
    bad_reasons = {
        "too_short",
        "bad_magic",
        "unknown_schema",
        "truncated",
        "undecodable",
        "missing_field",
        "future",
        "late",
    }

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    sent: dict[tuple[int, int], tuple[bytes, str]] = {}  # (partition, offset) -> (value, label)
    try:
        for partition, value, label in plan:
            meta = await producer.send_and_wait(
                topic, value, key=b"u000001", partition=partition, headers=[("origin", b"test")]
            )
            sent[(meta.partition, meta.offset)] = (value, label)

        received: list[Event] = []

        async def collect(events: Sequence[Event]) -> None:
            received.extend(events)

        source = Source(
            name=unique("source"),
            topic=topic,
            schema_subject=value_subject(topic),
            key_field="user_id",
            event_time_field="created_at",
            allowed_lateness_ms=LATENESS_MS,
            max_future_skew_ms=SKEW_MS,
            reader_schema=READER,
        )
        group = unique("group")
        consumer = IngestConsumer(
            source,
            bootstrap=kafka_bootstrap,
            registry=registry,
            on_events=collect,
            clock=lambda: NOW_MS,
            group_id=group,
            poll_timeout_ms=200,
        )
        task = asyncio.create_task(consumer.run())
        bad = {k: v for k, v in sent.items() if v[1] in bad_reasons}
        goods = {k: v for k, v in sent.items() if v[1] not in bad_reasons}

        async def dead_letters() -> list[Any]:
            return await read_records(kafka_bootstrap, dlq_topic(topic))

        await wait_until(lambda: len(received) >= len(goods), 60, "the good events")
        await wait_until(lambda: _count(dead_letters(), len(bad)), 60, "the dead letters")

        assert sorted((e.partition, e.offset) for e in received) == sorted(goods)
        assert sorted(e.record["order_id"] for e in received) == ["g1", "g2", "g3", "g4"]
        assert {e.entity_key for e in received} == {"u000001"}

        letters = await dead_letters()
        assert len(letters) == len(bad)
        for letter in letters:
            headers = dict(letter.headers)
            where = (int(headers[dlq.HEADER_PARTITION]), int(headers[dlq.HEADER_OFFSET]))
            value, reason = bad[where]
            assert headers[dlq.HEADER_REASON].decode() == reason, headers[dlq.HEADER_DETAIL]
            assert letter.value == value
            assert letter.key == b"u000001"
            assert headers[dlq.HEADER_TOPIC].decode() == topic
            assert headers[dlq.HEADER_REJECTED_AT] == str(NOW_MS).encode()
            assert headers["origin"] == b"test"
            assert headers[dlq.HEADER_DETAIL]
        assert sorted(
            (int(dict(x.headers)[dlq.HEADER_PARTITION]), int(dict(x.headers)[dlq.HEADER_OFFSET]))
            for x in letters
        ) == sorted(bad)

        # Still running: a further good event reaches the callback too, once.
        assert not task.done()
        await producer.send_and_wait(
            topic, good.encode(purchase("g5", t0 + 2_000)), key=b"u000001", partition=0
        )
        await wait_until(lambda: len(received) > len(goods), 60, "the further good event")
        await wait_until(
            lambda: group_caught_up(kafka_bootstrap, group, topic), 60, "the committed offsets"
        )
        assert [e.record["order_id"] for e in received].count("g5") == 1
        assert len(received) == len(goods) + 1
        assert consumer.watermarks == {0: t0 + 2_000, 1: t0 - 5}
        consumer.stop()
        await asyncio.wait_for(task, 30)
    finally:
        await producer.stop()
        await registry.close()


async def _count(records: Any, expected: int) -> bool:
    return len(await records) >= expected
