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
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamfs.errors import StreamfsError
from streamfs.tiles import EntityTiles, Layout
from streamfs.windows import as_of_ms

KEY_PREFIX = "sfs:v1"

# KEYS = entity hashes; ARGV[1] = write time, then per key: offset, tiles, last event
# time, ttl ms. A hash changes only when the incoming offset is greater than its own.
WRITE_SCRIPT = """
local now = ARGV[1]
local changed = 0
for i, key in ipairs(KEYS) do
  local a = 4 * i - 2
  local stored = redis.call('HGET', key, 'o')
  if not stored or tonumber(stored) < tonumber(ARGV[a]) then
    redis.call('HSET', key, 'o', ARGV[a], 't', ARGV[a + 1], 'e', ARGV[a + 2], 'w', now)
    redis.call('PEXPIRE', key, ARGV[a + 3])
    changed = changed + 1
  end
end
return changed
"""
WRITE_CHUNK = 256
"""Entities per script call: Redis runs a script alone, so calls stay short (about a
millisecond) and other clients' reads slip in between them."""

# KEYS = entity hashes. Per key, its tiles if they are a backfill's seed (a negative
# offset, streamfs.offline.backfill.seed_offset), else nil.
SEEDS_SCRIPT = """
local seeds = {}
for i, key in ipairs(KEYS) do
  local stored = redis.call('HMGET', key, 'o', 't')
  if stored[1] and tonumber(stored[1]) < 0 then
    seeds[i] = stored[2]
  else
    seeds[i] = false
  end
end
return seeds
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
    ``feature_names`` (tile features, then derived ones) and ``name_set`` are computed
    once: every read resolves names against them.
    """

    name: str
    version: int
    layout: Layout
    derived_names: tuple[str, ...] = ()
    finish: Callable[[dict[str, Any]], dict[str, Any]] = _no_derived
    feature_names: tuple[str, ...] = field(init=False)
    name_set: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.layout.features) + self.derived_names
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "name_set", frozenset(names))


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
        self._seeds_script = client.register_script(SEEDS_SCRIPT)

    async def write(self, writes: Sequence[OnlineWrite]) -> int:
        """Apply ``writes``; returns how many changed Redis (replays change nothing).

        One pipeline of script calls, each over up to :data:`WRITE_CHUNK` entities: the
        client packs one command per chunk instead of one per entity."""
        if not writes:
            return 0
        now = self._clock()
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(writes), WRITE_CHUNK):
            chunk = writes[start : start + WRITE_CHUNK]
            args: list[Any] = [now]
            for w in chunk:
                args += (w.offset, w.tiles, w.last_event_time_ms, w.ttl_ms)
            await self._script(keys=[w.key for w in chunk], args=args, client=pipe)
        results = await pipe.execute()
        return sum(int(r) for r in results)

    async def seeds(self, keys: Sequence[str]) -> list[bytes | None]:
        """Per key, the tiles a backfill seeded there (``None``: none, or the worker's own
        state). One pipeline of script calls over up to :data:`WRITE_CHUNK` keys each: a
        batch asks this for every entity it has no state for, and a reply per key cost
        the worker about 5% of its thread (py-spy) where one per chunk costs little."""
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(keys), WRITE_CHUNK):
            await self._seeds_script(keys=keys[start : start + WRITE_CHUNK], client=pipe)
        return [seed for chunk in await pipe.execute() for seed in chunk]


def resolve_features(
    views: Mapping[str, ViewLayout], features: Sequence[str]
) -> dict[str, list[str]]:
    """Group requested feature names by view; ``view:feature`` or a bare unique name.

    Unknown names raise :class:`UnknownFeatureError` naming every one of them.
    """
    by_name: dict[str, list[str]] | None = None  # built only if a bare name is asked
    wanted: dict[str, list[str]] = {}
    unknown: list[str] = []
    for feature in features:
        view_name, sep, name = feature.rpartition(":")
        if sep:
            view = views.get(view_name)
            if view is not None and name in view.name_set:
                wanted.setdefault(view_name, []).append(name)
                continue
        else:
            if by_name is None:
                by_name = {}
                for view in views.values():
                    for known in view.feature_names:
                        by_name.setdefault(known, []).append(view.name)
            owners = by_name.get(feature, ())
            if len(owners) == 1:
                wanted.setdefault(owners[0], []).append(feature)
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
    if cache is not None:
        values, last = cache.values(view, entity_key, tiles, at_ms)
    else:
        values, last = entity_values(view, tiles, at_ms)
    as_of = at_ms if last is None or last <= at_ms else last
    return FeatureValues(entity_key, {n: values[n] for n in names}, last, as_of)


FOREVER_MS = 2**63 - 1


def validity(state: EntityTiles, as_of: int) -> tuple[int, int]:
    """``(from_ms, until_ms)``: the query times ``s`` with ``from_ms <= s < until_ms`` at which
    ``state`` has the same values as at ``as_of`` (``as_of >= state.last_event_time_ms``).

    Between window boundaries nothing changes (DESIGN §3: a window's tiles are fixed by
    the hop its read time falls in), so the values hold from the latest hop start at or
    before ``as_of``. After it they change only when a window's tail passes a tile that
    holds something: tiles after the head are empty (no event is newer than the last
    one), and a tail passing empty tiles merges the same states. For a feature of window
    ``W`` and hop ``h`` whose oldest stored tile in the window is ``k``, that is at
    ``(k + 1) * h + W``; a feature with no tile in its window stays empty until new
    state arrives (new bytes). Conservative where a tile holds nothing for a feature (a
    skipped input): it may end the validity early, never late.
    """
    layout = state.layout
    from_ms, until_ms = 0, FOREVER_MS
    for group, rows in zip(layout.groups, state.groups, strict=True):
        hop_ms = group.hop_ms
        head = as_of // hop_ms
        from_ms = max(from_ms, head * hop_ms)
        if not rows:
            continue
        indexes = sorted(rows)
        if indexes[-1] > head:  # not written by the worker's rule: trust only this hop
            until_ms = min(until_ms, (head + 1) * hop_ms)
            continue
        for i in group.members:
            window_ms = layout.features[i].window.window_ms
            at = bisect_left(indexes, (as_of - window_ms) // hop_ms)
            if at < len(indexes):
                until_ms = min(until_ms, (indexes[at] + 1) * hop_ms + window_ms)
    return from_ms, until_ms


class _Cached:
    """One entity's values, good while the stored bytes stay ``tiles`` and the read's
    ``as_of`` stays in ``[from_ms, until_ms)`` (:func:`validity`)."""

    __slots__ = ("from_ms", "last_event_time_ms", "tiles", "until_ms", "values", "view")

    def __init__(
        self,
        view: ViewLayout,
        tiles: bytes,
        values: dict[str, Any],
        last_event_time_ms: int | None,
        from_ms: int,
        until_ms: int,
    ) -> None:
        self.view, self.tiles, self.values = view, tiles, values
        self.last_event_time_ms, self.from_ms, self.until_ms = last_event_time_ms, from_ms, until_ms


class ValueCache:
    """Computed values per (view, entity), so a repeated read is a lookup, not a decode.

    Decoding an entity's tiles and merging its windows costs far more than the Redis
    round trip that fetched them. An entry holds the values computed from one stored
    state (the bytes read from Redis) with the interval of read times they are exact
    for (:func:`validity`): the next instant a window boundary drops a stored tile.
    A read uses the entry only if Redis returned the very same bytes (new state from
    the worker, or an evicted tile, means new bytes: computed afresh), the view is the
    same layout object, and its ``as_of`` is inside the interval. So a cached read is
    exactly the read without cache, at any time; a 1 h count still falls to 0 an hour
    after the last event. A key gone from Redis (TTL) reads as no state, never cached
    values. Bounded: past ``max_entries`` the oldest entries go first (0: no caching).
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, int, str | int], _Cached] = {}
        self._empty: dict[str, tuple[ViewLayout, dict[str, Any]]] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def values(
        self, view: ViewLayout, entity_key: str | int, tiles: bytes | None, at_ms: int
    ) -> tuple[dict[str, Any], int | None]:
        """``(values by name, last event time)`` of the entity at ``at_ms`` (the read time)."""
        if tiles is None:
            return self._empty_values(view, at_ms), None
        key = (view.name, view.version, entity_key)
        entry = self._entries.get(key)
        if entry is not None and entry.view is view and entry.tiles == tiles:
            last = entry.last_event_time_ms
            as_of = at_ms if last is None or last <= at_ms else last
            if entry.from_ms <= as_of < entry.until_ms:
                self.hits += 1
                return entry.values, last
        self.misses += 1
        state = EntityTiles.decode(view.layout, tiles)
        last = state.last_event_time_ms
        as_of = as_of_ms(at_ms, last)
        values = view.finish(state.query(as_of))
        if self.max_entries <= 0:  # caching off: every read decodes
            return values, last
        from_ms, until_ms = validity(state, as_of)
        if entry is None and len(self._entries) >= self.max_entries:
            oldest = next(iter(self._entries), None)  # the oldest inserted
            if oldest is not None:  # pop, not del: SDK threads may share a store
                self._entries.pop(oldest, None)
        self._entries[key] = _Cached(view, tiles, values, last, from_ms, until_ms)
        return values, last

    def _empty_values(self, view: ViewLayout, at_ms: int) -> dict[str, Any]:
        known = self._empty.get(view.name)
        if known is not None and known[0] is view:
            return known[1]
        values = view.finish(EntityTiles(view.layout).query(at_ms))  # the same at any time
        self._empty[view.name] = (view, values)
        return values


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
    features: Sequence[str] | Selection,
    at_ms: int,
    namespace: str = DEFAULT_NAMESPACE,
    cache: ValueCache | None = None,
) -> list[OnlineRow]:
    """The features of each entity (in order) at ``at_ms``: one pipelined Redis round trip
    through ``client``, a ``redis.Redis`` or (leaner, what the SDK uses) a
    :class:`~streamfs.serving.redisreads.BlockingRedisReads`.

    ``features`` are ``view:feature`` or bare names unique across views (or a
    :class:`Selection` of them); unknown names raise :class:`UnknownFeatureError`
    listing them all. Unknown entities read as empty windows (count 0, others null),
    never as an error.
    """
    reads = OnlineReads(views, entity_keys, features, namespace)
    if (hget_many := getattr(client, "hget_many", None)) is not None:  # BlockingRedisReads
        raw = hget_many(reads.keys, "t")
    elif len(reads.keys) == 1:  # no pipeline object for the common single-key read
        raw = [client.hget(reads.keys[0], "t")]
    else:
        pipe = client.pipeline(transaction=False)
        for key in reads.keys:
            pipe.hget(key, "t")
        raw = pipe.execute()
    return reads.rows(raw, at_ms, cache)


async def read_online_async(
    client: Any,
    views: Mapping[str, ViewLayout],
    entity_keys: Sequence[str | int],
    features: Sequence[str] | Selection,
    at_ms: int,
    namespace: str = DEFAULT_NAMESPACE,
    cache: ValueCache | None = None,
) -> list[OnlineRow]:
    """:func:`read_online` with a ``redis.asyncio`` client."""
    reads = OnlineReads(views, entity_keys, features, namespace)
    if len(reads.keys) == 1:
        raw = [await client.hget(reads.keys[0], "t")]
    else:
        pipe = client.pipeline(transaction=False)
        for key in reads.keys:
            pipe.hget(key, "t")
        raw = await pipe.execute()
    return reads.rows(raw, at_ms, cache)


@dataclass(frozen=True, slots=True)
class Selection:
    """Requested features resolved against the served views, once: ``wanted`` names per
    view (:func:`resolve_features`), and for each feature as asked, the view answering it
    and its bare name. Unknown names raise :class:`UnknownFeatureError` naming them."""

    features: tuple[str, ...]
    wanted: dict[str, list[str]]
    names: tuple[tuple[str, str, str], ...]

    @classmethod
    def of(cls, views: Mapping[str, ViewLayout], features: Sequence[str]) -> Selection:
        wanted = resolve_features(views, features)
        names = []
        for asked in features:
            view_name, _, bare = asked.rpartition(":")
            if view_name not in wanted or bare not in wanted[view_name]:  # a bare name
                view_name = next(v for v, in_view in wanted.items() if asked in in_view)
            names.append((asked, view_name, bare))
        return cls(tuple(features), wanted, tuple(names))


def entity_values(
    view: ViewLayout, tiles: bytes | None, at_ms: int
) -> tuple[dict[str, Any], int | None]:
    """All of a view's values for one entity at ``at_ms`` and its last event time, decoded
    afresh (no state: every function's empty value)."""
    if tiles is None:
        return view.finish(EntityTiles(view.layout).query(at_ms)), None
    state = EntityTiles.decode(view.layout, tiles)
    return view.finish(state.query(at_ms)), state.last_event_time_ms


class OnlineReads:
    """One read, split so any client can fetch it: the keys to ``HGET`` (field ``t``), then
    the rows from what came back. ``features`` may be a :class:`Selection` resolved
    earlier against the same ``views`` (the server keeps them per catalog snapshot)."""

    __slots__ = ("_entity_keys", "_order", "_selection", "_views", "keys")

    def __init__(
        self,
        views: Mapping[str, ViewLayout],
        entity_keys: Sequence[str | int],
        features: Sequence[str] | Selection,
        namespace: str,
    ) -> None:
        self._views, self._entity_keys = views, entity_keys
        selection = features if isinstance(features, Selection) else Selection.of(views, features)
        self._selection = selection
        self._order: list[tuple[int, ViewLayout]] = []
        self.keys: list[str] = []
        for i, entity in enumerate(entity_keys):
            for view_name in selection.wanted:
                view = views[view_name]
                self.keys.append(online_key(view.name, view.version, entity, namespace))
                self._order.append((i, view))

    def rows(
        self, raw: Sequence[bytes | None], at_ms: int, cache: ValueCache | None = None
    ) -> list[OnlineRow]:
        """The rows from the fetched tiles (``raw``, in the order of :attr:`keys`)."""
        entity_keys = self._entity_keys
        per_entity: list[dict[str, tuple[dict[str, Any], int | None]]] = [{} for _ in entity_keys]
        for (i, view), tiles in zip(self._order, raw, strict=True):
            per_entity[i][view.name] = (
                cache.values(view, entity_keys[i], tiles, at_ms)
                if cache is not None
                else entity_values(view, tiles, at_ms)
            )
        names, rows = self._selection.names, []
        for entity, by_view in zip(entity_keys, per_entity, strict=True):
            as_of = at_ms
            for _, last in by_view.values():
                if last is not None and last > as_of:
                    as_of = last  # the state holds a later event: the answer is as of it
            rows.append(
                OnlineRow(
                    entity,
                    {asked: by_view[view_name][0][bare] for asked, view_name, bare in names},
                    {view_name: last for view_name, (_, last) in by_view.items()},
                    as_of,
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
