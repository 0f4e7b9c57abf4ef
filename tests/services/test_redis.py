"""The local Redis is real: a pipelined round trip with TTLs."""

from __future__ import annotations

from collections.abc import Callable

import redis


def test_pipeline_round_trip_keeps_values_and_ttls(
    redis_url: str, unique: Callable[[str], str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = unique("redis")
    keys = [f"{prefix}:{i}" for i in range(1_000)]
    try:
        with client.pipeline(transaction=False) as pipe:
            for i, key in enumerate(keys):
                pipe.hset(key, mapping={"count": i, "sum": i * 1.5})
                pipe.expire(key, 3600)
            results = pipe.execute()
        assert len(results) == 2 * len(keys)

        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
                pipe.ttl(key)
            read = pipe.execute()
        values, ttls = read[0::2], read[1::2]
        assert [int(v[b"count"]) for v in values] == list(range(1_000))
        assert [float(v[b"sum"]) for v in values] == [i * 1.5 for i in range(1_000)]
        assert all(3590 <= ttl <= 3600 for ttl in ttls)
        # The server is the real one: it reports its own version and that nothing is saved.
        info = client.info("server")
        assert info["redis_version"]
        assert client.config_get("save") == {"save": ""}
    finally:
        client.delete(*keys)
