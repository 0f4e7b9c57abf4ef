"""Prefix sums for the invertible functions (count, sum, mean, variance, stddev) and last.

A window ``[start, t]`` of an invertible aggregate is the running total through
``t`` minus the running total before ``start``. So instead of a window function
evaluated at every event and query row (:mod:`streamfs.offline.sql`), these
features take one pass over the events (partials per entity and timestamp, then
running totals) and one ASOF join per distinct window start: several times
faster at millions of rows. ``last`` rides along: the running last value (by
``(event_time, offset)``) through ``t`` is the window's if its time is not before
``start``. Features sharing a partial (every count of one filter, a sum and a
mean of one input) share its column.

Exactness: counts and integer sums are exact. Float sums and means are prefix
differences: rounding relative to the running total, about 1e-16 times
(events in the entity's history / events in the window). Variance uses sums of
squares of each value's deviation from the input's mean over all the queried
events, so the spread, not the magnitude, sets the scale (values around 1e9 with
a spread of 1 keep their digits, as long as entities do not differ by orders of
magnitude); it agrees with Welford online to about 1e-9 relative, not to the
last bit.

Pure: builds strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# SQL is assembled from definitions' own SQL readings and fixed text, never from
# data values: hence the S608 waivers.
INVERTIBLE = frozenset({"count", "sum", "mean", "variance", "stddev", "last"})


@dataclass(frozen=True, slots=True)
class PrefixFeature:
    """One invertible feature: its input and filter as SQL, window and output type."""

    name: str
    function: str
    value: str
    keep: str
    window_ms: int
    hop_ms: int
    sql_type: str


def start_sql(t: str, window_ms: int, hop_ms: int) -> str:
    """``floor((t - W) / h) * h`` in integer arithmetic."""
    x = f"({t} - {window_ms})"
    return f"({x} - ((({x} % {hop_ms}) + {hop_ms}) % {hop_ms}))"


class _Columns:
    """Partial aggregates by their SQL text, so features sharing one get one column."""

    def __init__(self) -> None:
        self.partials: dict[str, str] = {}  # expression -> column
        self.running: dict[str, str] = {}  # column -> running aggregate over the window
        self.refs: dict[str, str] = {}  # per-entity reference expression -> column

    def add(self, expression: str, running: str = "sum") -> str:
        column = self.partials.get(expression)
        if column is None:
            column = self.partials[expression] = f"x{len(self.partials)}"
            self.running[column] = running
        return column

    def ref(self, expression: str) -> str:
        column = self.refs.get(expression)
        if column is None:
            column = self.refs[expression] = f"r{len(self.refs)}"
        return column


def prefix_statements(
    features: Sequence[PrefixFeature], events: str, queries: str, out: str
) -> list[str]:
    """SQL statements leaving ``out(_k, _t, feature...)`` for every row of ``queries``.

    ``events`` has ``_k``, ``_ts``, ``_off`` and the source's columns; ``queries`` the
    distinct ``(_k, _t)``.
    """
    cols = _Columns()
    specs = sorted({(f.window_ms, f.hop_ms) for f in features})
    values = []
    for f in features:
        v, keep = f"({f.value})", f"({f.keep})"
        b = f"b{specs.index((f.window_ms, f.hop_ms))}"

        def diff(c: str, b: str = b) -> str:
            return f"(coalesce(a.{c}, 0) - coalesce({b}.{c}, 0))"

        if f.function == "last":
            present = f"{keep} AND {v} IS NOT NULL"
            at = cols.add(f"max(_ts) FILTER (WHERE {present})", "max")
            last = cols.add(f"arg_max({v}, _off) FILTER (WHERE {present})", "last")
            value = f"(CASE WHEN a.{at} > q._{b} THEN a.{last} END)"
            values.append(f'CAST({value} AS {f.sql_type}) AS "{f.name}"')
            continue
        n = diff(cols.add(f"count({v}) FILTER (WHERE {keep})"))
        if f.function == "count":
            value = n
        elif f.function == "sum":
            value = diff(cols.add(f"sum({v}) FILTER (WHERE {keep})"))
        elif f.function == "mean":
            total = diff(cols.add(f"sum({v}) FILTER (WHERE {keep})"))
            value = f"(CASE WHEN {n} > 0 THEN CAST({total} AS DOUBLE) / {n} END)"
        else:
            r = cols.ref(f"(SELECT avg(CAST({v} AS DOUBLE)) FILTER (WHERE {keep}) FROM {events})")  # noqa: S608
            d = diff(cols.add(f"sum({v} - {r}) FILTER (WHERE {keep})"))
            q = diff(cols.add(f"sum(({v} - {r}) * ({v} - {r})) FILTER (WHERE {keep})"))
            var = f"(CASE WHEN {n} > 0 THEN greatest(({q} - {d} * {d} / {n}) / {n}, 0) END)"
            value = var if f.function == "variance" else f"sqrt({var})"
        values.append(f'CAST({value} AS {f.sql_type}) AS "{f.name}"')
    refs = "".join(f", {expression} AS {column}" for expression, column in cols.refs.items())
    # The reference means are scalar subqueries: computed once, not per row.
    partials = ", ".join(
        f"{expression} AS {column}" for expression, column in cols.partials.items()
    )
    frame = "OVER (PARTITION BY _k ORDER BY _ts ROWS UNBOUNDED PRECEDING)"
    running = ", ".join(
        f"last_value({c} IGNORE NULLS) {frame} AS {c}"
        if how == "last"
        else f"{how}({c}) {frame} AS {c}"
        for c, how in cols.running.items()
    )
    starts = ", ".join(f"{start_sql('_t', w, h)} - 1 AS _b{i}" for i, (w, h) in enumerate(specs))
    joins = [f"ASOF LEFT JOIN {out}_c a ON q._k = a._k AND q._t >= a._ts"]
    for i in range(len(specs)):
        joins.append(f"ASOF LEFT JOIN {out}_c b{i} ON q._k = b{i}._k AND q._b{i} >= b{i}._ts")
    return [
        f"CREATE TEMP TABLE {out}_g AS SELECT _k, _ts, {partials}"  # noqa: S608
        f" FROM (SELECT *{refs} FROM {events}) GROUP BY _k, _ts",
        f"CREATE TEMP TABLE {out}_c AS SELECT _k, _ts, {running} FROM {out}_g",  # noqa: S608
        f"CREATE TEMP TABLE {out} AS SELECT q._k, q._t, {', '.join(values)}"  # noqa: S608
        f" FROM (SELECT *, {starts} FROM {queries}) q {' '.join(joins)}",
    ]
