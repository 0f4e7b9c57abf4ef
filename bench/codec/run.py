"""Decode throughput: streamfs's batch Decoder against confluent-kafka's AvroDeserializer.

Encodes ``--count`` sample ``purchase`` events once (streamfs Encoder, in-memory
registry, no network), then decodes all of them with each decoder in the same run,
in batches of ``--batch`` as a worker would take them from Kafka, and prints
events/s for each and the ratio (target: streamfs >= 3x confluent).

Both see the same bytes; neither keeps more than one batch of results, so memory
stays at the encoded events (about 110 MB per million) plus one batch.

Note: streamfs returns timestamp-millis as epoch-ms ints (its default), Confluent as
datetimes; ``--logical-timestamps`` makes streamfs build datetimes too.

    .venv/bin/python bench/codec/run.py              # 1,000,000 events
    .venv/bin/python bench/codec/run.py --count 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import resource
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streamfs.schemas import wire
from streamfs.schemas.client import connect, connect_sync
from streamfs.schemas.codec import Decoder, Encoder, value_subject
from streamfs.schemas.sample import ShopEvents, stepping_clock

SCHEMA = (Path(__file__).resolve().parents[2] / "avro_schemas" / "purchase.avsc").read_text()
TOPIC = "purchases"


def encode(count: int, seed: int, registry_url: str) -> tuple[list[bytes], float]:
    shop = ShopEvents(seed=seed, entities=100_000, clock=stepping_clock(1_700_000_000_000, 7))
    encoder = Encoder.registered_sync(connect_sync(registry_url), value_subject(TOPIC), SCHEMA)
    started = time.perf_counter()
    messages = [encoder.encode(event) for event in shop.events("purchase", count)]
    return messages, time.perf_counter() - started


def batches(messages: list[bytes], size: int) -> list[list[bytes]]:
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def time_streamfs(chunks: list[list[bytes]], registry_url: str, logical: bool) -> float:
    async def run() -> float:
        decoder = Decoder(connect(registry_url), SCHEMA, logical_timestamps=logical)
        decode_batch = decoder.decode_batch
        started = time.perf_counter()
        for chunk in chunks:
            results = await decode_batch(chunk)
        elapsed = time.perf_counter() - started
        assert not any(isinstance(r, Exception) for r in results)
        return elapsed

    gc.collect()
    return asyncio.run(run())


def time_confluent(chunks: list[list[bytes]], deserialize: Callable[..., Any]) -> float:
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    gc.collect()
    started = time.perf_counter()
    for chunk in chunks:
        results = [deserialize(message, ctx) for message in chunk]
    elapsed = time.perf_counter() - started
    assert len(results) == len(chunks[-1])
    return elapsed


def same_records(chunk: list[bytes], registry_url: str, deserialize: Callable[..., Any]) -> None:
    """Both decoders read the same values (Confluent's timestamps as datetimes)."""
    ours = asyncio.run(Decoder(connect(registry_url), SCHEMA).decode_batch(chunk))
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    for mine, message in zip(ours, chunk, strict=True):
        theirs = deserialize(message, ctx)
        assert isinstance(mine, dict)
        mine = mine | {"created_at": datetime.fromtimestamp(mine["created_at"] / 1000, UTC)}
        assert mine == theirs, (mine, theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="events to encode and decode")
    parser.add_argument("--batch", type=int, default=1_000, help="events per decode batch")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--logical-timestamps", action="store_true", help="streamfs -> datetime")
    args = parser.parse_args()

    registry_url = f"mock://bench-{uuid.uuid4().hex}"
    print(
        f"python {platform.python_version()}, fastavro {fastavro.__version__},"
        f" confluent-kafka {confluent_kafka.__version__}, {args.count:,} purchase events,"
        f" batches of {args.batch:,}"
    )
    messages, encode_s = encode(args.count, args.seed, registry_url)
    size = sum(map(len, messages))
    print(
        f"generated + encoded in {encode_s:.1f} s ({args.count / encode_s:,.0f} events/s),"
        f" {size / len(messages):.0f} B/event on the wire"
    )

    confluent = SchemaRegistryClient.new_client({"url": registry_url})
    confluent_id = confluent.register_schema(value_subject(TOPIC), Schema(SCHEMA, "AVRO"))
    assert confluent_id == wire.unframe(messages[0])[0], "both registries must hand out one id"
    deserialize = AvroDeserializer(confluent)
    chunks = batches(messages, args.batch)
    same_records(chunks[0][:200], registry_url, deserialize)

    streamfs_s = time_streamfs(chunks, registry_url, args.logical_timestamps)
    confluent_s = time_confluent(chunks, deserialize)
    streamfs_rate, confluent_rate = args.count / streamfs_s, args.count / confluent_s
    timestamps = "datetime" if args.logical_timestamps else "int ms"
    print(
        f"streamfs Decoder.decode_batch: {streamfs_rate:>12,.0f} events/s"
        f"  {streamfs_s / args.count * 1e6:6.2f} us/event  (timestamps as {timestamps})"
    )
    print(
        f"confluent AvroDeserializer:    {confluent_rate:>12,.0f} events/s"
        f"  {confluent_s / args.count * 1e6:6.2f} us/event"
    )
    ratio = streamfs_rate / confluent_rate
    verdict = "met" if ratio >= 3 else "MISSED"
    print(f"ratio streamfs / confluent: {ratio:.2f}x (target >= 3x: {verdict})")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
