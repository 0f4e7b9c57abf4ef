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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    changes,
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


@dataclass(slots=True)
class _Selection:
    """The events of one selection: positions in the sorted events, timeline, ids, times."""

    positions: I64 | None  # None: every event
    timeline: Timeline
    entities: I64
    times: I64
    bounds: dict[tuple[str, int, int], I64] = field(default_factory=dict)


class _Engine:
    """Caches for one view: selections, their index ranges, value arrays, prefix sums."""

    def __init__(
        self,
        events: pa.Table,
        plan: EventPlan,
        entities: I64,
        times: I64,
        valid: NDArray[np.bool_],
        n_entities: int,
    ) -> None:
        self.events = events
        self.plan = plan
        self.n_entities = n_entities
        ids = _numpy(events.column("_k"), np.int64)
        ts = _numpy(events.column("_ts"), np.int64)
        timeline = Timeline.build(ids, ts, n_entities)
        self.selections = {"TRUE": _Selection(None, timeline, ids, ts)}
        # Queries in key order: np.searchsorted then walks forward (module doc).
        probe = timeline.probe(np.where(valid, entities, 0), np.where(valid, times, 0), "right")
        probe[~valid] = 0
        self.order = np.argsort(probe, kind="stable")
        self.q_entities = np.where(valid, entities, 0)[self.order]
        self.q_times = np.where(valid, times, 0)[self.order]
        self.q_valid = valid[self.order]
        self.cache: dict[tuple[str, ...], Any] = {}

    def selection(self, sql: str) -> _Selection:
        found = self.selections.get(sql)
        if found is None:
            mask = _numpy(self.events.column(self.plan.selections[sql]), np.bool_)
            base = self.selections["TRUE"]
            if mask.all():
                found = base
            else:
                found = _Selection(
                    np.flatnonzero(mask),
                    base.timeline.subset(mask),
                    base.entities[mask],
                    base.times[mask],
                )
            self.selections[sql] = found
        return found

    def find(self, s: _Selection, what: str, window_ms: int, hop_ms: int) -> I64:
        """Range ends per query: ``hi`` past ``t``, ``lo`` at the tail, ``mid`` at ``t``'s hop."""
        spec = (what, window_ms, hop_ms) if what != "hi" else ("hi", 0, 0)
        if what == "mid":
            spec = ("mid", 0, hop_ms)
        found = s.bounds.get(spec)
        if found is None:
            t = self.q_times
            if what == "hi":
                found = s.timeline.find(self.q_entities, t, "right", self.q_valid)
            elif what == "lo":
                start = window_start(t, window_ms, hop_ms)
                found = s.timeline.find(self.q_entities, start, "left", self.q_valid)
            else:
                found = s.timeline.find(self.q_entities, t - t % hop_ms, "left", self.q_valid)
            s.bounds[spec] = found
        return found

    def values(self, f: VectorFeature, s: _Selection) -> NDArray[Any]:
        """The input over the selection: int64 if integers (exact sums), else float64."""
        as_float = f.function in ("variance", "stddev")

        def make() -> NDArray[Any]:
            column = self.events.column(self.plan.values[f.value])
            integer = pa.types.is_integer(column.type) and not as_float
            values = _numpy(pc.fill_null(column, 0), np.int64 if integer else np.float64)
            return values if s.positions is None else values[s.positions]

        return self.memo(("values", f.value, f.selection, str(as_float)), make)  # type: ignore[no-any-return]

    def memo(self, key: tuple[str, ...], make: Any) -> Any:
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = make()
        return found

    def feature(self, f: VectorFeature) -> pa.Array:
        """The feature's values in sorted query order, as Arrow (nulls where empty)."""
        s = self.selection(f.selection)
        hi = self.find(s, "hi", 0, 0)
        lo = self.find(s, "lo", f.window_ms, f.hop_ms)
        n = hi - lo
        present = n > 0
        skey = f.selection
        if f.function == "count":
            return pa.array(n)
        if f.function in ("first", "last"):
            at = lo if f.function == "first" else hi - 1
            at = np.where(present, at, 0)
            if s.positions is not None and len(s.positions):
                at = s.positions[at]
            column = self.events.column(self.plan.values[f.value])
            if len(column) == 0:
                return pa.nulls(len(n), column.type)
            taken = column.take(pa.array(at)).combine_chunks()
            return _with_nulls(taken, present)
        values = self.values(f, s)
        if f.function in ("min", "max"):
            mid = self.find(s, "mid", 0, f.hop_ms)
            out, has = window_extreme(
                "min" if f.function == "min" else "max",
                values,
                s.entities,
                s.times,
                f.hop_ms,
                (lo, mid, hi),
            )
            return _with_nulls(pa.array(out), has)
        if values.dtype == np.int64 and f.function in ("sum", "mean"):
            sums = self.memo(("int", f.value, skey), lambda: prefix(values))
            total = sums[hi] - sums[lo]
            if f.function == "sum":
                return pa.array(total)
            with np.errstate(invalid="ignore", divide="ignore"):
                return _with_nulls(pa.array(total.astype(np.float64) / n), present)
        q_entities = self.q_entities

        def float_sums() -> tuple[FloatSums, F64]:
            runs = self.memo(("runs", skey), lambda: Runs.of(s.entities))
            return FloatSums.build(values, runs, self.n_entities)

        fsums, deviation = self.memo(("float", f.value, skey), float_sums)
        if f.function in ("sum", "mean"):
            ftotal: F64 = fsums.sum(lo, hi, q_entities)
            if f.function == "sum":
                return pa.array(ftotal)
            with np.errstate(invalid="ignore", divide="ignore"):
                return _with_nulls(pa.array(ftotal / n), present)

        def squares() -> FloatSums:
            runs = self.memo(("runs", skey), lambda: Runs.of(s.entities))
            return FloatSums.build(deviation * deviation, runs, self.n_entities)[0]

        square_sums = self.memo(("squares", f.value, skey), squares)
        steps = self.memo(("steps", f.value, skey), lambda: changes(values))
        var = pop_var(fsums, square_sums, steps, lo, hi, q_entities)
        if f.function == "stddev":
            var = np.sqrt(var)
        return _with_nulls(pa.array(var), present)


def _numpy(column: pa.ChunkedArray | pa.Array, dtype: type[np.generic]) -> NDArray[Any]:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _with_nulls(values: pa.Array, present: NDArray[np.bool_]) -> pa.Array:
    if present.all():
        return values
    return pc.if_else(pa.array(present), values, pa.scalar(None, values.type))


def compute(
    features: Sequence[VectorFeature],
    plan: EventPlan,
    events: pa.Table,
    entities: I64,
    times: I64,
    valid: NDArray[np.bool_],
    n_entities: int,
) -> dict[str, pa.Array]:
    """Each feature's values at every query ``(entities[i], times[i])`` where ``valid``.

    ``events`` has ``_k`` (entity id, ``0 <= id < n_entities``), ``_ts`` and the plan's
    columns, sorted by ``(_k, _ts, offset)``. Invalid queries get empty values.
    """
    engine = _Engine(events, plan, entities, times, valid, n_entities)
    back = np.empty_like(engine.order)
    back[engine.order] = np.arange(len(engine.order))
    out = {}
    for f in features:
        values = engine.feature(f).take(pa.array(back))
        out[f.name] = values.cast(ARROW_TYPES[f.dtype])
    return out
