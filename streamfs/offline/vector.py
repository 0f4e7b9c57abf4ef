"""The numpy engine of ``get_historical_features``: every window of every query at once.

Input: the view's events sorted by ``(entity, event_time, offset)`` (DuckDB reads,
filters and sorts them, and evaluates each feature's input and selection per
event: :meth:`EventPlan.sql_columns`), and the query points as dense entity ids and
epoch-ms times. Output: one Arrow array per feature, in query order.

Per selection (events that count for a feature: filter true, input not null) and
window, each query gets an index range of the sorted events
(:class:`~streamfs.offline.prefix.Timeline`); count, sum, mean, variance, stddev,
first and last are read off prefix sums and range ends
(:mod:`streamfs.offline.prefix`), min and max off a sparse table of hop buckets
(:mod:`streamfs.offline.extrema`). Empty windows give DESIGN §3's empty values:
count and sum 0, the rest null.

Entities are independent, so the work is cut into chunks of whole entities (a few
hundred thousand events each): a chunk's arrays stay in the CPU caches between
passes, and chunks run on several threads (numpy releases the GIL in its loops).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from streamfs.offline.extrema import window_extreme
from streamfs.offline.prefix import (
    F64,
    I64,
    FloatSums,
    Runs,
    Timeline,
    pop_var,
    prefix,
    window_start,
)
from streamfs.offline.sql import VectorFeature

ARROW_TYPES = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}
_NEEDS_VALUE = frozenset({"sum", "mean", "variance", "stddev", "first", "last", "min", "max"})
_FLOAT_ONLY = frozenset({"variance", "stddev"})
CHUNK_EVENTS = 100_000  # per chunk: arrays of under 1 MB, cache-sized
Bool = NDArray[np.bool_]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EventPlan:
    """The per-event columns the features need, each computed once: ``v{i}`` inputs,
    ``m{i}`` selections (``TRUE`` needs none)."""

    values: dict[str, str]  # input SQL -> column
    selections: dict[str, str]  # selection SQL -> column

    @staticmethod
    def of(features: Sequence[VectorFeature]) -> EventPlan:
        values: dict[str, str] = {}
        selections: dict[str, str] = {}
        for f in features:
            if f.function in _NEEDS_VALUE:
                values.setdefault(f.value, f"v{len(values)}")
            if f.selection != "TRUE":
                selections.setdefault(f.selection, f"m{len(selections)}")
        return EventPlan(values, selections)

    def sql_columns(self) -> list[str]:
        """``expression AS column`` for the event query."""
        return [f"{sql} AS {c}" for sql, c in (self.values | self.selections).items()]


@dataclass(frozen=True, slots=True)
class _Events:
    """The sorted events; each chunk converts its own rows to numpy (small copies that
    reuse memory, where whole columns would each take fresh pages)."""

    table: pa.Table
    ids: NDArray[np.int32]  # entity id per event, whole column (to cut chunks)
    numbers: dict[tuple[str, bool], str]  # (input SQL, as float) -> column
    masks: dict[str, str]  # selection SQL -> column

    @staticmethod
    def of(events: pa.Table, plan: EventPlan, features: Sequence[VectorFeature]) -> _Events:
        numbers: dict[tuple[str, bool], str] = {}
        for f in features:
            if f.function in _NEEDS_VALUE and f.function not in ("first", "last"):
                column = plan.values[f.value]
                integers = pa.types.is_integer(events.schema.field(column).type)
                numbers[f.value, f.function in _FLOAT_ONLY or not integers] = column
        ids = _numpy(events.column("_k"), np.int32)
        return _Events(events, ids, numbers, plan.selections)

    def rows(self, start: int, stop: int) -> _Rows:
        part = self.table.slice(start, stop - start)
        numbers = {}
        for (sql, as_float), name in self.numbers.items():
            column = part.column(name)
            if column.null_count:
                column = pc.fill_null(column, 0)  # not selected: any value
            if as_float and not pa.types.is_floating(column.type):
                column = column.cast(pa.float64())  # integers, decimals (1.5 * items)
            numbers[sql, as_float] = _numpy(column, np.float64 if as_float else np.int64)
        masks = {sql: _numpy(part.column(name), np.bool_) for sql, name in self.masks.items()}
        ids = self.ids[start:stop].astype(np.int64)
        return _Rows(ids, _numpy(part.column("_ts"), np.int64), numbers, masks)


@dataclass(frozen=True, slots=True)
class _Rows:
    """One chunk's events as numpy."""

    ids: I64
    times: I64
    numbers: dict[tuple[str, bool], NDArray[Any]]  # (input SQL, as float) -> values
    masks: dict[str, Bool]  # selection SQL -> mask


@dataclass(slots=True)
class _Selection:
    """The events of one selection in a chunk: positions in the chunk, timeline, times."""

    positions: I64 | None  # None: every event
    timeline: Timeline
    times: I64
    bounds: dict[tuple[str, int, int], I64] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Queries:
    entities: I64
    times: I64
    valid: Bool


@dataclass(frozen=True, slots=True)
class SortedQueries:
    """Query points sorted by ``(entity, time)`` (``order``: their input positions)."""

    order: I64
    queries: _Queries


def sort_queries(entities: I64, times: I64, valid: Bool) -> SortedQueries:
    """Sort the queries ``(entity id, time ms)`` where ``valid``; the others come first.

    Needs no events, so it may run while DuckDB reads them.
    """
    q_entities, q_times = np.where(valid, entities, 0), np.where(valid, times, 0)
    order = _query_order(q_entities, q_times)
    return SortedQueries(order, _Queries(q_entities[order], q_times[order], valid[order]))


Column = tuple[NDArray[Any], Bool | None]  # values, and where present (None: everywhere)


class _Chunk:
    """The features over one chunk: events ``[start, stop)`` and the queries of their entities."""

    def __init__(self, events: _Events, start: int, stop: int, queries: _Queries, n: int) -> None:
        self.rows = events.rows(start, stop)
        self.start = start
        self.q = queries
        self.n_entities = n
        ids, times = self.rows.ids, self.rows.times
        self.selections = {"TRUE": _Selection(None, Timeline.build(ids, times, n), times)}
        self.cache: dict[tuple[Any, ...], Any] = {}

    def memo(self, key: tuple[Any, ...], make: Callable[[], T]) -> T:
        if key not in self.cache:
            self.cache[key] = make()
        found: T = self.cache[key]
        return found

    def selection(self, sql: str) -> _Selection:
        found = self.selections.get(sql)
        if found is None:
            mask = self.rows.masks[sql]
            base = self.selections["TRUE"]
            if mask.all():
                found = base
            else:
                found = _Selection(
                    np.flatnonzero(mask), base.timeline.subset(mask), base.times[mask]
                )
            self.selections[sql] = found
        return found

    def find(self, s: _Selection, what: str, window_ms: int = 0, hop_ms: int = 0) -> I64:
        """Range ends per query: ``hi`` past ``t``, ``lo`` at the tail, ``mid`` at its hop."""
        key = (what, window_ms, hop_ms)
        found = s.bounds.get(key)
        if found is None:
            q, t = self.q, self.q.times
            if what == "hi":
                found = s.timeline.find(q.entities, t, "right", q.valid)
            elif what == "lo":
                start = window_start(t, window_ms, hop_ms)
                found = s.timeline.find(q.entities, start, "left", q.valid)
            else:
                found = s.timeline.find(q.entities, t - t % hop_ms, "left", q.valid)
            s.bounds[key] = found
        return found

    def values(self, f: VectorFeature, s: _Selection) -> NDArray[Any]:
        """The input over the selection: int64 if integers (exact sums), else float64."""

        def make() -> NDArray[Any]:
            as_float = f.function in _FLOAT_ONLY or (f.value, False) not in self.rows.numbers
            values = self.rows.numbers[f.value, as_float]
            return values if s.positions is None else values[s.positions]

        return self.memo(("values", f.value, f.selection, f.function in _FLOAT_ONLY), make)

    def feature(self, f: VectorFeature) -> Column:
        """The feature at the chunk's queries; first/last as positions in all events."""
        s = self.selection(f.selection)
        hi = self.find(s, "hi")
        lo = self.find(s, "lo", f.window_ms, f.hop_ms)
        n = hi - lo
        present = n > 0
        if f.function == "count":
            return n, None
        if f.function in ("first", "last"):
            at = np.where(present, lo if f.function == "first" else hi - 1, 0)
            if s.positions is not None and len(s.positions):
                at = s.positions[at]
            return at + self.start, present
        values = self.values(f, s)
        if f.function in ("min", "max"):
            mid = self.find(s, "mid", 0, f.hop_ms)
            kind: Literal["min", "max"] = "min" if f.function == "min" else "max"
            ids = self.memo(("entities", f.selection), s.timeline.entities)
            return window_extreme(kind, values, ids, s.times, f.hop_ms, (lo, mid, hi))
        with np.errstate(invalid="ignore", divide="ignore"):
            if values.dtype == np.int64:  # sum or mean: exact integer sums
                sums = self.memo(("int", f.value, f.selection), lambda: prefix(values))
                total = sums[hi] - sums[lo]
                return (total, None) if f.function == "sum" else (total / n, present)
            return self.float_feature(f, s, values, lo, hi)

    def float_feature(
        self, f: VectorFeature, s: _Selection, values: F64, lo: I64, hi: I64
    ) -> Column:
        key = (f.value, f.selection)
        ids = self.memo(("entities", f.selection), s.timeline.entities)
        runs = self.memo(("runs", f.selection), lambda: Runs.of(ids))
        sums, deviation = self.memo(
            ("float", *key), lambda: FloatSums.build(values, runs, self.n_entities)
        )
        n = hi - lo
        if f.function in ("sum", "mean"):
            total = sums.sum(lo, hi, self.q.entities)
            return (total, None) if f.function == "sum" else (total / n, n > 0)
        squares = self.memo(
            ("squares", *key),
            lambda: FloatSums.build(deviation * deviation, runs, self.n_entities)[0],
        )
        var = pop_var(sums, squares, values, lo, hi, self.q.entities)
        return (np.sqrt(var) if f.function == "stddev" else var), n > 0


def _numpy(column: pa.ChunkedArray | pa.Array, dtype: type[np.generic]) -> NDArray[Any]:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _query_order(entities: I64, times: I64) -> I64:
    """Queries sorted by ``(entity, time)``, so each chunk's are contiguous and ascending."""
    if len(times) == 0:
        return np.zeros(0, np.int64)
    low = int(times.min())
    span = int(times.max()) - low + 1
    if (int(entities.max()) + 1) * span < 2**62:
        order: I64 = np.argsort(entities * span + (times - low), kind="stable")
        return order
    return np.lexsort((times, entities))


def _cuts(ids: NDArray[np.int32], n_entities: int, target: int) -> I64:
    """Entity ids where chunks of about ``target`` events start (0 first, ``n_entities`` last)."""
    pieces = max(1, len(ids) // target)
    if pieces == 1:
        return np.array([0, n_entities], np.int64)
    per_entity = np.cumsum(np.bincount(ids, minlength=n_entities))
    inner = np.searchsorted(per_entity, np.arange(1, pieces) * (len(ids) / pieces)) + 1
    return np.unique(np.concatenate([[0], inner, [n_entities]])).astype(np.int64)


def compute(
    features: Sequence[VectorFeature],
    plan: EventPlan,
    events: pa.Table,
    queries: SortedQueries,
    n_entities: int,
    threads: int | None = None,
) -> dict[str, pa.Array]:
    """Each feature's values at every query (:func:`sort_queries`), in input order.

    ``events`` has ``_k`` (entity id, ``0 <= id < n_entities``), ``_ts`` and the plan's
    columns, sorted by ``(_k, _ts, offset)``. Invalid queries get empty values.
    """
    data = _Events.of(events, plan, features)
    order, q = queries.order, queries.queries
    cuts = _cuts(data.ids, n_entities, CHUNK_EVENTS)
    e_at = np.searchsorted(data.ids, cuts)
    q_at = np.searchsorted(q.entities, cuts)

    def run(i: int) -> list[Column]:
        a, b = slice(int(q_at[i]), int(q_at[i + 1])), (int(e_at[i]), int(e_at[i + 1]))
        mine = _Queries(q.entities[a], q.times[a], q.valid[a])
        chunk = _Chunk(data, b[0], b[1], mine, n_entities)
        return [chunk.feature(f) for f in features]

    workers = threads or _cores()
    with ThreadPoolExecutor(max(1, min(workers, len(cuts) - 1))) as pool:
        parts = list(pool.map(run, range(len(cuts) - 1)))
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    out = {}
    for j, f in enumerate(features):
        values = np.concatenate([p[j][0] for p in parts])[back]
        masks = [p[j][1] for p in parts]
        present = None if all(m is None for m in masks) else _present(parts, j)[back]
        if f.function in ("first", "last"):
            column = events.column(plan.values[f.value])
            if len(column) == 0:
                out[f.name] = pa.nulls(len(values), ARROW_TYPES[f.dtype])
                continue
            positions = np.minimum(values, len(column) - 1)  # empty windows point anywhere
            array = column.take(pa.array(positions)).combine_chunks()
        else:
            array = pa.array(values)
        if present is not None and not present.all():
            array = pc.if_else(pa.array(present), array, pa.scalar(None, array.type))
        out[f.name] = array.cast(ARROW_TYPES[f.dtype])
    return out


def _cores() -> int:
    """The cores this process may run on (all of them where that cannot be asked)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _present(parts: list[list[Column]], j: int) -> Bool:
    chunks = []
    for p in parts:
        values, mask = p[j]
        chunks.append(np.ones(len(values), np.bool_) if mask is None else mask)
    return np.concatenate(chunks)
