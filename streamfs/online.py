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
) -> FeatureValues:
    """The named features of one entity at ``at_ms`` from its stored tiles (None: no events)."""
    # An unknown entity reads as no events: every function's empty value.
    state = EntityTiles(view.layout) if tiles is None else EntityTiles.decode(view.layout, tiles)
    values = view.finish(state.query(at_ms))
    as_of = at_ms if state.last_event_time_ms is None else max(at_ms, state.last_event_time_ms)
    return FeatureValues(entity_key, {n: values[n] for n in names}, state.last_event_time_ms, as_of)


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
) -> list[OnlineRow]:
    """The features of each entity (in order) at ``at_ms``: one pipelined Redis round trip.

    ``features`` are ``view:feature`` or bare names unique across views; unknown names
    raise :class:`UnknownFeatureError` listing them all. Unknown entities read as
    empty windows (count 0, others null), never as an error.
    """
    wanted = resolve_features(views, features)
    pipe = client.pipeline(transaction=False)
    order: list[tuple[int, str]] = []
    for i, entity in enumerate(entity_keys):
        for view_name in wanted:
            view = views[view_name]
            pipe.hget(online_key(view.name, view.version, entity, namespace), "t")
            order.append((i, view_name))
    raw = pipe.execute()
    per_entity: list[dict[str, FeatureValues]] = [{} for _ in entity_keys]
    for (i, view_name), tiles in zip(order, raw, strict=True):
        per_entity[i][view_name] = decode_values(
            views[view_name], entity_keys[i], tiles, wanted[view_name], at_ms
        )
    rows = []
    for entity, by_view in zip(entity_keys, per_entity, strict=True):
        values: dict[str, Any] = {}
        for view_values in by_view.values():
            values.update(view_values.values)
        ordered = {f: values[f.rpartition(":")[2]] for f in features}
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
