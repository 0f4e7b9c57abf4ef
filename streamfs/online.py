"""The online store: the Redis layout, idempotent batched writes, and exact reads.

Layout (one hash per namespace, feature view version and entity)::

    sfs:v1:{namespace}:{view}@{version}:{entity_key}
        o   offset of the last event folded in (the entity's source partition)
        t   the entity's tiles (streamfs.tiles.EntityTiles.encode)
        e   event time (epoch ms) of the newest event folded in
        w   when the worker wrote it (epoch ms)
    PEXPIRE: the view's TTL (longer than its longest window plus one hop)

Redis keeps per-hop partial aggregates, not finished values: a read at time ``t``
merges the tiles of each window at ``t`` (DESIGN §3), so a 1h count falls to 0 an
hour after the last event with no worker action, and online equals offline.

Writes are idempotent: a Lua script replaces the hash only when the incoming offset
is greater than the stored one. An entity's events all come from one partition, so
its offsets only grow; a batch replayed after a crash carries offsets already
stored and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamfs.errors import StreamfsError
from streamfs.tiles import EntityTiles, Layout

KEY_PREFIX = "sfs:v1"

# KEYS[1] = entity hash; ARGV = offset, tiles, last event time, write time, ttl ms.
WRITE_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], 'o')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 't', ARGV[2], 'e', ARGV[3], 'w', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class UnknownFeatureError(StreamfsError):
    """A read named features that no registered view has; the message lists them."""


DEFAULT_NAMESPACE = "default"


def online_key(
    view: str, version: int, entity_key: str | int, namespace: str = DEFAULT_NAMESPACE
) -> str:
    """The Redis key of one entity of one view version; ``namespace`` separates deployments
    (or tests) sharing one Redis."""
    return f"{KEY_PREFIX}:{namespace}:{view}@{version}:{entity_key}"


@dataclass(frozen=True, slots=True)
class OnlineWrite:
    """One entity's new state for one view, ready for :data:`WRITE_SCRIPT`."""

    key: str
    offset: int
    tiles: bytes
    last_event_time_ms: int
    ttl_ms: int


def _no_derived(values: dict[str, Any]) -> dict[str, Any]:
    return values


@dataclass(frozen=True, slots=True)
class ViewLayout:
    """What a reader needs of a view: name, state version, tile layout, derived features.

    ``finish(values)`` adds the derived features to the merged tile values.
    """

    name: str
    version: int
    layout: Layout
    derived_names: tuple[str, ...] = ()
    finish: Callable[[dict[str, Any]], dict[str, Any]] = _no_derived

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.layout.features) + self.derived_names


@dataclass(frozen=True, slots=True)
class FeatureValues:
    """One entity's values at ``as_of_ms``, with the newest event time behind them."""

    entity_key: str | int
    values: dict[str, Any]
    last_event_time_ms: int | None
    as_of_ms: int


class OnlineWriter:
    """Writes a batch of entity states to Redis in one pipeline, idempotently."""

    def __init__(self, client: Any, clock: Callable[[], int]) -> None:
        self._client = client  # redis.asyncio.Redis
        self._clock = clock
        self._script = client.register_script(WRITE_SCRIPT)

    async def write(self, writes: Sequence[OnlineWrite]) -> int:
        """Apply ``writes``; returns how many changed Redis (replays change nothing)."""
        if not writes:
            return 0
        now = self._clock()
        pipe = self._client.pipeline(transaction=False)
        for w in writes:
            await self._script(
                keys=[w.key],
                args=[w.offset, w.tiles, w.last_event_time_ms, now, w.ttl_ms],
                client=pipe,
            )
        results = await pipe.execute()
        return sum(int(r) for r in results)


def resolve_features(
    views: Mapping[str, ViewLayout], features: Sequence[str]
) -> dict[str, list[str]]:
    """Group requested feature names by view; ``view:feature`` or a bare unique name.

    Unknown names raise :class:`UnknownFeatureError` naming every one of them.
    """
    by_name: dict[str, list[str]] = {}
    for view in views.values():
        for name in view.feature_names:
            by_name.setdefault(name, []).append(view.name)
    wanted: dict[str, list[str]] = {}
    unknown: list[str] = []
    for feature in features:
        view_name, sep, name = feature.rpartition(":")
        if sep:
            if view_name in views and name in views[view_name].feature_names:
                wanted.setdefault(view_name, []).append(name)
                continue
        elif len(by_name.get(feature, ())) == 1:
            wanted.setdefault(by_name[feature][0], []).append(feature)
            continue
        unknown.append(feature)
    if unknown:
        raise UnknownFeatureError(f"unknown features: {', '.join(unknown)}")
    return wanted


def decode_values(
    view: ViewLayout,
    entity_key: str | int,
    tiles: bytes | None,
    names: Sequence[str],
    at_ms: int,
    cache: ValueCache | None = None,
) -> FeatureValues:
    """The named features of one entity at ``at_ms`` from its stored tiles (None: no events)."""
    if cache is not None and tiles is not None:
        values, last = cache.values(view, tiles, at_ms)
    else:
        # An unknown entity reads as no events: every function's empty value.
        state = (
            EntityTiles(view.layout) if tiles is None else EntityTiles.decode(view.layout, tiles)
        )
        values, last = view.finish(state.query(at_ms)), state.last_event_time_ms
    as_of = at_ms if last is None else max(at_ms, last)
    return FeatureValues(entity_key, {n: values[n] for n in names}, last, as_of)


class ValueCache:
    """Recently computed values, so a hot entity is not decoded again on every read.

    Decoding an entity's tiles costs far more than a Redis round trip, and a read's
    values depend only on the stored bytes and on which hop each group's window
    starts and ends in at the read time. So the key is ``(view, version, bytes, hop
    index of the read time per group)``: exact, never stale (new bytes, new key). A
    state whose newest event is after the read time is computed afresh, since the
    read then happens at that event's time. Bounded: full means cleared.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[Any, ...], tuple[dict[str, Any], int | None]] = {}
        self.hits = self.misses = 0

    def values(
        self, view: ViewLayout, tiles: bytes, at_ms: int
    ) -> tuple[dict[str, Any], int | None]:
        hops = tuple(at_ms // group.hop_ms for group in view.layout.groups)
        key = (view.name, view.version, tiles, hops)
        entry = self._entries.get(key)
        if entry is not None and (entry[1] is None or entry[1] <= at_ms):
            self.hits += 1
            return entry
        self.misses += 1
        state = EntityTiles.decode(view.layout, tiles)
        entry = (view.finish(state.query(at_ms)), state.last_event_time_ms)
        if entry[1] is None or entry[1] <= at_ms:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = entry
        return entry


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """One entity's requested features at ``as_of_ms``, and per view the event time of the
    newest event behind them (``None``: no event yet), so a caller can judge freshness."""

    entity_key: str | int
    values: dict[str, Any]
    last_event_time_ms: dict[str, int | None]
    as_of_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity_key,
            "features": self.values,
            "last_event_time_ms": self.last_event_time_ms,
            "as_of_ms": self.as_of_ms,
        }


def read_online(
    client: Any,
    views: Mapping[str, ViewLayout],
    entity_keys: Sequence[str | int],
    features: Sequence[str],
    at_ms: int,
    namespace: str = DEFAULT_NAMESPACE,
    cache: ValueCache | None = None,
) -> list[OnlineRow]:
    """The features of each entity (in order) at ``at_ms``: one pipelined Redis round trip.

    ``features`` are ``view:feature`` or bare names unique across views; unknown names
    raise :class:`UnknownFeatureError` listing them all. Unknown entities read as
    empty windows (count 0, others null), never as an error.
    """
    reads = OnlineReads(views, entity_keys, features, namespace)
    pipe = client.pipeline(transaction=False)
    for key in reads.keys:
        pipe.hget(key, "t")
    return reads.rows(pipe.execute(), at_ms, cache)


async def read_online_async(
    client: Any,
    views: Mapping[str, ViewLayout],
    entity_keys: Sequence[str | int],
    features: Sequence[str],
    at_ms: int,
    namespace: str = DEFAULT_NAMESPACE,
    cache: ValueCache | None = None,
) -> list[OnlineRow]:
    """:func:`read_online` with a ``redis.asyncio`` client (the HTTP server's)."""
    reads = OnlineReads(views, entity_keys, features, namespace)
    if len(reads.keys) == 1:  # no pipeline object for the common single-key read
        raw = [await client.hget(reads.keys[0], "t")]
    else:
        pipe = client.pipeline(transaction=False)
        for key in reads.keys:
            pipe.hget(key, "t")
        raw = await pipe.execute()
    return reads.rows(raw, at_ms, cache)


class OnlineReads:
    """One read, split so sync and async clients share it: the keys to fetch, then rows."""

    __slots__ = ("_entity_keys", "_features", "_order", "_views", "_wanted", "keys")

    def __init__(
        self,
        views: Mapping[str, ViewLayout],
        entity_keys: Sequence[str | int],
        features: Sequence[str],
        namespace: str,
    ) -> None:
        self._views, self._entity_keys, self._features = views, entity_keys, features
        self._wanted = resolve_features(views, features)
        self._order: list[tuple[int, str]] = []
        self.keys: list[str] = []
        for i, entity in enumerate(entity_keys):
            for view_name in self._wanted:
                view = views[view_name]
                self.keys.append(online_key(view.name, view.version, entity, namespace))
                self._order.append((i, view_name))

    def rows(
        self, raw: Sequence[bytes | None], at_ms: int, cache: ValueCache | None = None
    ) -> list[OnlineRow]:
        """The rows from the fetched tiles (``raw``, in the order of :attr:`keys`)."""
        views, wanted, entity_keys = self._views, self._wanted, self._entity_keys
        per_entity: list[dict[str, FeatureValues]] = [{} for _ in entity_keys]
        for (i, view_name), tiles in zip(self._order, raw, strict=True):
            per_entity[i][view_name] = decode_values(
                views[view_name], entity_keys[i], tiles, wanted[view_name], at_ms, cache
            )
        rows = []
        for entity, by_view in zip(entity_keys, per_entity, strict=True):
            values: dict[str, Any] = {}
            for view_values in by_view.values():
                values.update(view_values.values)
            ordered = {f: values[f.rpartition(":")[2]] for f in self._features}
            rows.append(
                OnlineRow(
                    entity,
                    ordered,
                    {v: fv.last_event_time_ms for v, fv in by_view.items()},
                    max((fv.as_of_ms for fv in by_view.values()), default=at_ms),
                )
            )
        return rows


class OnlineReader:
    """Reads features for many entities in one pipelined round trip (sync redis client)."""

    def __init__(
        self,
        client: Any,
        views: Mapping[str, ViewLayout],
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self._client = client  # redis.Redis
        self._views = views
        self._clock = clock
        self._namespace = namespace

    def read(
        self,
        entity_keys: Sequence[str | int],
        features: Sequence[str],
        at_ms: int | None = None,
    ) -> list[OnlineRow]:
        """:func:`read_online` at ``at_ms`` (default: now, by the reader's clock)."""
        at = self._clock() if at_ms is None else at_ms
        return read_online(self._client, self._views, entity_keys, features, at, self._namespace)
