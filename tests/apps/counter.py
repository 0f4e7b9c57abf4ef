"""A minimal Faust app for the service tests: counts events per key in a RocksDB-backed Table.

Faust delivers at least once: after a restart (seen when events arrive while it restores
a table from its changelog) it may hand the agent an event it already processed. So each
table value carries the offset of the last event it counted, ``[count, last_offset]``,
and an event at or below that offset is skipped. A key always lives in one partition,
so its offsets only grow. This is the replay-safety streamfs's own worker builds on.

Run as its own worker process by the tests::

    COUNTER_BROKER=127.0.0.1:9092 COUNTER_APP_ID=... COUNTER_TOPIC=... COUNTER_DATADIR=... \
        python -m faust -A tests.apps.counter worker -l warn

It reads its configuration from the environment because it is started as a
separate process; streamfs's own code does not.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["COUNTER_APP_ID"],
    broker=f"kafka://{os.environ['COUNTER_BROKER']}",
    store="rocksdb://",
    datadir=os.environ["COUNTER_DATADIR"],
    topic_partitions=4,
    web_enabled=False,
)
events = app.topic(
    os.environ["COUNTER_TOPIC"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=4,
)
counts = app.Table(
    "counts",
    default=lambda: [0, -1],
    partitions=4,
    key_type=str,
    # RocksDB's defaults (2 GiB block cache, 3 x 64 MiB write buffers per partition) are for
    # servers; a test worker needs a few MiB.
    options={
        "block_cache_size": 8 << 20,
        "write_buffer_size": 4 << 20,
        "max_write_buffer_number": 2,
    },
)


@app.agent(events)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        key, offset = event.key.decode(), event.message.offset
        count, last_offset = counts[key]
        if offset > last_offset:
            counts[key] = [count + 1, offset]
