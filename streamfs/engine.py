"""One partition's batch through the engine: validate, fold into tiles, produce writes.

Faust-free, so it is tested without a broker; :mod:`streamfs.worker` binds it to
Faust tables, the dead-letter producer and Redis.

State lives in a key-value store (a Faust table in the worker)::

    {view}@{version}:{entity_key}  ->  8-byte offset + EntityTiles bytes
    \\x00p:{topic}:{partition}      ->  8-byte last offset processed + 8-byte watermark

:meth:`PartitionEngine.process` reads the store but does not write it: it returns the
new values (``BatchResult.state``), and the worker stores them only after the
dead-letter topic and Redis have accepted the batch. So:

- a crash before the state is stored replays the batch from the old state and gets
  the same results (Redis writes are idempotent by offset; dead letters may be sent
  twice, each carrying its original partition and offset);
- a crash after it replays messages at or below the partition's last processed
  offset, which are skipped whole: not re-validated (a replay must not turn into
  ``late`` rejects against a watermark that already moved past it), not re-counted.
  So is an offset a batch holds twice (a consumer that moved back mid-batch).

The engine keeps the decoded tiles of recently touched entities between batches (a
bounded cache), each next to the stored value's 8-byte offset prefix it stands for.
It still reads the store for every entity and uses its cached tiles only when the
stored prefix is that one: a batch whose state was never stored, or a partition
that another worker moved on while it was away, reads as a mismatch and is decoded
from the store. An entry is taken out while its entity is being folded and put back
only with the new prefix, so a batch abandoned half-way leaves nothing behind.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamfs.definitions import Source
from streamfs.ingest import Event, Message, Reject, Validator
from streamfs.online import DEFAULT_NAMESPACE, OnlineWrite, ViewLayout, online_key
from streamfs.tiles import EntityTiles

_OFFSET = struct.Struct(">q")
_MARKER = struct.Struct(">qq")
_NO_WATERMARK = -(2**63)
MARKER_PREFIX = "\x00p:"


class StateStore(Protocol):
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored values of ``keys``, in order (``None``: not stored)."""
        ...


@dataclass(frozen=True, slots=True)
class ViewPlan:
    """A feature view compiled for the engine: what to fold from each event of its source.

    ``inputs(record)`` returns one input per feature of ``view.layout`` (``None``: the
    event does not count for that feature, e.g. filtered out).
    """

    view: ViewLayout
    source: Source
    inputs: Callable[[Mapping[str, Any]], Sequence[Any]]
    ttl_ms: int
    # How far behind "now" a reader's clock may be: tiles it could still read are kept.
    evict_slack_ms: int = 60_000
    # The view's offline snapshot schema (streamfs.offline.snapshots.SnapshotView);
    # None: the worker writes no snapshots of it.
    snapshot: Any = None


@dataclass(slots=True)
class BatchResult:
    writes: list[OnlineWrite] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)  # to store once the sinks accepted
    # The tiles behind each write, by its Redis key: the offline snapshots value them
    # without decoding. Live objects: read them before the next batch starts.
    tiles: dict[str, EntityTiles] = field(default_factory=dict)
    skipped_replays: int = 0


def state_key(view: ViewLayout, entity_key: str | int) -> str:
    return f"{view.name}@{view.version}:{entity_key}"


def marker_key(topic: str, partition: int) -> str:
    return f"{MARKER_PREFIX}{topic}:{partition}"


class PartitionEngine:
    """Processes batches of one source's messages, one partition at a time."""

    def __init__(
        self,
        source: Source,
        views: Sequence[ViewPlan],
        validator: Validator,
        clock: Callable[[], int],
        namespace: str = DEFAULT_NAMESPACE,
        cache_entities: int = 50_000,
        seeds: Callable[[Sequence[str]], Awaitable[Sequence[bytes | None]]] | None = None,
    ) -> None:
        self.source = source
        self.views = list(views)
        self.validator = validator
        self.clock = clock
        self.namespace = namespace
        self.cache_entities = cache_entities
        # Online keys -> the tiles a backfill seeded there (None: no seed), for entities
        # without state: their history starts from the seed (``streamfs backfill``).
        self.seeds = seeds
        # state key -> (offset prefix of the stored value it equals, decoded tiles)
        self._cache: OrderedDict[str, tuple[bytes, EntityTiles]] = OrderedDict()

    def set_views(self, views: Sequence[ViewPlan]) -> None:
        """Swap in a new set of views (a registry change); takes effect with the next batch."""
        self.views = list(views)

    async def process(
        self, partition: int, messages: Sequence[Message], store: StateStore
    ) -> BatchResult:
        """Fold ``messages`` (one partition, offset order) over the state in ``store``."""
        result = BatchResult()
        m_key = marker_key(self.source.topic, partition)
        raw_marker = store.get_many([m_key])[0]
        last_done, watermark = (
            (-1, _NO_WATERMARK) if raw_marker is None else _MARKER.unpack(raw_marker)
        )
        # Past the last offset stored, each offset once: a consumer that moved back
        # within the batch (a rebalance's seek) hands some messages over twice.
        fresh = []
        for message in messages:
            if message.offset > last_done:
                fresh.append(message)
                last_done = message.offset
        result.skipped_replays = len(messages) - len(fresh)
        if not fresh:
            return result
        watermarks = {} if watermark == _NO_WATERMARK else {partition: watermark}
        validated = await self.validator.validate(fresh, watermarks)
        result.rejects = list(validated.rejects)
        result.events = list(validated.events)
        new_watermark = validated.watermarks.get(partition, _NO_WATERMARK)
        result.state[m_key] = _MARKER.pack(max(m.offset for m in fresh), new_watermark)

        by_entity: dict[str | int, list[Event]] = {}
        for event in validated.events:
            by_entity.setdefault(event.entity_key, []).append(event)
        now = self.clock()
        cache = self._cache
        # One multi-get for every (view, entity) the batch touches.
        work = [(plan, entity) for plan in self.views for entity in by_entity]
        keys = [state_key(plan.view, entity) for plan, entity in work]
        raws = store.get_many(keys)
        seeded = await self._seeds(work, raws)
        for (plan, entity), key, raw in zip(work, keys, raws, strict=True):
            events = by_entity[entity]
            inputs = plan.inputs
            cached = cache.pop(key, None)
            if raw is None:
                seed = seeded.get(key)
                tiles = (
                    EntityTiles(plan.view.layout)
                    if seed is None
                    else EntityTiles.decode(plan.view.layout, seed, lazy=True)
                )
            elif cached is not None and raw[: _OFFSET.size] == cached[0]:
                tiles = cached[1]
            else:
                tiles = EntityTiles.decode(plan.view.layout, raw[_OFFSET.size :], lazy=True)
            for event in events:
                tiles.add_event(event.event_time_ms, inputs(event.record), event.offset)
            tiles.evict(now - plan.evict_slack_ms)
            body = tiles.encode()
            offset = events[-1].offset
            prefix = _OFFSET.pack(offset)
            result.state[key] = prefix + body
            cache[key] = (prefix, tiles)
            if len(cache) > self.cache_entities:
                cache.popitem(last=False)
            assert tiles.last_event_time_ms is not None  # events were folded in
            redis_key = online_key(plan.view.name, plan.view.version, entity, self.namespace)
            result.tiles[redis_key] = tiles
            result.writes.append(
                OnlineWrite(
                    redis_key,
                    offset,
                    body,
                    tiles.last_event_time_ms,
                    plan.ttl_ms,
                )
            )
        return result

    async def _seeds(
        self, work: Sequence[tuple[ViewPlan, str | int]], raws: Sequence[bytes | None]
    ) -> dict[str, bytes]:
        """The seeded tiles of the (view, entity) pairs that have no state, by state key."""
        if self.seeds is None:
            return {}
        missing = [pair for pair, raw in zip(work, raws, strict=True) if raw is None]
        if not missing:
            return {}
        found = await self.seeds(
            [online_key(p.view.name, p.view.version, e, self.namespace) for p, e in missing]
        )
        return {
            state_key(plan.view, entity): body
            for (plan, entity), body in zip(missing, found, strict=True)
            if body is not None
        }
