"""The worker's Redis writes on a real Redis: batched script calls that change an entity's
hash only for a newer offset, so a replayed or stale batch changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import redis
import redis.asyncio as redis_asyncio

from streamfs.online import WRITE_CHUNK, OnlineWrite, OnlineWriter


async def test_batches_across_chunks_write_once_and_replays_change_nothing(
    redis_url: str, unique: Callable[[str], str]
) -> None:
    prefix = unique("writes")
    count = 2 * WRITE_CHUNK + 17  # three script calls, the last one short

    def batch(offset: int, tiles: bytes) -> list[OnlineWrite]:
        return [
            OnlineWrite(f"{prefix}:{i}", offset + i, tiles + b"%d" % i, 1_000 + i, 60_000)
            for i in range(count)
        ]

    client = redis_asyncio.Redis.from_url(redis_url)
    writer = OnlineWriter(client, lambda: 42)
    try:
        assert await writer.write(batch(10, b"first")) == count
        assert await writer.write(batch(10, b"replay")) == 0  # same offsets: a replay
        assert await writer.write(batch(5, b"stale")) == 0  # older offsets
        newer = batch(10, b"newer")[::2]  # every other entity moves on
        newer = [
            OnlineWrite(w.key, w.offset + 1, w.tiles, w.last_event_time_ms, w.ttl_ms) for w in newer
        ]
        assert await writer.write(newer) == len(newer)
    finally:
        await client.aclose()

    sync = redis.Redis.from_url(redis_url)
    for i in (0, 1, WRITE_CHUNK, count - 1):
        stored = sync.hgetall(f"{prefix}:{i}")
        moved = i % 2 == 0
        assert stored[b"o"] == str(10 + i + (1 if moved else 0)).encode()
        assert stored[b"t"] == (b"newer" if moved else b"first") + b"%d" % i
        assert stored[b"e"] == str(1_000 + i).encode()
        assert stored[b"w"] == b"42"
        assert 0 < sync.pttl(f"{prefix}:{i}") <= 60_000


async def test_seeds_are_the_backfilled_hashes_only_across_chunks(
    redis_url: str, unique: Callable[[str], str]
) -> None:
    """The worker asks for the seeds of every entity it has no state for: it gets the tiles
    of hashes a backfill wrote (negative offsets), and None for absent keys and for the
    hashes the worker wrote itself, in key order across several script calls."""
    prefix = unique("seeds")
    count = WRITE_CHUNK + 40
    keys = [f"{prefix}:{i}" for i in range(count)]
    sync = redis.Redis.from_url(redis_url)
    for i, key in enumerate(keys):
        if i % 3 == 0:
            sync.hset(key, mapping={"o": -1_700_000_000_000 - i, "t": b"seed%d" % i})
        elif i % 3 == 1:
            sync.hset(key, mapping={"o": i, "t": b"worker%d" % i})  # the worker's own
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        seeds = await OnlineWriter(client, lambda: 42).seeds(keys)
        assert await OnlineWriter(client, lambda: 42).seeds([]) == []
    finally:
        await client.aclose()
    assert seeds == [b"seed%d" % i if i % 3 == 0 else None for i in range(count)]
