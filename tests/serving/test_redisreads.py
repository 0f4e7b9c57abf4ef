"""The lean Redis readers against the real Redis: replies paired with requests in order
under concurrency, missing keys as None, Redis errors raised, a lost connection failing
the reads in flight and the next read connecting again, the db of the URL. The SDK's
blocking reader too: one connection per thread and per process, a connection Redis
closed between reads replaced without the caller seeing it."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable

import pytest
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from streamfs.serving.redisreads import AsyncClientReads, BlockingRedisReads, RedisReads, pack
from tests.conftest import Services

pytestmark = pytest.mark.services


def test_pack_writes_resp_arrays_of_bulk_strings() -> None:
    assert pack("HGET", b"k\xff", "t") == b"*3\r\n$4\r\nHGET\r\n$2\r\nk\xff\r\n$1\r\nt\r\n"


def test_which_urls_it_speaks() -> None:
    assert RedisReads.supports("redis://127.0.0.1:6379/0")
    assert RedisReads.supports("redis://:secret@h:1/2")
    assert RedisReads.supports("unix:///run/redis.sock?db=1")
    assert not RedisReads.supports("rediss://h:6380/0")  # TLS: redis.asyncio does it


def fill(url: str, prefix: str) -> redis.Redis:
    """50 hashes ``{prefix}:{i}`` with field ``t`` = ``tiles-{i}``, and a string key."""
    sync = redis.Redis.from_url(url)
    for i in range(50):
        sync.hset(f"{prefix}:{i}", mapping={"t": f"tiles-{i}".encode(), "o": i})
    sync.set(f"{prefix}:string", "not a hash")
    return sync


async def test_concurrent_reads_each_get_their_own_replies(
    services: Services, unique: Callable[[str], str]
) -> None:
    prefix = unique("reads")
    sync = fill(services.redis_url, prefix)
    reads = RedisReads(services.redis_url)
    try:

        async def one(i: int) -> None:
            keys = [f"{prefix}:{i}", f"{prefix}:missing", f"{prefix}:{(i * 7) % 50}"]
            assert await reads.hget(keys, "t") == [
                f"tiles-{i}".encode(),
                None,
                f"tiles-{(i * 7) % 50}".encode(),
            ]

        await asyncio.gather(*(one(i % 50) for i in range(400)))
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await reads.hget([f"{prefix}:1", f"{prefix}:string"], "t")
        assert await reads.hget([f"{prefix}:2"], "t") == [b"tiles-2"]  # still in step
        assert await reads.hget([], "t") == []
        # The same answers through redis.asyncio, the fallback for URLs it does not speak.
        client = redis.asyncio.Redis.from_url(services.redis_url)
        other = AsyncClientReads(client)
        assert await other.hget([f"{prefix}:3"], "t") == [b"tiles-3"]
        assert await other.hget([f"{prefix}:3", f"{prefix}:missing"], "t") == [b"tiles-3", None]
        await client.aclose()
    finally:
        await reads.close()
        sync.delete(*[f"{prefix}:{i}" for i in range(50)], f"{prefix}:string")


async def test_a_lost_connection_fails_reads_in_flight_and_the_next_read_reconnects(
    services: Services, unique: Callable[[str], str]
) -> None:
    key = unique("reads")
    redis.Redis.from_url(services.redis_url).hset(key, "t", b"x")
    reads = RedisReads(services.redis_url)
    try:
        assert await reads.hget([key], "t") == [b"x"]
        in_flight = asyncio.ensure_future(reads.hget([key], "t"))
        await asyncio.sleep(0)  # queued, not yet written
        protocol = reads._protocol
        assert protocol is not None
        assert protocol.transport is not None
        protocol.transport.abort()
        with pytest.raises(ConnectionError):
            await in_flight
        assert await reads.hget([key], "t") == [b"x"]
        assert reads._protocol is not protocol
    finally:
        await reads.close()
        redis.Redis.from_url(services.redis_url).delete(key)


def in_db3(url: str, key: str) -> tuple[str, redis.Redis]:
    """The URL of db 3 on the same Redis, holding ``key`` (field ``t`` = ``in db 3``)."""
    url = url.rsplit("/", 1)[0] + "/3"
    db3 = redis.Redis.from_url(url)
    db3.hset(key, "t", b"in db 3")
    return url, db3


async def test_the_db_of_the_url_is_selected(
    services: Services, unique: Callable[[str], str]
) -> None:
    key = unique("reads")
    url, db3 = in_db3(services.redis_url, key)
    reads = RedisReads(url)
    try:
        assert await reads.hget([key], "t") == [b"in db 3"]
        default = RedisReads(services.redis_url)
        assert await default.hget([key], "t") == [None]
        await default.close()
    finally:
        await reads.close()
        db3.delete(key)


async def test_a_refused_connection_is_a_connection_error() -> None:
    reads = RedisReads("redis://127.0.0.1:1/0")
    with pytest.raises(ConnectionError):
        await reads.hget(["k"], "t")


def test_the_blocking_reader_pairs_replies_per_thread_and_raises_redis_errors(
    services: Services, unique: Callable[[str], str]
) -> None:
    prefix = unique("blocking")
    sync = fill(services.redis_url, prefix)
    reads = BlockingRedisReads(services.redis_url)
    wrong: list[object] = []

    def reader(n: int) -> None:
        for i in range(200):
            j = (n * 13 + i) % 50
            keys = [f"{prefix}:{j}", f"{prefix}:missing", f"{prefix}:{(j * 7) % 50}"]
            got = reads.hget_many(keys, "t")
            if got != [f"tiles-{j}".encode(), None, f"tiles-{(j * 7) % 50}".encode()]:
                wrong.append(got)

    try:
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            reads.hget_many([f"{prefix}:1", f"{prefix}:string"], "t")
        assert reads.hget_many([f"{prefix}:2"], "t") == [b"tiles-2"]  # still in step
        assert reads.hget_many([], "t") == []
    finally:
        reads.close()
        sync.delete(*[f"{prefix}:{i}" for i in range(50)], f"{prefix}:string")


def _own_address(reads: BlockingRedisReads) -> str:
    sock: socket.socket = reads._local.connection.sock
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_a_connection_redis_closed_is_replaced_and_a_refused_one_raises(
    services: Services, unique: Callable[[str], str]
) -> None:
    key = unique("blocking")
    admin = redis.Redis.from_url(services.redis_url)
    admin.hset(key, "t", b"x")
    reads = BlockingRedisReads(services.redis_url)
    try:
        assert reads.hget_many([key], "t") == [b"x"]
        first = _own_address(reads)
        assert admin.client_kill(first)  # as a Redis restart or an idle timeout would
        assert reads.hget_many([key], "t") == [b"x"]  # sent again, on a new connection
        assert _own_address(reads) != first
    finally:
        reads.close()
        admin.delete(key)
    with pytest.raises(redis.exceptions.ConnectionError, match="cannot connect"):
        BlockingRedisReads("redis://127.0.0.1:1/0").hget_many(["k"], "t")


def test_the_blocking_reader_selects_the_db_and_a_forked_child_connects_anew(
    services: Services, unique: Callable[[str], str]
) -> None:
    key = unique("blocking")
    url, db3 = in_db3(services.redis_url, key)
    reads = BlockingRedisReads(url)
    try:
        assert reads.hget_many([key], "t") == [b"in db 3"]
        assert BlockingRedisReads(services.redis_url).hget_many([key], "t") == [None]
        parent = _own_address(reads)
        pid = os.fork()
        if pid == 0:  # the child: its own connection, and the parent's left open
            ok = reads.hget_many([key], "t") == [b"in db 3"] and _own_address(reads) != parent
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert reads.hget_many([key], "t") == [b"in db 3"]
        assert _own_address(reads) == parent
    finally:
        reads.close()
        db3.delete(key)
